using System.Text;
using Microsoft.Extensions.Options;
using Sharding.Kubernetes;

namespace Sharding.ControlPlane.Injection;

/// <summary>Keeps the MutatingWebhookConfiguration's <c>caBundle</c> trusting this replica's CA, through a JSON patch.</summary>
/// <remarks>
/// Replicas each have a CA and the Service balances admission calls across them, so the bundle is the union: this
/// replica's CA is added when missing and the other certificates already there are kept (at most 8, newest first, so
/// CAs of replicas long gone fall out).
/// </remarks>
internal sealed partial class CaBundleSynchronizer(
    KubernetesClient client, WebhookCertificates certificates, IOptions<SidecarInjectionOptions> options, TimeProvider timeProvider,
    ILogger<CaBundleSynchronizer> logger) : BackgroundService
{
    private const int MaxCertificates = 8;
    private readonly SidecarInjectionOptions _options = options.Value;
    private readonly ILogger _logger = logger;

    /// <summary>One check: returns true when the configuration was patched.</summary>
    internal async Task<bool> SyncOnceAsync(CancellationToken cancellationToken)
    {
        var configuration = await client.GetMutatingWebhookConfigurationAsync(_options.WebhookConfigurationName, cancellationToken).ConfigureAwait(false);
        if (configuration is null)
        {
            LogMissing(_options.WebhookConfigurationName);
            return false;
        }

        var ours = certificates.CaBundlePem.Trim();
        var needsPatch = false;
        var bundles = new List<string>();
        foreach (var webhook in configuration.Webhooks ?? [])
        {
            var current = webhook.ClientConfig?.CaBundle is { Length: > 0 } b64 ? Encoding.UTF8.GetString(Convert.FromBase64String(b64)) : string.Empty;
            if (!current.Contains(ours, StringComparison.Ordinal))
            {
                needsPatch = true;
            }

            bundles.Add(current);
        }

        if (!needsPatch)
        {
            return false;
        }

        // Union of our CA and the certificates the first webhook already trusts (the others get the same bundle).
        var kept = SplitPem(bundles.FirstOrDefault() ?? string.Empty).Where(c => c != ours).Take(MaxCertificates - 1);
        var bundle = string.Join("\n", new[] { ours }.Concat(kept)) + "\n";
        await client.PatchWebhookCaBundleAsync(configuration, bundle, cancellationToken).ConfigureAwait(false);
        LogPatched(_options.WebhookConfigurationName, configuration.Webhooks?.Count ?? 0);
        return true;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!_options.ManageCaBundle)
        {
            return;
        }

        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await SyncOnceAsync(stoppingToken).ConfigureAwait(false);
            }
            catch (KubernetesApiException ex) when (ex.IsForbidden)
            {
                LogForbidden(ex.Message, ex.MissingPermission);
            }
            catch (Exception ex) when (ex is HttpRequestException or IOException or KubernetesApiException or FormatException
                || (ex is OperationCanceledException && !stoppingToken.IsCancellationRequested))
            {
                // OperationCanceledException without shutdown: the client's request timeout. Escaping, it would stop the host.
                LogFailed(ex, _options.WebhookConfigurationName);
            }

            try
            {
                await Task.Delay(_options.CaBundleRefreshInterval, timeProvider, stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    internal static IEnumerable<string> SplitPem(string pem)
    {
        const string End = "-----END CERTIFICATE-----";
        var at = 0;
        while (true)
        {
            var start = pem.IndexOf("-----BEGIN CERTIFICATE-----", at, StringComparison.Ordinal);
            if (start < 0)
            {
                yield break;
            }

            var end = pem.IndexOf(End, start, StringComparison.Ordinal);
            if (end < 0)
            {
                yield break;
            }

            at = end + End.Length;
            yield return pem[start..at];
        }
    }

    [LoggerMessage(EventId = 901, EventName = "CaBundlePatched", Level = LogLevel.Information, Message = "Patched the caBundle of {Configuration} ({WebhookCount} webhooks) with this replica's CA")]
    private partial void LogPatched(string configuration, int webhookCount);

    [LoggerMessage(EventId = 902, EventName = "WebhookConfigurationMissing", Level = LogLevel.Warning, Message = "MutatingWebhookConfiguration {Configuration} not found: apply manifests/base, or set Sharding:Kubernetes:Injection:WebhookConfigurationName")]
    private partial void LogMissing(string configuration);

    [LoggerMessage(EventId = 903, EventName = "CaBundleForbidden", Level = LogLevel.Error, Message = "{Message}. RBAC does not allow it: grant {Permission} with resourceNames set to the configuration")]
    private partial void LogForbidden(string message, string permission);

    [LoggerMessage(EventId = 904, EventName = "CaBundleSyncFailed", Level = LogLevel.Warning, Message = "Could not check or patch the caBundle of {Configuration}; retrying")]
    private partial void LogFailed(Exception exception, string configuration);
}

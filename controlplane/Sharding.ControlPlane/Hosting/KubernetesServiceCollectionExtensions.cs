using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Sharding.ControlPlane.Injection;
using Sharding.ControlPlane.Leadership;
using Sharding.ControlPlane.Membership;
using Sharding.Kubernetes;

namespace Sharding.ControlPlane.Hosting;

/// <summary>Kubernetes mode: Lease election, pod membership, the injection webhook (HTTPS) and its caBundle loop.</summary>
internal static class KubernetesServiceCollectionExtensions
{
    /// <summary>Whether <c>Sharding:Mode</c> (or the core options' <c>ControlPlane:Mode</c>) selects Kubernetes mode.</summary>
    public static bool IsKubernetesMode(IConfiguration configuration) =>
        string.Equals(configuration["Sharding:Mode"], "Kubernetes", StringComparison.OrdinalIgnoreCase)
        || string.Equals(configuration["ControlPlane:Mode"], "Kubernetes", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Replaces the local-mode seams with the Kubernetes ones and adds the webhook's HTTPS listener. Call after the core
    /// registrations; then call <see cref="MapKubernetesEndpoints"/> on the built app.
    /// </summary>
    public static IServiceCollection AddKubernetesMode(this IServiceCollection services, IConfiguration configuration)
    {
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton(static sp => KubernetesClientConfiguration.Load(sp.GetRequiredService<TimeProvider>()));
        services.TryAddSingleton(static sp => new KubernetesClient(sp.GetRequiredService<KubernetesClientConfiguration>()));

        services.AddOptions<LeaseElectionOptions>().Bind(configuration.GetSection(LeaseElectionOptions.Section)).ValidateOnStart();
        services.AddSingleton<IConfigureOptions<LeaseElectionOptions>, ConfigureFromDownwardApi>();
        services.AddSingleton<IValidateOptions<LeaseElectionOptions>, LeaseElectionOptionsValidator>();
        services.AddOptions<PodMembershipOptions>().Bind(configuration.GetSection(PodMembershipOptions.Section));
        services.AddOptions<SidecarInjectionOptions>().Bind(configuration.GetSection(SidecarInjectionOptions.Section))
            .Validate(
                static o => o.RunAsUser is > 0 and <= int.MaxValue,
                $"{SidecarInjectionOptions.Section}:{nameof(SidecarInjectionOptions.RunAsUser)} must be a non-root user id, 1..2147483647 (the sidecar runs as non-root)")
            .ValidateOnStart();
        services.AddSingleton<IConfigureOptions<SidecarInjectionOptions>, ConfigureFromDownwardApi>();

        services.Replace(ServiceDescriptor.Singleton<ILeaderElector, LeaseLeaderElector>());
        services.Replace(ServiceDescriptor.Singleton<IMembershipSource>(static sp =>
        {
            var options = sp.GetRequiredService<IOptions<PodMembershipOptions>>();
            var source = new PodListWatchSource(
                sp.GetRequiredService<KubernetesClient>(), options.Value.Namespace, PodMembershipOptions.ServiceLabel, options.Value.WatchTimeoutSeconds);
            return new PodMembershipSource(source, options, sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILogger<PodMembershipSource>>());
        }));

        services.AddSingleton<SidecarInjector>();
        services.AddSingleton<WebhookCertificates>();
        services.AddHostedService<CaBundleSynchronizer>();

        // The webhook listens on its own HTTPS port with the generated certificate (the apiserver only calls webhooks over TLS).
        services.AddSingleton<IConfigureOptions<KestrelServerOptions>, ConfigureWebhookListener>();
        return services;
    }

    /// <summary>Maps <c>POST /mutate</c>, restricted to connections on the webhook's HTTPS port (whatever Host they name).</summary>
    public static IEndpointRouteBuilder MapKubernetesEndpoints(this IEndpointRouteBuilder endpoints)
    {
        var port = endpoints.ServiceProvider.GetRequiredService<IOptions<SidecarInjectionOptions>>().Value.WebhookPort;
        endpoints.MapSidecarInjection(localPort: port);
        return endpoints;
    }

    /// <summary>Defaults from the downward API (POD_NAME, POD_NAMESPACE, POD_IP) and the service-account namespace file.</summary>
    private sealed class ConfigureFromDownwardApi(IConfiguration configuration) : IConfigureOptions<LeaseElectionOptions>, IConfigureOptions<SidecarInjectionOptions>
    {
        public void Configure(LeaseElectionOptions options)
        {
            options.Identity ??= Environment.GetEnvironmentVariable("POD_NAME") ?? Environment.MachineName;
            options.Namespace ??= Namespace();
            if (options.LeaderUrl is null && Environment.GetEnvironmentVariable("POD_IP") is { Length: > 0 } ip)
            {
                // Followers relay the leader's Watch stream, so they need its gRPC (h2c) port, not the HTTP/1.1 one.
                var port = new Uri(configuration["ControlPlane:GrpcUrl"] ?? "http://0.0.0.0:15001").Port;
                options.LeaderUrl = $"http://{(ip.Contains(':', StringComparison.Ordinal) ? $"[{ip}]" : ip)}:{port}";
            }
        }

        public void Configure(SidecarInjectionOptions options)
        {
            if (configuration[SidecarInjectionOptions.Section + ":ServiceNamespace"] is null && Namespace() is { } ns)
            {
                options.ServiceNamespace = ns;
            }
        }

        private static string? Namespace()
        {
            if (Environment.GetEnvironmentVariable("POD_NAMESPACE") is { Length: > 0 } ns)
            {
                return ns;
            }

            var file = Path.Combine(KubernetesClientConfiguration.ServiceAccountDirectory, "namespace");
            return File.Exists(file) ? File.ReadAllText(file).Trim() : null;
        }
    }

    private sealed class ConfigureWebhookListener(IOptions<SidecarInjectionOptions> options, WebhookCertificates certificates) : IConfigureOptions<KestrelServerOptions>
    {
        // ListenAnyIP: dual-stack [::], and 0.0.0.0 on nodes where IPv6 is disabled (binding [::] alone fails there).
        public void Configure(KestrelServerOptions kestrel) =>
            kestrel.ListenAnyIP(options.Value.WebhookPort, listen =>
            {
                listen.Protocols = HttpProtocols.Http1AndHttp2;
                listen.UseHttps(https => https.ServerCertificateSelector = (_, _) => certificates.ServerCertificate);
            });
    }
}

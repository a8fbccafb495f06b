using Microsoft.Extensions.Options;

namespace Sharding.Client;

/// <summary>Validates <see cref="ShardRoutingOptions"/>, collecting every problem and saying how to fix it.</summary>
public sealed class ShardRoutingOptionsValidator : IValidateOptions<ShardRoutingOptions>
{
    /// <inheritdoc />
    public ValidateOptionsResult Validate(string? name, ShardRoutingOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = Collect(options);
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    /// <summary>Every problem with <paramref name="options"/>, each a sentence naming the setting.</summary>
    /// <param name="options">The options.</param>
    /// <returns>The problems; empty when valid.</returns>
    public static IReadOnlyList<string> Collect(ShardRoutingOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = new List<string>();
        var at = string.IsNullOrWhiteSpace(options.Service) ? "ShardRouting" : $"ShardRouting '{options.Service}'";
        if (string.IsNullOrWhiteSpace(options.Service))
        {
            errors.Add($"{at}: {nameof(ShardRoutingOptions.Service)} is missing: name the sharded service as the control plane knows it, "
                + "e.g. AddShardRouting(\"sharded-svc\", …) or AddShardRouter(\"sharded-svc\", …).");
        }

        if (options.ControlPlaneAddresses is null || options.ControlPlaneAddresses.Count == 0)
        {
            errors.Add($"{at}: {nameof(ShardRoutingOptions.ControlPlaneAddresses)} is empty: give at least one control-plane gRPC URL, "
                + "e.g. o.ControlPlaneAddresses = [\"http://sharding-controlplane.sharding-system.svc:8081\"].");
        }
        else
        {
            for (var i = 0; i < options.ControlPlaneAddresses.Count; i++)
            {
                var text = options.ControlPlaneAddresses[i];
                if (!TryParseUrl(text, out _))
                {
                    errors.Add($"{at}: {nameof(ShardRoutingOptions.ControlPlaneAddresses)}[{i}] '{text}' is not a valid control-plane URL: "
                        + "use an absolute http:// or https:// URL with a host, e.g. http://127.0.0.1:15001.");
                }
            }
        }

        if (options.PingInterval <= TimeSpan.Zero || options.IdleTimeout <= options.PingInterval)
        {
            errors.Add($"{at}: {nameof(ShardRoutingOptions.IdleTimeout)} ({options.IdleTimeout}) must be longer than "
                + $"{nameof(ShardRoutingOptions.PingInterval)} ({options.PingInterval}), which must be positive.");
        }

        if (options.ConnectTimeout <= TimeSpan.Zero)
        {
            errors.Add($"{at}: {nameof(ShardRoutingOptions.ConnectTimeout)} must be positive (got {options.ConnectTimeout}).");
        }

        if (options.MinReconnectDelay <= TimeSpan.Zero || options.MaxReconnectDelay < options.MinReconnectDelay)
        {
            errors.Add($"{at}: {nameof(ShardRoutingOptions.MinReconnectDelay)} ({options.MinReconnectDelay}) must be positive and at most "
                + $"{nameof(ShardRoutingOptions.MaxReconnectDelay)} ({options.MaxReconnectDelay}).");
        }

        return errors;
    }

    internal static bool TryParseUrl(string? text, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Uri? url)
    {
        url = null;
        if (string.IsNullOrWhiteSpace(text) || !Uri.TryCreate(text.Trim(), UriKind.Absolute, out var parsed)
            || (parsed.Scheme != Uri.UriSchemeHttp && parsed.Scheme != Uri.UriSchemeHttps) || string.IsNullOrEmpty(parsed.Host))
        {
            return false;
        }

        url = parsed;
        return true;
    }
}

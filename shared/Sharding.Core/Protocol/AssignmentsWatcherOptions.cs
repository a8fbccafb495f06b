namespace Sharding.Protocol;

/// <summary>Settings of an <see cref="AssignmentsWatcher"/>.</summary>
public sealed record AssignmentsWatcherOptions
{
    /// <summary>Control-plane gRPC URLs (h2c), e.g. <c>http://127.0.0.1:15001</c>; any replica will do, they are tried in turn.</summary>
    /// <value>Required: at least one absolute http or https URL.</value>
    public IReadOnlyList<Uri> ControlPlaneUrls { get; init; } = [];

    /// <summary>The sharded service to follow; null or empty follows every service (control-plane followers relay this way).</summary>
    /// <value>Null.</value>
    public string? Service { get; init; }

    /// <summary>Who subscribes (the pod name of a sidecar), for the control plane's logs.</summary>
    /// <value>The machine name.</value>
    public string SubscriberName { get; init; } = Environment.MachineName;

    /// <summary>The keep-alive interval asked from the server.</summary>
    /// <value>2 s: with <see cref="IdleTimeout"/> 6 s a dead stream is noticed within seconds, at ~20 bytes per ping.</value>
    public TimeSpan PingInterval { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>A stream that delivers nothing (not even a ping) for this long is dropped and re-opened.</summary>
    /// <value>6 s: three missed pings.</value>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromSeconds(6);

    /// <summary>How long connecting and receiving the response headers may take.</summary>
    /// <value>3 s.</value>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>First reconnect delay; doubles per failed attempt, with jitter.</summary>
    /// <value>100 ms.</value>
    public TimeSpan MinReconnectDelay { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Largest reconnect delay.</summary>
    /// <value>5 s: a replica that comes back is found within seconds.</value>
    public TimeSpan MaxReconnectDelay { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>The largest update accepted (RESOURCE_EXHAUSTED above it).</summary>
    /// <value>16 MiB: a Maglev snapshot at M = 65537 is about 70 KB; at the largest M (5,000,011) 5–15 MB.</value>
    public int MaxMessageBytes { get; init; } = 16 * 1024 * 1024;

    /// <summary>The clock for idle timeouts and backoff.</summary>
    /// <value><see cref="TimeProvider.System"/>.</value>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>Throws when a setting is invalid, naming it.</summary>
    /// <exception cref="ArgumentException">A setting is invalid.</exception>
    public void Validate()
    {
        var errors = new List<string>();
        if (ControlPlaneUrls is null || ControlPlaneUrls.Count == 0)
        {
            errors.Add($"{nameof(ControlPlaneUrls)} needs at least one control-plane URL such as http://127.0.0.1:15001");
        }
        else
        {
            foreach (var url in ControlPlaneUrls)
            {
                if (url is null || !url.IsAbsoluteUri || (url.Scheme != Uri.UriSchemeHttp && url.Scheme != Uri.UriSchemeHttps))
                {
                    errors.Add($"{nameof(ControlPlaneUrls)} entry '{url}' must be an absolute http:// or https:// URL");
                }
            }
        }

        if (PingInterval <= TimeSpan.Zero || IdleTimeout <= PingInterval)
        {
            errors.Add($"{nameof(IdleTimeout)} ({IdleTimeout}) must be longer than {nameof(PingInterval)} ({PingInterval}), which must be positive");
        }

        if (ConnectTimeout <= TimeSpan.Zero)
        {
            errors.Add($"{nameof(ConnectTimeout)} must be positive");
        }

        if (MinReconnectDelay <= TimeSpan.Zero || MaxReconnectDelay < MinReconnectDelay)
        {
            errors.Add($"{nameof(MinReconnectDelay)} must be positive and at most {nameof(MaxReconnectDelay)}");
        }

        if (MaxMessageBytes < 1024)
        {
            errors.Add($"{nameof(MaxMessageBytes)} must be at least 1024");
        }

        if (errors.Count > 0)
        {
            throw new ArgumentException("Invalid AssignmentsWatcherOptions: " + string.Join("; ", errors));
        }
    }
}

/// <summary>What an <see cref="AssignmentsWatcher"/> knows about its subscription, for metrics and <c>/readyz</c>.</summary>
/// <param name="Connected">Whether a stream is open and has delivered at least one message.</param>
/// <param name="ControlPlane">The URL of the current (or last tried) control plane.</param>
/// <param name="Generation">The followed service's generation (-1 before the first map; the highest one in all-services mode).</param>
/// <param name="LastError">The last failure, if any.</param>
/// <param name="LastErrorAt">When it happened.</param>
/// <param name="Reconnects">Streams opened after the first.</param>
/// <param name="ChecksumFailures">Updates refused because their checksum or entries disagreed.</param>
/// <param name="UpdatesApplied">Snapshots and deltas applied.</param>
public sealed record AssignmentsWatcherStatus(
    bool Connected, Uri? ControlPlane, long Generation, string? LastError, DateTimeOffset? LastErrorAt, long Reconnects, long ChecksumFailures, long UpdatesApplied);

using Microsoft.Extensions.Options;

namespace Sharding.ControlPlane.Hosting;

/// <summary>Settings of a control-plane replica (configuration section <c>ControlPlane</c>).</summary>
internal sealed class ControlPlaneOptions
{
    /// <summary>The configuration section.</summary>
    public const string SectionName = "ControlPlane";

    /// <summary>This replica's identity in the lease and in logs.</summary>
    /// <value>The machine name and process id: unique per process on one host.</value>
    public string ReplicaId { get; set; } = $"{Environment.MachineName}-{Environment.ProcessId}";

    /// <summary>Where HTTP/1.1 clients reach the directory, <c>/metrics</c>, <c>/healthz</c> and <c>/readyz</c>.</summary>
    /// <value><c>http://127.0.0.1:15000</c>; port 0 picks a free port.</value>
    public string HttpUrl { get; set; } = "http://127.0.0.1:15000";

    /// <summary>Where gRPC clients (HTTP/2 with prior knowledge, h2c) reach <c>Assignments/Watch</c>; the directory answers here too.</summary>
    /// <value><c>http://127.0.0.1:15001</c>: a separate HTTP/2-only port, because a cleartext Http1AndHttp2 endpoint speaks only HTTP/1.1.</value>
    public string GrpcUrl { get; set; } = "http://127.0.0.1:15001";

    /// <summary>The URL other replicas should relay from (written to the lease); defaults to the bound <see cref="GrpcUrl"/>.</summary>
    /// <value>Null.</value>
    public string? AdvertisedGrpcUrl { get; set; }

    /// <summary><c>local</c> (membership file, file lock) or <c>kubernetes</c>.</summary>
    /// <value><c>local</c>.</value>
    public string Mode { get; set; } = "local";

    /// <summary>Local mode: the JSON or YAML membership file (see docs/local-mode.md).</summary>
    /// <value>Null; required in local mode.</value>
    public string? MembershipFile { get; set; }

    /// <summary>Local mode: the lease file that replicas lock exclusively; its epoch and leader files sit beside it.</summary>
    /// <value>Null; required in local mode.</value>
    public string? LeaseFile { get; set; }

    /// <summary>Local mode: how often the membership file is re-read even without a file-system event.</summary>
    /// <value>1 s: file-system events can be lost (network or container file systems).</value>
    public TimeSpan MembershipPollInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Local mode: how often a follower retries the lock and re-reads the leader file.</summary>
    /// <value>150 ms: a replica takes over within a fraction of a second of the leader's death.</value>
    public TimeSpan LeaseRetryInterval { get; set; } = TimeSpan.FromMilliseconds(150);

    /// <summary>Membership changes within this window after the first are published as one generation.</summary>
    /// <value>250 ms: a rolling restart of a StatefulSet does not publish one map per pod.</value>
    public TimeSpan Debounce { get; set; } = TimeSpan.FromMilliseconds(250);

    /// <summary>Default keep-alive interval on Watch streams (a subscriber may ask for another within the bounds).</summary>
    /// <value>2 s.</value>
    public TimeSpan PingInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Shortest keep-alive interval a subscriber may ask for.</summary>
    /// <value>50 ms.</value>
    public TimeSpan MinPingInterval { get; set; } = TimeSpan.FromMilliseconds(50);

    /// <summary>Largest Watch request accepted.</summary>
    /// <value>64 KiB: a WatchRequest is a few dozen bytes.</value>
    public int MaxRequestMessageBytes { get; set; } = 64 * 1024;

    /// <summary>Followers: the relay stream from the leader is dropped when silent this long.</summary>
    /// <value>6 s.</value>
    public TimeSpan RelayIdleTimeout { get; set; } = TimeSpan.FromSeconds(6);

    /// <summary>
    /// Followers: after this long without a word from the leader they relay (no map, no keep-alive), the replica is cut off:
    /// <c>/readyz</c> answers 503 and its Watch streams end (UNAVAILABLE, and the connection is closed) so that subscribers
    /// reconnect to a replica that still hears the leader. Longer than a leader failover, so a failover never trips it.
    /// </summary>
    /// <value>30 s (Kubernetes: a 15 s Lease plus retries is replaced within about 19 s).</value>
    public TimeSpan RelayCutOffAfter { get; set; } = TimeSpan.FromSeconds(30);
}

/// <summary>Validates <see cref="ControlPlaneOptions"/>, naming every bad key.</summary>
internal sealed class ControlPlaneOptionsValidator : IValidateOptions<ControlPlaneOptions>
{
    private const string Prefix = ControlPlaneOptions.SectionName + ":";

    public ValidateOptionsResult Validate(string? name, ControlPlaneOptions options)
    {
        var errors = new List<string>();
        CheckUrl(errors, nameof(ControlPlaneOptions.HttpUrl), options.HttpUrl);
        CheckUrl(errors, nameof(ControlPlaneOptions.GrpcUrl), options.GrpcUrl);
        if (string.IsNullOrWhiteSpace(options.ReplicaId))
        {
            errors.Add($"{Prefix}{nameof(ControlPlaneOptions.ReplicaId)} must not be empty.");
        }

        if (options.Mode is not ("local" or "kubernetes"))
        {
            errors.Add($"{Prefix}{nameof(ControlPlaneOptions.Mode)} must be 'local' or 'kubernetes' (got '{options.Mode}').");
        }

        if (options.Mode == "local")
        {
            if (string.IsNullOrWhiteSpace(options.MembershipFile))
            {
                errors.Add($"{Prefix}{nameof(ControlPlaneOptions.MembershipFile)} is required in local mode: a JSON or YAML file listing services and members (see docs/local-mode.md).");
            }

            if (string.IsNullOrWhiteSpace(options.LeaseFile))
            {
                errors.Add($"{Prefix}{nameof(ControlPlaneOptions.LeaseFile)} is required in local mode: a path all replicas share, e.g. /tmp/sharding/leader.lock.");
            }
        }

        CheckPositive(errors, nameof(ControlPlaneOptions.MembershipPollInterval), options.MembershipPollInterval);
        CheckPositive(errors, nameof(ControlPlaneOptions.LeaseRetryInterval), options.LeaseRetryInterval);
        CheckPositive(errors, nameof(ControlPlaneOptions.PingInterval), options.PingInterval);
        CheckPositive(errors, nameof(ControlPlaneOptions.MinPingInterval), options.MinPingInterval);
        CheckPositive(errors, nameof(ControlPlaneOptions.RelayIdleTimeout), options.RelayIdleTimeout);
        if (options.Debounce < TimeSpan.Zero || options.Debounce > TimeSpan.FromMinutes(1))
        {
            errors.Add($"{Prefix}{nameof(ControlPlaneOptions.Debounce)} must be between 0 and 1 minute (got {options.Debounce}).");
        }

        if (options.RelayIdleTimeout <= options.PingInterval)
        {
            errors.Add($"{Prefix}{nameof(ControlPlaneOptions.RelayIdleTimeout)} ({options.RelayIdleTimeout}) must be longer than {Prefix}{nameof(ControlPlaneOptions.PingInterval)} ({options.PingInterval}).");
        }

        if (options.RelayCutOffAfter <= options.RelayIdleTimeout)
        {
            errors.Add($"{Prefix}{nameof(ControlPlaneOptions.RelayCutOffAfter)} ({options.RelayCutOffAfter}) must be longer than {Prefix}{nameof(ControlPlaneOptions.RelayIdleTimeout)} ({options.RelayIdleTimeout}).");
        }

        if (options.MaxRequestMessageBytes is < 1024 or > 16 * 1024 * 1024)
        {
            errors.Add($"{Prefix}{nameof(ControlPlaneOptions.MaxRequestMessageBytes)} must be between 1024 and 16 MiB (got {options.MaxRequestMessageBytes}).");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    private static void CheckUrl(List<string> errors, string key, string? value)
    {
        if (!Uri.TryCreate(value, UriKind.Absolute, out var uri) || uri.Scheme != Uri.UriSchemeHttp || uri.IsDefaultPort && !value!.Contains(":80", StringComparison.Ordinal))
        {
            errors.Add($"{Prefix}{key} must be an http:// URL with host and port, e.g. http://127.0.0.1:15001 (got '{value}').");
        }
    }

    private static void CheckPositive(List<string> errors, string key, TimeSpan value)
    {
        if (value <= TimeSpan.Zero)
        {
            errors.Add($"{Prefix}{key} must be positive (got {value}).");
        }
    }
}

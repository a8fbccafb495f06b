using Microsoft.Extensions.Options;

namespace Sharding.ControlPlane.Leadership;

/// <summary>Lease leader election (Kubernetes mode), section <c>Sharding:Kubernetes:Election</c>.</summary>
public sealed class LeaseElectionOptions
{
    /// <summary>The configuration section.</summary>
    public const string Section = "Sharding:Kubernetes:Election";

    /// <summary>The annotation on the Lease that carries the leader's control-plane URL, for followers to relay its stream.</summary>
    public const string LeaderUrlAnnotation = "sharding.dev/leader-url";

    /// <summary>The Lease name.</summary>
    /// <value><c>sharding-controlplane</c>.</value>
    public string LeaseName { get; set; } = "sharding-controlplane";

    /// <summary>The Lease's namespace.</summary>
    /// <value>From <c>POD_NAMESPACE</c>, else the service-account namespace file.</value>
    public string? Namespace { get; set; }

    /// <summary>This replica's identity, written as <c>holderIdentity</c>.</summary>
    /// <value>From <c>POD_NAME</c>, else the host name: unique per pod and readable in <c>kubectl get lease</c>.</value>
    public string? Identity { get; set; }

    /// <summary>This replica's control-plane URL, published on the Lease while it leads.</summary>
    /// <value>From <c>POD_IP</c> and the port of <c>ControlPlane:GrpcUrl</c> (followers relay the Watch stream over h2c): <c>http://POD_IP:8081</c> in manifests/base.</value>
    public string? LeaderUrl { get; set; }

    /// <summary>How long followers wait, after they last saw the Lease change, before taking it over.</summary>
    /// <value>15 s, client-go's default.</value>
    public TimeSpan LeaseDuration { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>How long the leader keeps trying to renew before it steps down.</summary>
    /// <value>10 s, client-go's default; must be below <see cref="LeaseDuration"/> so the leader stops first.</value>
    public TimeSpan RenewDeadline { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Time between two attempts (acquire or renew).</summary>
    /// <value>2 s, client-go's default.</value>
    public TimeSpan RetryPeriod { get; set; } = TimeSpan.FromSeconds(2);
}

/// <summary>Checks <see cref="LeaseElectionOptions"/>, naming each key to fix.</summary>
internal sealed class LeaseElectionOptionsValidator : IValidateOptions<LeaseElectionOptions>
{
    public ValidateOptionsResult Validate(string? name, LeaseElectionOptions options)
    {
        var failures = new List<string>();
        if (string.IsNullOrWhiteSpace(options.LeaseName))
        {
            failures.Add($"{LeaseElectionOptions.Section}:LeaseName must be set (e.g. sharding-controlplane).");
        }

        if (string.IsNullOrWhiteSpace(options.Namespace))
        {
            failures.Add($"{LeaseElectionOptions.Section}:Namespace is not set: set POD_NAMESPACE from the downward API (metadata.namespace) or the key.");
        }

        if (string.IsNullOrWhiteSpace(options.Identity))
        {
            failures.Add($"{LeaseElectionOptions.Section}:Identity is not set: set POD_NAME from the downward API (metadata.name) or the key.");
        }

        if (options.RetryPeriod <= TimeSpan.Zero)
        {
            failures.Add($"{LeaseElectionOptions.Section}:RetryPeriod must be positive (default 00:00:02).");
        }

        if (options.LeaseDuration < TimeSpan.FromSeconds(1) || options.LeaseDuration.Ticks % TimeSpan.TicksPerSecond != 0)
        {
            failures.Add($"{LeaseElectionOptions.Section}:LeaseDuration must be whole seconds, at least 1 (leaseDurationSeconds); default 00:00:15.");
        }

        if (options.RenewDeadline >= options.LeaseDuration)
        {
            failures.Add($"{LeaseElectionOptions.Section}:RenewDeadline ({options.RenewDeadline}) must be below LeaseDuration ({options.LeaseDuration}), or two leaders could overlap.");
        }

        // client-go: renewDeadline must exceed JitterFactor(1.2) * retryPeriod, so one retry fits before the deadline.
        if (options.RetryPeriod.Ticks * 12 / 10 >= options.RenewDeadline.Ticks)
        {
            failures.Add($"{LeaseElectionOptions.Section}:RetryPeriod ({options.RetryPeriod}) must be below RenewDeadline / 1.2 ({options.RenewDeadline}) so a renewal can be retried before the deadline.");
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}

namespace Sharding.ControlPlane.Membership;

/// <summary>Membership from pods (Kubernetes mode), section <c>Sharding:Kubernetes:Membership</c>.</summary>
public sealed class PodMembershipOptions
{
    /// <summary>The configuration section.</summary>
    public const string Section = "Sharding:Kubernetes:Membership";

    /// <summary>The label that makes a pod a member of a sharded service (its value is the service name).</summary>
    public const string ServiceLabel = "sharding.dev/service";

    /// <summary>The namespace to watch, or null for every namespace (needs a ClusterRole).</summary>
    /// <value>Null: cluster-wide, so workloads in any namespace can opt in.</value>
    public string? Namespace { get; set; }

    /// <summary>How long a member that stops being Ready keeps its keys before the map drops it.</summary>
    /// <value>30 s: three failed probes at Kubernetes' default 10 s period, so a flapping probe does not reshuffle shards.</value>
    public TimeSpan NotReadyGracePeriod { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>The sidecar port when a pod has no <c>sharding.dev/sidecar-port</c> annotation.</summary>
    /// <value>15100, the port the injector gives the sidecar.</value>
    public int DefaultSidecarPort { get; set; } = 15100;

    /// <summary>How long one watch request lasts before the server ends it and the informer resumes.</summary>
    /// <value>300 s, within client-go's 5–10 minute range.</value>
    public int WatchTimeoutSeconds { get; set; } = 300;
}

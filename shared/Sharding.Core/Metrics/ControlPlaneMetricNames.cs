namespace Sharding.Metrics;

/// <summary>Instrument and tag names of the control plane's metrics (Meter <see cref="MeterName"/>).</summary>
/// <remarks>
/// Prometheus names follow from <see cref="PrometheusExporter.PrometheusName"/>: counters get <c>_total</c>, unit <c>s</c>
/// gives <c>_seconds</c>, unit <c>By</c> gives <c>_bytes</c>. Tags carry service names, never shard keys.
/// </remarks>
public static class ControlPlaneMetricNames
{
    /// <summary>The control plane's Meter.</summary>
    public const string MeterName = "Sharding.ControlPlane";

    /// <summary>Gauge: 1 while this replica is the leader, else 0.</summary>
    public const string Leader = "sharding.controlplane.leader";

    /// <summary>Gauge: 1 while this follower is cut off from the leader it relays (not ready, its Watch streams ended), else 0.</summary>
    public const string CutOff = "sharding.controlplane.cut_off";

    /// <summary>Gauge: the leader epoch this replica knows.</summary>
    public const string LeaderEpoch = "sharding.controlplane.leader.epoch";

    /// <summary>Gauge: the current generation per service (tag <see cref="ServiceTag"/>).</summary>
    public const string Generation = "sharding.controlplane.generation";

    /// <summary>Gauge: members per service (tag <see cref="ServiceTag"/>).</summary>
    public const string ServiceMembers = "sharding.controlplane.service.members";

    /// <summary>Histogram: time to compute and encode one publication of all changed services, seconds.</summary>
    public const string PublishDuration = "sharding.controlplane.publish.duration";

    /// <summary>Counter: generations published or relayed (tag <see cref="SourceTag"/>: computed or relayed).</summary>
    public const string Publications = "sharding.controlplane.publications";

    /// <summary>Up-down counter: open Watch streams.</summary>
    public const string Subscribers = "sharding.controlplane.subscribers";

    /// <summary>Counter: Watch streams that ended other than by the server's choice (tag <see cref="ReasonTag"/>).</summary>
    public const string StreamResets = "sharding.controlplane.stream.resets";

    /// <summary>Counter: updates sent (tag <see cref="KindTag"/>: snapshot, delta, ping).</summary>
    public const string UpdatesSent = "sharding.controlplane.updates.sent";

    /// <summary>Counter: bytes of updates sent, prefixes included (tag <see cref="KindTag"/>).</summary>
    public const string UpdateBytesSent = "sharding.controlplane.updates.sent.size";

    /// <summary>Counter: membership snapshots received from the membership source.</summary>
    public const string MembershipEvents = "sharding.controlplane.membership.events";

    /// <summary>Counter: membership inputs rejected (bad file edit, invalid service); no tags.</summary>
    public const string MembershipErrors = "sharding.controlplane.membership.errors";

    /// <summary>Gauge: share of the key space (0–1) whose owner changed with the last published generation, per service.</summary>
    public const string KeysMovedRatio = "sharding.controlplane.keys.moved.ratio";

    /// <summary>Tag: the sharded service.</summary>
    public const string ServiceTag = "service";

    /// <summary>Tag: snapshot, delta or ping.</summary>
    public const string KindTag = "kind";

    /// <summary>Tag: why a stream ended (client_cancelled, deadline, write_failed, too_slow, service_removed).</summary>
    public const string ReasonTag = "reason";

    /// <summary>Tag: computed (leader) or relayed (follower).</summary>
    public const string SourceTag = "source";
}

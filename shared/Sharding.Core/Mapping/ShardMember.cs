namespace Sharding.Mapping;

/// <summary>A member of a sharded service: one pod and its sidecar.</summary>
/// <param name="Name">The stable member name (the pod name, e.g. <c>sharded-svc-2</c>); by default also its hash key.</param>
/// <param name="Address">Where its sidecar listens, <c>host:port</c> (e.g. <c>10.0.3.7:15100</c> or <c>127.0.0.1:15101</c>).</param>
/// <param name="Weight">Its weight in the table (1 by default; 0 keeps it a member that owns no keys).</param>
public sealed record ShardMember(string Name, string Address, uint Weight = 1);

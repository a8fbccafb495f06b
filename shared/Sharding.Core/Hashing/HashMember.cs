namespace Sharding.Hashing;

/// <summary>A member of a consistent-hashing table: its hash key and its weight.</summary>
/// <param name="Name">
/// The member's hash key: by default its stable name (the pod name, e.g. <c>sharded-svc-2</c>), optionally its
/// <c>ip:port</c> (what an Istio ingress hashes). Two members may not share a name.
/// </param>
/// <param name="Weight">
/// The member's weight, as Envoy's <c>load_balancing_weight</c>. A member with weight 0 gets no table entries
/// (Envoy drops zero-weight localities the same way); the sum of all weights must fit in 32 bits, as in Envoy.
/// </param>
public readonly record struct HashMember(string Name, uint Weight = 1);

namespace Sharding.Mapping;

/// <summary>What a member's table position is derived from.</summary>
public enum HashKeySource
{
    /// <summary>The member's stable name (pod name): a restarted pod with a new IP keeps its keys. The default.</summary>
    Name = 0,

    /// <summary>The member's <c>ip:port</c>, which is what an Istio ingress hashes for <c>consistentHash</c>.</summary>
    Address = 1,
}

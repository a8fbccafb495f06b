using System.Collections.Immutable;
using Sharding.Hashing;
using Sharding.Keys;
using Sharding.Mapping;

namespace Sharding.ControlPlane.Membership;

/// <summary>Desired membership and settings of one sharded service.</summary>
/// <param name="Service">The service name (<c>sharding.dev/service</c>).</param>
/// <param name="Members">Its members (pods that are Ready, or within their not-ready grace period).</param>
/// <param name="Algorithm">The hashing algorithm.</param>
/// <param name="TableOptions">Table sizes.</param>
/// <param name="KeyPolicy">How keys are found.</param>
/// <param name="HashKeySource">Members placed by name (default) or address.</param>
public sealed record ServiceMembership(
    string Service,
    ImmutableArray<ShardMember> Members,
    ShardAlgorithm Algorithm,
    ShardTableOptions TableOptions,
    ShardKeyPolicy KeyPolicy,
    HashKeySource HashKeySource = HashKeySource.Name);

/// <summary>Every sharded service's membership at one moment.</summary>
/// <param name="Services">By service name.</param>
public sealed record MembershipSnapshot(ImmutableDictionary<string, ServiceMembership> Services)
{
    /// <summary>No services.</summary>
    public static MembershipSnapshot Empty { get; } = new(ImmutableDictionary.Create<string, ServiceMembership>(StringComparer.Ordinal));
}

/// <summary>
/// The membership seam: pods from the Kubernetes API in production, a watched file in local mode.
/// </summary>
internal interface IMembershipSource
{
    /// <summary>Yields the full snapshot once it is known (after the first complete list), then again after every change.</summary>
    /// <param name="cancellationToken">Stops watching.</param>
    /// <returns>Snapshots, newest last.</returns>
    IAsyncEnumerable<MembershipSnapshot> WatchAsync(CancellationToken cancellationToken);
}

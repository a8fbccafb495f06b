using Sharding.Mapping;

namespace Sharding.Sidecar.MapSync;

/// <summary>Where shard maps come from: the static file now, the control plane's Watch subscription later.</summary>
/// <remarks>A source publishes into the store with <see cref="ShardMapStore.TryPublish"/> (only newer generations get in)
/// until cancelled; it keeps the last good map when its input goes bad.</remarks>
internal interface IShardMapSource
{
    /// <summary>Feeds <paramref name="store"/> until <paramref name="cancellationToken"/> fires.</summary>
    Task RunAsync(ShardMapStore store, CancellationToken cancellationToken);
}

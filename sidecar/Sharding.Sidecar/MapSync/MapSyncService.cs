using Microsoft.Extensions.Options;
using Sharding.Mapping;
using Sharding.Sidecar.Hosting;

namespace Sharding.Sidecar.MapSync;

/// <summary>Owns the sidecar's <see cref="ShardMapStore"/> and runs the configured <see cref="IShardMapSource"/> into it.</summary>
internal sealed partial class MapSyncService(
    ShardMapStore store, IShardMapSource source, IOptions<SidecarOptions> options, ILogger<MapSyncService> logger) : BackgroundService
{
    public override Task StartAsync(CancellationToken cancellationToken)
    {
        store.Changed += OnChanged;
        return base.StartAsync(cancellationToken);
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken).ConfigureAwait(false);
        store.Changed -= OnChanged;
    }

    protected override Task ExecuteAsync(CancellationToken stoppingToken) => source.RunAsync(store, stoppingToken);

    private void OnChanged(ShardMap map, ShardMap? previous)
    {
        var self = map.FindMember(options.Value.PodName);
        Log.MapPublished(logger, map.Service, map.Generation, previous?.Generation ?? -1, map.Members.Length, self is not null);
        if (self is null)
        {
            Log.NotAMember(logger, options.Value.PodName, map.Service, map.Generation);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 700, EventName = "MapPublished", Level = LogLevel.Information,
            Message = "Shard map of service {Service} generation {Generation} is current (was {PreviousGeneration}); {MemberCount} members, this pod a member: {IsMember}")]
        public static partial void MapPublished(ILogger logger, string service, long generation, long previousGeneration, int memberCount, bool isMember);

        [LoggerMessage(EventId = 701, EventName = "NotAMember", Level = LogLevel.Warning,
            Message = "This pod ({PodName}) is not a member of service {Service} at generation {Generation}: it forwards every keyed request")]
        public static partial void NotAMember(ILogger logger, string podName, string service, long generation);
    }
}

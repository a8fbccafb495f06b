using System.Threading.Channels;
using Microsoft.Extensions.Options;
using Sharding.ControlPlane.Hosting;
using Sharding.ControlPlane.Leadership;
using Sharding.Protocol;

namespace Sharding.ControlPlane.Distribution;

/// <summary>
/// Followers relay the leader: one all-services <see cref="AssignmentsWatcher"/> on the leader's gRPC URL feeds this replica's
/// <see cref="ShardMapRegistry"/>, which serves its own subscribers. Generations stay the leader's; the registry keeps the last maps
/// when the leader goes away.
/// </summary>
internal sealed partial class LeaderRelay(
    ILeaderElector elector,
    ShardMapRegistry registry,
    ControlPlaneEndpoints endpoints,
    ControlPlaneMetrics metrics,
    IOptions<ControlPlaneOptions> options,
    TimeProvider timeProvider,
    ILoggerFactory loggerFactory) : BackgroundService
{
    private readonly ILogger _logger = loggerFactory.CreateLogger<LeaderRelay>();
    private readonly Channel<bool> _wake = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite });

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var (_, grpc) = await endpoints.Bound.WaitAsync(stoppingToken).ConfigureAwait(false);
        var self = (endpoints.AdvertisedGrpcUrl ?? grpc).ToString().TrimEnd('/');
        elector.Changed += OnChanged;
        AssignmentsWatcher? watcher = null;
        string? target = null;
        try
        {
            _wake.Writer.TryWrite(true);
            for (long round = 0; round < long.MaxValue && !stoppingToken.IsCancellationRequested; round++)
            {
                await _wake.Reader.ReadAsync(stoppingToken).ConfigureAwait(false);
                var state = elector.Current;
                var desired = !state.IsLeader && state.LeaderAddress is { } a && !string.Equals(a.TrimEnd('/'), self, StringComparison.Ordinal) ? a : null;
                if (string.Equals(desired, target, StringComparison.Ordinal))
                {
                    continue;
                }

                if (watcher is not null)
                {
                    await watcher.DisposeAsync().ConfigureAwait(false);
                    watcher = null;
                    Log.RelayStopped(_logger, target!);
                }

                target = desired;
                if (desired is not null)
                {
                    watcher = new AssignmentsWatcher(
                        new AssignmentsWatcherOptions
                        {
                            ControlPlaneUrls = [new Uri(desired)],
                            SubscriberName = "relay:" + options.Value.ReplicaId,
                            PingInterval = options.Value.PingInterval,
                            IdleTimeout = options.Value.RelayIdleTimeout,
                            MaxReconnectDelay = TimeSpan.FromSeconds(2),
                            TimeProvider = timeProvider,
                        },
                        logger: loggerFactory.CreateLogger<AssignmentsWatcher>());
                    watcher.MapApplied += applied =>
                    {
                        var published = registry.Publish(applied.Map, (long)applied.Update.LeaderEpoch, applied.Update.LeaderId, applied.Update.PublishedUnixMs);
                        metrics.Published(TimeSpan.Zero, published ? 1 : 0, computed: false);
                    };
                    watcher.PingReceived += _ => registry.MarkSynced();
                    watcher.Start();
                    Log.RelayStarted(_logger, desired, state.Epoch);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        finally
        {
            elector.Changed -= OnChanged;
            if (watcher is not null)
            {
                await watcher.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    private void OnChanged(LeadershipState state) => _wake.Writer.TryWrite(true);

    private static partial class Log
    {
        [LoggerMessage(EventId = 410, EventName = "RelayStarted", Level = LogLevel.Information, Message = "Relaying the leader at {LeaderAddress} (epoch {Epoch})")]
        public static partial void RelayStarted(ILogger logger, string leaderAddress, long epoch);

        [LoggerMessage(EventId = 411, EventName = "RelayStopped", Level = LogLevel.Information, Message = "Stopped relaying {LeaderAddress}")]
        public static partial void RelayStopped(ILogger logger, string leaderAddress);
    }
}

using System.Threading.Channels;
using Microsoft.Extensions.Options;
using Sharding.ControlPlane.Hosting;
using Sharding.ControlPlane.Leadership;
using Sharding.Protocol;

namespace Sharding.ControlPlane.Distribution;

/// <summary>
/// Followers relay the leader: one all-services <see cref="AssignmentsWatcher"/> on the leader's gRPC URL feeds this replica's
/// <see cref="ShardMapRegistry"/>, which serves its own subscribers. Generations stay the leader's; the registry keeps the last maps
/// when the leader goes away. A follower that has not heard from the leader it relays for
/// <see cref="ControlPlaneOptions.RelayCutOffAfter"/> marks itself cut off (<see cref="ShardMapRegistry.CutOff"/>).
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
    private string? _target; // the leader relayed (written by the loop only; read by OnHeldAhead and CheckCutOff)
    private long _lastHeard; // timestamp of the relayed leader's last map or keep-alive, or of the relay's start

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var (_, grpc) = await endpoints.Bound.WaitAsync(stoppingToken).ConfigureAwait(false);
        var self = (endpoints.AdvertisedGrpcUrl ?? grpc).ToString().TrimEnd('/');
        elector.Changed += OnChanged;
        registry.HeldAhead += OnHeldAhead;
        AssignmentsWatcher? watcher = null;
        var cutOffAfter = options.Value.RelayCutOffAfter;
        var period = TimeSpan.FromTicks(Math.Min(TimeSpan.TicksPerSecond, cutOffAfter.Ticks / 4));
        using var check = timeProvider.CreateTimer(static state => ((LeaderRelay)state!).CheckCutOff(), this, period, period);
        try
        {
            _wake.Writer.TryWrite(true);
            for (long round = 0; round < long.MaxValue && !stoppingToken.IsCancellationRequested; round++)
            {
                await _wake.Reader.ReadAsync(stoppingToken).ConfigureAwait(false);
                var state = elector.Current;
                var desired = !state.IsLeader && state.LeaderAddress is { } a && !string.Equals(a.TrimEnd('/'), self, StringComparison.Ordinal) ? a : null;
                if (string.Equals(desired, _target, StringComparison.Ordinal))
                {
                    continue;
                }

                if (watcher is not null)
                {
                    await watcher.DisposeAsync().ConfigureAwait(false);
                    watcher = null;
                    Log.RelayStopped(_logger, _target!);
                }

                Heard(); // a new relay (or none) starts its silence count now
                Volatile.Write(ref _target, desired);
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
                        Heard();
                    };
                    watcher.PingReceived += _ =>
                    {
                        registry.MarkSynced();
                        Heard();
                    };
                    watcher.Start();
                    Log.RelayStarted(_logger, desired, state.Epoch);

                    // Claims noted while this follower knew no leader (a re-election) or relayed another one reach this leader too.
                    foreach (var (service, generation, checksum) in registry.UnsettledClaims())
                    {
                        _ = ProbeAsync(desired, service, generation, checksum);
                    }
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        finally
        {
            elector.Changed -= OnChanged;
            registry.HeldAhead -= OnHeldAhead;
            if (watcher is not null)
            {
                await watcher.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    private void OnChanged(LeadershipState state) => _wake.Writer.TryWrite(true);

    private void Heard()
    {
        Volatile.Write(ref _lastHeard, timeProvider.GetTimestamp());
        NotCutOff(Volatile.Read(ref _target));
    }

    /// <summary>Clears the cut-off, logging the recovery when there was one.</summary>
    private void NotCutOff(string? leader)
    {
        if (registry.SetCutOff(null))
        {
            Log.RelayRestored(_logger, leader ?? "(no leader)");
        }
    }

    /// <summary>
    /// On a timer: cut off after <see cref="ControlPlaneOptions.RelayCutOffAfter"/> of silence from the relayed leader. A leader
    /// that died is replaced sooner than that, and the relay then follows the new one; what remains is a follower that cannot
    /// reach a leader that still leads (a partition, a wrong advertised URL), whose subscribers would otherwise never see
    /// another generation while it looks healthy.
    /// </summary>
    private void CheckCutOff()
    {
        var silent = timeProvider.GetElapsedTime(Volatile.Read(ref _lastHeard));
        var leader = Volatile.Read(ref _target);
        if (leader is null || silent < options.Value.RelayCutOffAfter)
        {
            // Not relaying (this replica leads, or no leader is known: every replica is alike then), or heard recently.
            NotCutOff(leader);
            return;
        }

        var seconds = ((long)silent.TotalSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (registry.SetCutOff($"no word from the leader at {leader} for {seconds} s"))
        {
            Log.RelayCutOff(_logger, leader, silent.TotalSeconds);
        }
    }

    /// <summary>
    /// A subscriber holds a generation this follower has not relayed: either the relay lags, or the leader's epoch was restarted
    /// (a deleted Lease) and the subscriber ignores everything it publishes. Only the leader can tell, so the claim goes to it.
    /// </summary>
    private void OnHeldAhead(string service, long generation, ulong checksum)
    {
        if (Volatile.Read(ref _target) is { } leader && !elector.Current.IsLeader)
        {
            _ = ProbeAsync(leader, service, generation, checksum);
        }
    }

    /// <summary>One Watch on the leader holding what the subscriber holds: the leader notes it before it answers the headers.</summary>
    private async Task ProbeAsync(string leader, string service, long generation, ulong checksum)
    {
        try
        {
            using var handler = new SocketsHttpHandler { UseProxy = false, ConnectTimeout = TimeSpan.FromSeconds(5) };
            using var invoker = new HttpMessageInvoker(handler);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10), timeProvider);
            var request = new Protocol.V1.WatchRequest { Pod = "relay:" + options.Value.ReplicaId, Service = service, KnownGeneration = (ulong)generation, KnownChecksum = checksum };
            var call = await GrpcClient.StartServerStreamingAsync(
                invoker, new Uri(leader), GrpcProtocol.WatchPath, request, Protocol.V1.ShardMapUpdate.Parser, deadline: null, maxMessageBytes: 1024, timeout.Token) // no message is read
                .ConfigureAwait(false);
            await call.DisposeAsync().ConfigureAwait(false);
            Log.HeldAheadPassedOn(_logger, service, generation, leader);
        }
        catch (Exception ex) when (ex is HttpRequestException or GrpcCallException or OperationCanceledException or IOException)
        {
            Log.HeldAheadNotPassedOn(_logger, service, generation, leader, ex.Message);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 410, EventName = "RelayStarted", Level = LogLevel.Information, Message = "Relaying the leader at {LeaderAddress} (epoch {Epoch})")]
        public static partial void RelayStarted(ILogger logger, string leaderAddress, long epoch);

        [LoggerMessage(EventId = 412, EventName = "HeldAheadPassedOn", Level = LogLevel.Information, Message = "A subscriber holds {Service} generation {Generation}, newer than this follower relayed; told the leader at {LeaderAddress}")]
        public static partial void HeldAheadPassedOn(ILogger logger, string service, long generation, string leaderAddress);

        [LoggerMessage(EventId = 413, EventName = "HeldAheadNotPassedOn", Level = LogLevel.Warning, Message = "A subscriber holds {Service} generation {Generation}, newer than this follower relayed; the leader at {LeaderAddress} could not be told: {Reason}")]
        public static partial void HeldAheadNotPassedOn(ILogger logger, string service, long generation, string leaderAddress, string reason);

        [LoggerMessage(EventId = 414, EventName = "RelayCutOff", Level = LogLevel.Warning, Message = "No word from the leader at {LeaderAddress} for {Seconds:0} s: this follower is cut off, not ready, and ends its Watch streams so that subscribers move to another replica")]
        public static partial void RelayCutOff(ILogger logger, string leaderAddress, double seconds);

        [LoggerMessage(EventId = 415, EventName = "RelayRestored", Level = LogLevel.Information, Message = "This follower hears the leader again ({LeaderAddress}): ready")]
        public static partial void RelayRestored(ILogger logger, string leaderAddress);

        [LoggerMessage(EventId = 411, EventName = "RelayStopped", Level = LogLevel.Information, Message = "Stopped relaying {LeaderAddress}")]
        public static partial void RelayStopped(ILogger logger, string leaderAddress);
    }
}

using System.Threading.Channels;
using Microsoft.Extensions.Options;
using Sharding.ControlPlane.Distribution;
using Sharding.ControlPlane.Hosting;
using Sharding.ControlPlane.Leadership;
using Sharding.ControlPlane.Membership;
using Sharding.Mapping;
using Sharding.Protocol;

namespace Sharding.ControlPlane.Assignment;

/// <summary>
/// The leader's loop: membership snapshots → debounce → shard maps for every service → a new generation for each changed one.
/// </summary>
/// <remarks>
/// <list type="number">
/// <item>Every membership snapshot (and every leadership change) wakes the loop; followers only remember the snapshot.</item>
/// <item>On becoming leader (a new epoch) it publishes at once; otherwise it waits <see cref="ControlPlaneOptions.Debounce"/> after
///   the first change and publishes the latest snapshot then, so changes within one window make one generation.</item>
/// <item>Generation = (epoch &lt;&lt; 32) | sequence, the sequence counting this leader's publications from 1: a new leader's epoch
///   is higher, so its generations exceed every earlier leader's; it is also kept above the registry's current one. A subscriber
///   holding a generation this leader did not publish (a deleted Lease restarted the epochs) raises the epoch above it.</item>
/// <item>Only services whose settings or members changed get a new generation; a service that vanished from the membership gets
///   an empty map (its sidecars answer 503 rather than route on stale owners).</item>
/// </list>
/// </remarks>
internal sealed partial class AssignmentService(
    IMembershipSource membership,
    ILeaderElector elector,
    ShardMapRegistry registry,
    ControlPlaneMetrics metrics,
    IOptions<ControlPlaneOptions> options,
    TimeProvider timeProvider,
    IHostApplicationLifetime lifetime,
    ILogger<AssignmentService> logger) : BackgroundService
{
    private readonly Channel<bool> _wake = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite });
    private MembershipSnapshot? _latest;
    private long _epoch = -1;
    private long _sequence;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        elector.Changed += OnLeadershipChanged;
        registry.HeldAhead += OnHeldAhead;
        var electing = Task.Run(() => elector.RunAsync(stoppingToken), CancellationToken.None);
        var watching = Task.Run(() => WatchMembershipAsync(stoppingToken), CancellationToken.None);
        StopIfEnded(electing, "leader election", stoppingToken);
        StopIfEnded(watching, "membership watch", stoppingToken);
        try
        {
            for (long round = 0; round < long.MaxValue && !stoppingToken.IsCancellationRequested; round++)
            {
                await _wake.Reader.ReadAsync(stoppingToken).ConfigureAwait(false);
                var state = elector.Current;
                if (!state.IsLeader || Volatile.Read(ref _latest) is null)
                {
                    continue;
                }

                if (state.Epoch == _epoch)
                {
                    await Task.Delay(options.Value.Debounce, timeProvider, stoppingToken).ConfigureAwait(false);
                    _wake.Reader.TryRead(out _);
                    state = elector.Current;
                    if (!state.IsLeader)
                    {
                        continue;
                    }
                }

                if (state.Epoch != _epoch)
                {
                    _epoch = state.Epoch;
                    _sequence = 0;
                }

                Publish(Volatile.Read(ref _latest)!, state);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        finally
        {
            elector.Changed -= OnLeadershipChanged;
            registry.HeldAhead -= OnHeldAhead;
            await Task.WhenAll(electing, watching).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    /// <summary>
    /// Election and the membership watch run for the process's life, retrying the errors they expect. One that ends before
    /// shutdown anyway (an error nobody foresaw) would leave this replica serving a frozen leadership or membership view while
    /// it looks healthy: it is logged (Critical) and the process stops with exit code 1, so that it is restarted.
    /// </summary>
    private void StopIfEnded(Task loop, string name, CancellationToken stoppingToken) =>
        loop.ContinueWith(
            ended =>
            {
                if (stoppingToken.IsCancellationRequested)
                {
                    return;
                }

                var error = ended.Exception?.GetBaseException();
                Log.LoopEnded(logger, error, name);
                Environment.ExitCode = 1;
                lifetime.StopApplication();
            },
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);

    private void OnLeadershipChanged(LeadershipState state) => _wake.Writer.TryWrite(true);

    /// <summary>A subscriber holds a generation this replica did not publish: the loop publishes that service again (see Publish).</summary>
    private void OnHeldAhead(string service, long generation, ulong checksum) => _wake.Writer.TryWrite(true);

    private async Task WatchMembershipAsync(CancellationToken cancellationToken)
    {
        try
        {
            await foreach (var snapshot in membership.WatchAsync(cancellationToken).ConfigureAwait(false))
            {
                metrics.MembershipEvent();
                Volatile.Write(ref _latest, snapshot);
                _wake.Writer.TryWrite(true);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
    }

    private void Publish(MembershipSnapshot snapshot, LeadershipState state)
    {
        var started = timeProvider.GetTimestamp();
        var publishedAt = timeProvider.GetUtcNow().ToUnixTimeMilliseconds();
        var changed = 0;
        var services = new HashSet<string>(snapshot.Services.Keys, StringComparer.Ordinal);
        services.UnionWith(registry.Services);
        foreach (var service in services.Order(StringComparer.Ordinal))
        {
            ShardMap candidate;
            try
            {
                candidate = snapshot.Services.TryGetValue(service, out var m)
                    ? ShardMap.Create(service, 0, m.Members, m.Algorithm, m.TableOptions, m.KeyPolicy, m.HashKeySource)
                    : ShardMap.Create(service, 0, []);
            }
            catch (ArgumentException ex)
            {
                metrics.MembershipError();
                Log.InvalidService(logger, service, ex.Message);
                continue;
            }

            var hasCurrent = registry.TryGet(service, out var current);
            var heldAbove = registry.HeldAbove(service);
            if (heldAbove != 0 && heldAbove >> 32 >= state.Epoch && elector.RaiseEpochAbove(heldAbove >> 32))
            {
                // A subscriber holds a generation of this epoch or a later one that this leader never published: an earlier
                // incarnation of the Lease (deleted, so its epochs restarted). Decided here, on the leader's loop, so a claim
                // noted before this replica led counts too. The raise wakes the loop, which publishes in the new epoch; not
                // now, in this one, where a generation above the claim would settle it without a new epoch.
                continue;
            }

            if (hasCurrent && heldAbove == 0 && ShardMapCodec.HasSameContent(current.Map, candidate))
            {
                continue;
            }

            var generation = (state.Epoch << 32) | ++_sequence;
            if (hasCurrent && generation <= current.Map.Generation)
            {
                generation = current.Map.Generation + 1;
            }

            if (generation <= heldAbove)
            {
                // The raise was refused (out of bounds): published anyway, for subscribers that hold nothing yet.
                Log.BelowHeld(logger, service, generation, heldAbove);
            }

            var map = candidate.WithGeneration(generation);
            if (registry.Publish(map, state.Epoch, state.LeaderId, publishedAt))
            {
                changed++;
                metrics.KeysMoved(service, hasCurrent ? ShardMapComparison.MovedShare(current.Map, map) : 0);
                Log.Published(logger, service, generation, map.Members.Length, state.Epoch);
            }
        }

        registry.MarkSynced();
        metrics.Published(timeProvider.GetElapsedTime(started), changed, computed: true);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 301, EventName = "GenerationPublished", Level = LogLevel.Information, Message = "Published {Service} generation {Generation} with {MemberCount} members (epoch {Epoch})")]
        public static partial void Published(ILogger logger, string service, long generation, int memberCount, long epoch);

        [LoggerMessage(EventId = 303, EventName = "GenerationBelowHeld", Level = LogLevel.Warning, Message = "Published {Service} generation {Generation}, below generation {Held} that a subscriber holds and that the leader's epoch was not raised above: that subscriber ignores it")]
        public static partial void BelowHeld(ILogger logger, string service, long generation, long held);

        [LoggerMessage(EventId = 304, EventName = "LoopEnded", Level = LogLevel.Critical, Message = "The {Loop} loop ended before shutdown; the control plane stops with exit code 1 so that it is restarted")]
        public static partial void LoopEnded(ILogger logger, Exception? exception, string loop);

        [LoggerMessage(EventId = 302, EventName = "InvalidService", Level = LogLevel.Error, Message = "Service {Service} cannot be mapped, keeping its last map: {Reason}")]
        public static partial void InvalidService(ILogger logger, string service, string reason);
    }
}

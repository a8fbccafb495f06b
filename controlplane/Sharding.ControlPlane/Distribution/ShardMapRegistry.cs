using System.Collections.Concurrent;
using Sharding.Mapping;
using Sharding.Protocol;

namespace Sharding.ControlPlane.Distribution;

/// <summary>One published generation of one service, encoded once for every subscriber.</summary>
/// <param name="Map">The map.</param>
/// <param name="SnapshotFrame">The SNAPSHOT update as a gRPC frame.</param>
/// <param name="DeltaFrame">The DELTA from the previous generation as a gRPC frame, when one can express the change.</param>
/// <param name="DeltaBaseGeneration">The generation the delta applies to (-1 without delta).</param>
/// <param name="DeltaBaseChecksum">The checksum of that base generation.</param>
/// <param name="LeaderEpoch">The epoch of the leader that computed it.</param>
/// <param name="PublishedUnixMs">When the leader published it.</param>
internal sealed record Publication(
    ShardMap Map, byte[] SnapshotFrame, byte[]? DeltaFrame, long DeltaBaseGeneration, ulong DeltaBaseChecksum, long LeaderEpoch, long PublishedUnixMs);

/// <summary>
/// The latest publication of every service on this replica: computed here (leader) or relayed from the leader (follower).
/// Watch streams read it and wait on <see cref="Changed"/>.
/// </summary>
/// <remarks>
/// Only a newer generation replaces a service's publication, so a replica never serves a map older than one it served.
/// A subscriber holding the previous generation gets the delta; any other gets the snapshot ("too far behind" = more than one
/// generation, or a different base checksum). Frames are encoded once per generation, outside the subscribers' loops.
/// </remarks>
internal sealed class ShardMapRegistry
{
    private readonly ConcurrentDictionary<string, Publication> _current = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, (long Generation, ulong Checksum)> _heldAhead = new(StringComparer.Ordinal);
    private readonly object _gate = new();
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _synced;
    private volatile string? _cutOff;

    /// <summary>Completes at the next publication (or sync); take it before reading, then wait on it.</summary>
    public Task Changed
    {
        get
        {
            lock (_gate)
            {
                return _changed.Task;
            }
        }
    }

    /// <summary>Whether this replica has a complete view (leader: computed once; follower: the relay stream caught up).</summary>
    public bool IsSynced => _synced;

    /// <summary>All publications (snapshot of the moment).</summary>
    public IEnumerable<Publication> All => _current.Values;

    /// <summary>The service names.</summary>
    public IEnumerable<string> Services => _current.Keys;

    public bool TryGet(string service, out Publication publication) => _current.TryGetValue(service, out publication!);

    /// <summary>
    /// Raised (on the subscriber's request thread) with the service, generation and checksum a subscriber holds when this replica
    /// never published them: a higher generation, or its current generation with other content. A leader that did not publish it
    /// must move to a higher epoch (the Lease was deleted and its epochs restarted); a follower passes it on to the leader, which
    /// alone can tell a lagging relay from a lost epoch.
    /// </summary>
    public event Action<string, long, ulong>? HeldAhead;

    /// <summary>Notes what a subscriber says it holds (its WatchRequest's <c>known_generation</c> and <c>known_checksum</c>).</summary>
    /// <returns>Whether this replica never published it (and it is above any such claim noted before).</returns>
    public bool NoteHeld(string service, long generation, ulong checksum)
    {
        lock (_gate)
        {
            var ahead = _current.TryGetValue(service, out var current)
                ? generation > current.Map.Generation || (generation == current.Map.Generation && checksum != current.Map.Checksum)
                : generation > 0;
            if (!ahead || (_heldAhead.TryGetValue(service, out var noted) && generation <= noted.Generation))
            {
                return false;
            }

            _heldAhead[service] = (generation, checksum);
        }

        HeldAhead?.Invoke(service, generation, checksum);
        return true;
    }

    /// <summary>
    /// The highest generation a subscriber was noted holding that this replica's current one does not supersede (equal counts: it
    /// was noted with other content), else 0: the leader publishes the service again above it.
    /// </summary>
    public long HeldAbove(string service) =>
        _heldAhead.TryGetValue(service, out var held) && !Supersedes(service, held.Generation) ? held.Generation : 0;

    /// <summary>
    /// The claims noted (<see cref="NoteHeld"/>) that this replica's current maps do not supersede, as raised by
    /// <see cref="HeldAhead"/>: a follower that starts relaying a leader passes them on, as it had no leader to tell before.
    /// </summary>
    public List<(string Service, long Generation, ulong Checksum)> UnsettledClaims()
    {
        var claims = new List<(string, long, ulong)>();
        foreach (var (service, held) in _heldAhead)
        {
            if (!Supersedes(service, held.Generation))
            {
                claims.Add((service, held.Generation, held.Checksum));
            }
        }

        return claims;
    }

    private bool Supersedes(string service, long held) => _current.TryGetValue(service, out var current) && current.Map.Generation > held;

    /// <summary>Publishes <paramref name="map"/> when newer than the service's current generation.</summary>
    public bool Publish(ShardMap map, long leaderEpoch, string? leaderId, long publishedUnixMs)
    {
        ArgumentNullException.ThrowIfNull(map);
        lock (_gate)
        {
            _current.TryGetValue(map.Service, out var previous);
            if (previous is not null && map.Generation <= previous.Map.Generation)
            {
                return false;
            }

            var snapshot = GrpcFrameWriter.Encode(ShardMapCodec.ToSnapshot(map, leaderEpoch, leaderId, publishedUnixMs));
            var delta = previous is null ? null : ShardMapCodec.ToDelta(previous.Map, map, leaderEpoch, leaderId, publishedUnixMs);
            _current[map.Service] = new Publication(
                map, snapshot, delta is null ? null : GrpcFrameWriter.Encode(delta), previous?.Map.Generation ?? -1, previous?.Map.Checksum ?? 0,
                leaderEpoch, publishedUnixMs);
            Signal();
        }

        return true;
    }

    /// <summary>
    /// Why this follower's view may be stale (its relay has not heard from the leader for too long), else null. While set the
    /// replica is not ready and ends its Watch streams, so subscribers move to a replica that still hears the leader.
    /// </summary>
    public string? CutOff => _cutOff;

    /// <summary>Sets or clears <see cref="CutOff"/> (wakes waiting streams when it changes).</summary>
    /// <param name="reason">Why, or null when the relay hears the leader again.</param>
    /// <returns>Whether it changed (cut off now, or no longer).</returns>
    public bool SetCutOff(string? reason)
    {
        lock (_gate)
        {
            if ((_cutOff is null) == (reason is null))
            {
                return false;
            }

            _cutOff = reason;
            Signal();
            return true;
        }
    }

    /// <summary>Marks the view complete (wakes waiting streams so unknown services can be refused).</summary>
    public void MarkSynced()
    {
        if (_synced)
        {
            return;
        }

        lock (_gate)
        {
            _synced = true;
            Signal();
        }
    }

    private void Signal()
    {
        var changed = _changed;
        _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        changed.TrySetResult();
    }
}

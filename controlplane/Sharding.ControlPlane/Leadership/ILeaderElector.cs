namespace Sharding.ControlPlane.Leadership;

/// <summary>What this replica knows about leadership right now.</summary>
/// <param name="IsLeader">Whether this replica holds the lease and may compute and publish maps.</param>
/// <param name="Epoch">
/// The leader epoch that fences generations: the Lease's <c>leaseTransitions</c> (Kubernetes) or the lease file's counter
/// (local mode). It grows with every change of holder, so a new leader's generations are above any old leader's.
/// </param>
/// <param name="LeaderId">The current holder's identity, when known.</param>
/// <param name="LeaderAddress">The current holder's control-plane URL (for followers to relay its stream), when known.</param>
public sealed record LeadershipState(bool IsLeader, long Epoch, string? LeaderId, string? LeaderAddress)
{
    /// <summary>Before the first observation: not leader, no leader known.</summary>
    public static LeadershipState Unknown { get; } = new(false, 0, null, null);
}

/// <summary>
/// The leader-election seam: a Kubernetes <c>Lease</c> in production, an exclusive OS file lock in local mode.
/// </summary>
internal interface ILeaderElector
{
    /// <summary>The latest state; replaced whole on every change.</summary>
    LeadershipState Current { get; }

    /// <summary>Raised on every change of <see cref="Current"/> (acquired, lost, leader changed).</summary>
    event Action<LeadershipState>? Changed;

    /// <summary>Runs the election loop until cancelled; on graceful cancellation a leader releases the lease.</summary>
    /// <param name="cancellationToken">Stops the loop.</param>
    /// <returns>Completes when the loop has stopped (and the lease is released, if held).</returns>
    Task RunAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Moves a leader to an epoch above <paramref name="epoch"/>, because a subscriber holds a generation of that epoch that this
    /// leader did not publish: the Lease (or the lease file's counter) was deleted and started again from 0, so without a raise
    /// every sidecar would ignore this leader's generations as older than the one it holds. Takes effect at once (file lock) or at
    /// the next Lease write, which raises <see cref="Changed"/> with the new epoch.
    /// </summary>
    /// <param name="epoch">The epoch of the generation a subscriber holds.</param>
    /// <returns>
    /// true when the epoch is (or is about to be) above <paramref name="epoch"/>; false when ignored: this replica does not lead,
    /// its epoch is above already, or the claim is out of range.
    /// </returns>
    bool RaiseEpochAbove(long epoch);
}

/// <summary>Bounds on <see cref="ILeaderElector.RaiseEpochAbove"/>: a subscriber's claim is not authenticated.</summary>
internal static class EpochRaise
{
    /// <summary>
    /// The largest raise accepted at once. A Lease's <c>leaseTransitions</c> is an int32 that a deleted Lease restarts from 0;
    /// a real fleet holds an epoch no higher than the old Lease's transitions, far below this. A forged WatchRequest cannot push
    /// the epoch to the int32 limit (where no replica could ever take over) in one step; each claim is logged with the subscriber
    /// that made it (WatchHandler) and each raise by the elector.
    /// </summary>
    public const long MaxStep = 1 << 20;

    /// <summary>The highest epoch a Lease can carry (<c>leaseTransitions</c> is an int32), keeping one transition spare.</summary>
    public const long MaxEpoch = int.MaxValue - 1;

    /// <summary>Whether a leader at <paramref name="current"/> may move above <paramref name="claimed"/>.</summary>
    public static bool Allowed(long current, long claimed) => claimed >= current && claimed < MaxEpoch && claimed - current <= MaxStep;
}

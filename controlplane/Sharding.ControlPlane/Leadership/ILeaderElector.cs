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
}

using Microsoft.Extensions.Options;
using Sharding.Kubernetes;

namespace Sharding.ControlPlane.Leadership;

/// <summary>Leader election on a <c>coordination.k8s.io/v1</c> Lease with client-go's semantics.</summary>
/// <remarks>
/// <para>Every <see cref="LeaseElectionOptions.RetryPeriod"/> the loop makes one attempt:</para>
/// <list type="number">
/// <item>GET the Lease; when it does not exist, CREATE it naming us (201 = we lead; 409 AlreadyExists = lost), with epoch 0 on a
/// fresh install and one above the last <c>leaseTransitions</c> this process saw when the Lease was deleted under it.</item>
/// <item>If its resourceVersion differs from the last one we saw, remember it and the time we saw it on OUR monotonic clock.
/// Expiry is judged from that moment, never from <c>renewTime</c> against our wall clock (clocks of two nodes disagree).</item>
/// <item>If someone else holds it and it has not been still for <c>leaseDurationSeconds</c> since we saw it change: follow
/// (publish the holder and its <c>sharding.dev/leader-url</c>); if we believed we led, step down at once.</item>
/// <item>Otherwise (free, released, expired, or ours) PUT it naming us, with the resourceVersion we read; a new holder sets
/// <c>acquireTime</c> and increments <c>leaseTransitions</c> (the epoch). 200 = we lead; 409 Conflict = another candidate won
/// the race, which is a value, not an error.</item>
/// <item>While leading, a watchdog fires <see cref="LeaseElectionOptions.RenewDeadline"/> after the start of the last successful
/// renewal: if no renewal succeeded by then we step down (Changed with IsLeader=false) and cancel the attempt in flight. The
/// deadline is below the lease duration, so we stop publishing before any follower can take over.</item>
/// <item>A leader told that a subscriber holds a generation of its epoch or a later one that it did not publish
/// (<see cref="RaiseEpochAbove"/>: the Lease was deleted and recreated while the sidecars kept running) renews at once with
/// <c>leaseTransitions</c> above that epoch, so its next generations are newer than what the fleet holds.</item>
/// <item>On graceful shutdown a leader first publishes IsLeader=false, then writes the Lease with no holder and
/// <c>leaseDurationSeconds: 1</c> (client-go's ReleaseOnCancel), so a follower takes over at its next attempt. A replica not
/// leading releases it too when it still is exactly as this replica last wrote it (a write that came too late to lead on).</item>
/// </list>
/// <para>Changed is raised under the state lock so observers see transitions in order; handlers must be quick.</para>
/// </remarks>
internal sealed partial class LeaseLeaderElector : ILeaderElector, IDisposable
{
    private readonly KubernetesClient _client;
    private readonly LeaseElectionOptions _options;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly ITimer _watchdog;
    private LeadershipState _current = LeadershipState.Unknown;
    private string? _observedVersion;
    private long _observedAt;
    private long _lastRenewStart;
    private CancellationTokenSource? _attempt;
    private TaskCompletionSource? _delay;
    private long _epochFloor = -1;
    private long _lastSeenTransitions = -1;
    private bool _raisePending;
    private string? _writtenVersion; // the resourceVersion of our last successful write (led on or not)
    private volatile bool _idle;

    public LeaseLeaderElector(KubernetesClient client, IOptions<LeaseElectionOptions> options, TimeProvider timeProvider, ILogger<LeaseLeaderElector> logger)
    {
        _client = client;
        _options = options.Value;
        _timeProvider = timeProvider;
        _logger = logger;
        _watchdog = timeProvider.CreateTimer(static s => ((LeaseLeaderElector)s!).OnRenewDeadline(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    public event Action<LeadershipState>? Changed;

    public LeadershipState Current
    {
        get
        {
            lock (_gate)
            {
                return _current;
            }
        }
    }

    /// <summary>Whether the loop is waiting for its next attempt (tests settle on it before moving the clock).</summary>
    internal bool IsIdle => _idle;

    private string Identity => _options.Identity!;

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                await TryAcquireOrRenewAsync(cancellationToken).ConfigureAwait(false);
                await DelayAsync(_options.RetryPeriod, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
        finally
        {
            _idle = false;
            await ReleaseAsync().ConfigureAwait(false);
            _idle = true;
        }
    }

    public void Dispose() => _watchdog.Dispose();

    public bool RaiseEpochAbove(long epoch)
    {
        TaskCompletionSource? delay;
        lock (_gate)
        {
            if (!_current.IsLeader || epoch < _current.Epoch)
            {
                return false;
            }

            if (epoch <= _epochFloor)
            {
                return true; // under way: the next renewal goes above it
            }

            if (!EpochRaise.Allowed(_current.Epoch, epoch))
            {
                LogRaiseRefused(Identity, _current.Epoch, epoch);
                return false;
            }

            LogRaising(Identity, _current.Epoch, epoch + 1);
            _epochFloor = epoch;
            delay = _delay;

            // An attempt in flight may have built its write before this floor: the loop then renews again without waiting.
            _raisePending = delay is null || delay.Task.IsCompleted;
        }

        // Renew now rather than at the next retry period: until the Lease carries the new epoch, sidecars ignore our maps.
        if (delay is not null && !delay.Task.IsCompleted)
        {
            // Down before the wake-up, as in the timer callback: the continuation runs later, on the thread pool, and until
            // it does the loop must not look idle (a test settling on IsIdle would read the epoch before the renewal).
            _idle = false;
            delay.TrySetResult();
        }

        return true;
    }

    /// <summary>One attempt: steps 1 to 4 of the remarks.</summary>
    internal async Task TryAcquireOrRenewAsync(CancellationToken cancellationToken)
    {
        var start = _timeProvider.GetTimestamp();
        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        lock (_gate)
        {
            // A renewal must not outlive the renew deadline: the watchdog cancels it (on our TimeProvider's clock).
            _attempt = attempt;
        }

        try
        {
            // Step 1: read (and create when missing).
            var lease = await _client.GetLeaseAsync(_options.Namespace!, _options.LeaseName, attempt.Token).ConfigureAwait(false);
            if (lease is null)
            {
                var created = await _client.CreateLeaseAsync(NewRecord(null), attempt.Token).ConfigureAwait(false);
                if (created.IsConflict)
                {
                    LogLostRace(Identity, created.Conflict!.Reason);
                    return;
                }

                Succeeded(created.Value!, start);
                return;
            }

            // Step 2: observe changes on our monotonic clock, when the answer arrived: the version we read may have been written
            // while a slow GET was in flight, so the attempt's start would date it too early (client-go takes Now() after the Get).
            var received = _timeProvider.GetTimestamp();
            lock (_gate)
            {
                _lastSeenTransitions = Math.Max(_lastSeenTransitions, lease.Spec.LeaseTransitions ?? 0);
                if (lease.Metadata.ResourceVersion != _observedVersion)
                {
                    _observedVersion = lease.Metadata.ResourceVersion;
                    _observedAt = received;
                }
            }

            // Step 3: someone else holds a lease that is still valid as far as we can tell.
            var holder = lease.Spec.HolderIdentity;
            if (!string.IsNullOrEmpty(holder) && holder != Identity && !Expired(lease, start))
            {
                Follow(lease, holder);
                return;
            }

            // Step 4: take it over or renew it, conditionally on what we read.
            var replaced = await _client.ReplaceLeaseAsync(NewRecord(lease), attempt.Token).ConfigureAwait(false);
            if (replaced.IsConflict)
            {
                LogLostRace(Identity, replaced.Conflict!.Reason);
                lock (_gate)
                {
                    if (_current.IsLeader)
                    {
                        StepDownLocked("the Lease was changed by someone else (409 Conflict)");
                    }
                }

                return;
            }

            Succeeded(replaced.Value!, start);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && attempt.IsCancellationRequested)
        {
            // The renew deadline cut the attempt short; the watchdog has stepped down already.
        }
        catch (OperationCanceledException ex) when (!cancellationToken.IsCancellationRequested)
        {
            // The client's request timeout: a failed attempt like any other (otherwise a hung API server would go unlogged).
            LogAttemptFailed(ex, Identity);
        }
        catch (Exception ex) when (ex is HttpRequestException or IOException or KubernetesApiException or System.Text.Json.JsonException)
        {
            if (ex is KubernetesApiException { IsForbidden: true } forbidden)
            {
                LogForbidden(forbidden.Message, forbidden.MissingPermission);
            }
            else
            {
                LogAttemptFailed(ex, Identity);
            }
        }
        finally
        {
            lock (_gate)
            {
                _attempt = null;
            }
        }
    }

    private bool Expired(Lease lease, long start)
    {
        var seconds = lease.Spec.LeaseDurationSeconds is { } d && d > 0 ? d : (int)_options.LeaseDuration.TotalSeconds;
        lock (_gate)
        {
            return _timeProvider.GetElapsedTime(_observedAt, start) >= TimeSpan.FromSeconds(seconds);
        }
    }

    private Lease NewRecord(Lease? old)
    {
        var now = _timeProvider.GetUtcNow();
        // A renewal only while this process leads. A Lease naming us that we do not hold right now (written by a previous
        // incarnation with the same pod name that crashed, or by us before a step-down) starts a new epoch: the generations
        // published in the old one must never be counted again from (epoch << 32) | 1.
        var ours = old?.Spec.HolderIdentity == Identity && Current.IsLeader;
        long transitions;
        lock (_gate)
        {
            // A Lease that is gone (deleted, or a reinstalled namespace) is created above the epoch this replica last knew, and any
            // write goes above the epoch a subscriber proved it holds (RaiseEpochAbove): leaseTransitions must never go back.
            transitions = old is null ? _lastSeenTransitions + 1
                : ours ? old.Spec.LeaseTransitions ?? 0 : (old.Spec.LeaseTransitions ?? 0) + 1;
            transitions = Math.Max(transitions, _epochFloor + 1);
        }

        var annotations = new Dictionary<string, string>(old?.Metadata.Annotations ?? new Dictionary<string, string>(), StringComparer.Ordinal);
        if (_options.LeaderUrl is { Length: > 0 } url)
        {
            annotations[LeaseElectionOptions.LeaderUrlAnnotation] = url;
        }

        // Built on the Lease read: the PUT replaces the whole object, so the fields we do not set (preferredHolder, strategy,
        // finalizers, fields of newer versions) must go back as they were.
        var basis = old ?? new Lease { Metadata = new ObjectMeta { Name = _options.LeaseName, Namespace = _options.Namespace } };
        return basis with
        {
            Metadata = basis.Metadata with { Annotations = annotations },
            Spec = basis.Spec with
            {
                HolderIdentity = Identity,
                LeaseDurationSeconds = (int)_options.LeaseDuration.TotalSeconds,
                AcquireTime = ours ? old!.Spec.AcquireTime ?? now : now,
                RenewTime = now,
                LeaseTransitions = (int)Math.Min(transitions, EpochRaise.MaxEpoch),
            },
        };
    }

    private void Succeeded(Lease stored, long start)
    {
        lock (_gate)
        {
            _observedVersion = stored.Metadata.ResourceVersion;
            _writtenVersion = stored.Metadata.ResourceVersion;
            _observedAt = start;
            _lastSeenTransitions = Math.Max(_lastSeenTransitions, stored.Spec.LeaseTransitions ?? 0);
            if (_timeProvider.GetElapsedTime(start) >= _options.RenewDeadline)
            {
                // The write went through, but too late to vouch for the whole renew deadline: do not claim leadership on it.
                return;
            }

            var wasLeader = _current.IsLeader;
            _lastRenewStart = start;
            _watchdog.Change(_options.RenewDeadline - _timeProvider.GetElapsedTime(start), Timeout.InfiniteTimeSpan);
            var state = new LeadershipState(true, stored.Spec.LeaseTransitions ?? 0, Identity, _options.LeaderUrl);
            if (!wasLeader)
            {
                LogAcquired(Identity, state.Epoch);
            }

            PublishLocked(state);
        }
    }

    private void Follow(Lease lease, string holder)
    {
        lock (_gate)
        {
            if (_current.IsLeader)
            {
                StepDownLocked($"the Lease is held by {holder}");
            }

            string? url = null;
            lease.Metadata.Annotations?.TryGetValue(LeaseElectionOptions.LeaderUrlAnnotation, out url);
            var state = new LeadershipState(false, lease.Spec.LeaseTransitions ?? 0, holder, url);
            if (_current.LeaderId != holder)
            {
                LogFollowing(Identity, holder, state.Epoch);
            }

            PublishLocked(state);
        }
    }

    // Step 5: the watchdog.
    private void OnRenewDeadline()
    {
        lock (_gate)
        {
            if (_current.IsLeader && _timeProvider.GetElapsedTime(_lastRenewStart) >= _options.RenewDeadline)
            {
                StepDownLocked($"no renewal succeeded within the renew deadline ({_options.RenewDeadline})");
                _attempt?.Cancel();
            }
        }
    }

    private void StepDownLocked(string why)
    {
        _watchdog.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        LogSteppedDown(Identity, why);
        PublishLocked(new LeadershipState(false, _current.Epoch, null, null));
    }

    private void PublishLocked(LeadershipState state)
    {
        if (state == _current)
        {
            return;
        }

        _current = state;
        Changed?.Invoke(state);
    }

    // Step 6: release on graceful shutdown.
    private async Task ReleaseAsync()
    {
        bool leading;
        string? written;
        lock (_gate)
        {
            leading = _current.IsLeader;
            written = _writtenVersion;
            if (leading)
            {
                StepDownLocked("shutting down");
            }
            else if (written is null)
            {
                return;
            }
        }

        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            var lease = await _client.GetLeaseAsync(_options.Namespace!, _options.LeaseName, timeout.Token).ConfigureAwait(false);

            // Not leading, the Lease may still name us from our own last write (one that came too late to lead on, or the last
            // renewal before a step-down): released too, when nobody wrote it since, so followers need not wait it out.
            if (lease is null || lease.Spec.HolderIdentity != Identity || (!leading && lease.Metadata.ResourceVersion != written))
            {
                return;
            }

            var annotations = new Dictionary<string, string>(lease.Metadata.Annotations ?? new Dictionary<string, string>(), StringComparer.Ordinal);
            annotations.Remove(LeaseElectionOptions.LeaderUrlAnnotation);
            var now = _timeProvider.GetUtcNow();
            var release = lease with
            {
                Metadata = lease.Metadata with { Annotations = annotations },
                Spec = lease.Spec with
                {
                    HolderIdentity = null,
                    LeaseDurationSeconds = 1,
                    AcquireTime = now,
                    RenewTime = now,
                    LeaseTransitions = lease.Spec.LeaseTransitions,
                },
            };
            var result = await _client.ReplaceLeaseAsync(release, timeout.Token).ConfigureAwait(false);
            if (!result.IsConflict)
            {
                LogReleased(Identity);
            }
        }
        catch (Exception ex) when (ex is HttpRequestException or IOException or KubernetesApiException or OperationCanceledException)
        {
            // Not fatal: the followers take over after the lease duration instead of at once.
            LogReleaseFailed(ex, Identity);
        }
    }

    private async Task DelayAsync(TimeSpan delay, CancellationToken cancellationToken)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate)
        {
            _delay = done;
            if (_raisePending)
            {
                // A raise arrived during the last attempt: once, no retry-period wait (no hot loop if that renewal fails).
                _raisePending = false;
                done.TrySetResult(); // so a raise during the attempt that follows sees it in flight too
                return;
            }
        }

        _idle = true;
        using var timer = _timeProvider.CreateTimer(
            static s =>
            {
                var (self, tcs) = ((LeaseLeaderElector, TaskCompletionSource))s!;

                // Cleared inside the timer callback so a test's Advance() returns with the flag already down.
                self._idle = false;
                tcs.TrySetResult();
            },
            (this, done),
            delay,
            Timeout.InfiniteTimeSpan);
        await using var registration = cancellationToken.Register(static s => ((TaskCompletionSource)s!).TrySetCanceled(), done).ConfigureAwait(false);
        try
        {
            await done.Task.ConfigureAwait(false);
        }
        finally
        {
            _idle = false;
        }
    }

    [LoggerMessage(EventId = 101, EventName = "LeaseAcquired", Level = LogLevel.Information, Message = "{Identity} now leads (epoch {Epoch})")]
    private partial void LogAcquired(string identity, long epoch);

    [LoggerMessage(EventId = 102, EventName = "LeaseFollowing", Level = LogLevel.Information, Message = "{Identity} follows {Leader} (epoch {Epoch})")]
    private partial void LogFollowing(string identity, string leader, long epoch);

    [LoggerMessage(EventId = 103, EventName = "LeaseSteppedDown", Level = LogLevel.Warning, Message = "{Identity} stopped leading: {Reason}")]
    private partial void LogSteppedDown(string identity, string reason);

    [LoggerMessage(EventId = 104, EventName = "LeaseLostRace", Level = LogLevel.Debug, Message = "{Identity} lost a Lease write race ({Reason})")]
    private partial void LogLostRace(string identity, string? reason);

    [LoggerMessage(EventId = 105, EventName = "LeaseAttemptFailed", Level = LogLevel.Warning, Message = "{Identity} could not read or write the Lease")]
    private partial void LogAttemptFailed(Exception exception, string identity);

    [LoggerMessage(EventId = 106, EventName = "LeaseReleased", Level = LogLevel.Information, Message = "{Identity} released the Lease")]
    private partial void LogReleased(string identity);

    [LoggerMessage(EventId = 107, EventName = "LeaseReleaseFailed", Level = LogLevel.Warning, Message = "{Identity} could not release the Lease; followers take over after the lease duration")]
    private partial void LogReleaseFailed(Exception exception, string identity);

    [LoggerMessage(EventId = 109, EventName = "LeaseEpochRaising", Level = LogLevel.Warning, Message = "{Identity} leads at epoch {Epoch}, but a subscriber holds a generation of a later or equal epoch that this leader did not publish (was the Lease deleted?): moving to epoch {NewEpoch}")]
    private partial void LogRaising(string identity, long epoch, long newEpoch);

    [LoggerMessage(EventId = 110, EventName = "LeaseEpochRaiseRefused", Level = LogLevel.Error, Message = "{Identity} leads at epoch {Epoch} and refuses to move above epoch {Claimed}, which a subscriber claims to hold: more than 2^20 above, or beyond the Lease's int32 range (a forged or corrupt WatchRequest?)")]
    private partial void LogRaiseRefused(string identity, long epoch, long claimed);

    [LoggerMessage(EventId = 108, EventName = "LeaseForbidden", Level = LogLevel.Error, Message = "{Message}. RBAC does not allow it: grant {Permission}")]
    private partial void LogForbidden(string message, string permission);
}

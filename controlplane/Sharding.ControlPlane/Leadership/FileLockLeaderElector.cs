using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.Options;
using Sharding.ControlPlane.Hosting;

namespace Sharding.ControlPlane.Leadership;

/// <summary>
/// Local-mode leader election: the replica holding an exclusive OS lock on the lease file is the leader.
/// </summary>
/// <remarks>
/// <list type="number">
/// <item>Every replica tries to open the lease file with <see cref="FileShare.None"/> (on Linux .NET takes a <c>flock</c>
///   LOCK_EX|LOCK_NB, released by the kernel when the process dies, however it dies).</item>
/// <item>The winner reads the counter in <c>&lt;lease&gt;.epoch</c>, adds one and writes it back (write to a temporary file, then
///   rename): that is its epoch, strictly above every earlier leader's, so its generations (epoch &lt;&lt; 32 | sequence) are too.</item>
/// <item>A deleted epoch file restarts above the epoch the winner last observed; a leader told that a subscriber holds a generation
///   of its epoch or a later one that it did not publish (<see cref="RaiseEpochAbove"/>) moves its epoch above that one at once.</item>
/// <item>It writes <c>&lt;lease&gt;.leader</c> (JSON: id, gRPC URL, epoch) so followers know whom to relay from.</item>
/// <item>Followers retry the lock every <see cref="ControlPlaneOptions.LeaseRetryInterval"/> and re-read the leader file; a leader that
///   dies is replaced within one interval. On graceful stop the leader clears the leader file and releases the lock.</item>
/// <item>The lock is on the file, not the path: a leader whose lease file was deleted or renamed over (another replica can then
///   lock the new one) steps down within one interval (Linux; event 107).</item>
/// </list>
/// </remarks>
internal sealed partial class FileLockLeaderElector(
    IOptions<ControlPlaneOptions> options, ControlPlaneEndpoints endpoints, TimeProvider timeProvider, ILogger<FileLockLeaderElector> logger)
    : ILeaderElector, IDisposable
{
    private readonly ControlPlaneOptions _options = options.Value;
    private readonly Lock _gate = new();
    private LeadershipState _current = LeadershipState.Unknown;
    private FileStream? _lock;
    private string? _address;

    public LeadershipState Current => Volatile.Read(ref _current);

    public event Action<LeadershipState>? Changed;

    private string LeasePath => Path.GetFullPath(_options.LeaseFile!);

    private string EpochPath => LeasePath + ".epoch";

    private string LeaderPath => LeasePath + ".leader";

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        var (_, grpc) = await endpoints.Bound.WaitAsync(cancellationToken).ConfigureAwait(false);
        _address = (endpoints.AdvertisedGrpcUrl ?? grpc).ToString().TrimEnd('/');
        Directory.CreateDirectory(Path.GetDirectoryName(LeasePath)!);
        try
        {
            for (long attempt = 0; attempt < long.MaxValue && !cancellationToken.IsCancellationRequested; attempt++)
            {
                if (_lock is null && TryAcquire())
                {
                    // Above the epoch this replica last observed too: a deleted epoch file must not restart the counter.
                    var epoch = Math.Max(ReadEpoch(), Current.Epoch) + 1;
                    try
                    {
                        lock (_gate)
                        {
                            Lead(epoch);
                        }

                        Log.Acquired(logger, _options.ReplicaId, epoch, LeasePath);
                    }
                    catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                    {
                        // Without its epoch recorded it must not lead: give the lock back and try again at the next interval.
                        Log.LeaseFileError(logger, EpochPath, ex.Message);
                        lock (_gate)
                        {
                            _lock?.Dispose();
                            _lock = null;
                        }
                    }
                }
                else if (_lock is not null && !LockStillAtPath(out var where))
                {
                    // The lock is on the file's inode: a deleted or replaced lease file lets the next replica lock a new one.
                    lock (_gate)
                    {
                        Log.LockLost(logger, _options.ReplicaId, Current.Epoch, LeasePath, where);
                        ReleaseLocked();
                    }
                }
                else if (_lock is null)
                {
                    var record = ReadLeader();
                    var observed = record is null
                        ? new LeadershipState(false, Math.Max(ReadEpoch(), Current.Epoch), null, null)
                        : new LeadershipState(false, record.Epoch, record.Id, record.Address);
                    if (observed != Current)
                    {
                        Log.Observed(logger, observed.LeaderId ?? "(none)", observed.LeaderAddress ?? "(none)", observed.Epoch);
                        Set(observed);
                    }
                }

                await Task.Delay(_options.LeaseRetryInterval, timeProvider, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
        finally
        {
            Release();
        }
    }

    public void Dispose() => Release();

    public bool RaiseEpochAbove(long epoch)
    {
        lock (_gate)
        {
            var current = Current;
            if (_lock is null || !current.IsLeader || epoch < current.Epoch)
            {
                return false;
            }

            if (!EpochRaise.Allowed(current.Epoch, epoch))
            {
                Log.RaiseRefused(logger, _options.ReplicaId, current.Epoch, epoch);
                return false;
            }

            Log.Raising(logger, _options.ReplicaId, current.Epoch, epoch + 1);
            try
            {
                Lead(epoch + 1);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                Log.LeaseFileError(logger, EpochPath, ex.Message);
                return false;
            }

            return true;
        }
    }

    /// <summary>Records <paramref name="epoch"/> in the epoch file and this replica in the leader file, then publishes it.</summary>
    private void Lead(long epoch)
    {
        WriteAtomically(EpochPath, epoch.ToString(CultureInfo.InvariantCulture));
        WriteAtomically(LeaderPath, JsonSerializer.Serialize(new LeaderRecord(_options.ReplicaId, _address!, epoch)));
        Set(new LeadershipState(true, epoch, _options.ReplicaId, _address));
    }

    private bool TryAcquire()
    {
        try
        {
            _lock = new FileStream(LeasePath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.None);
            return true;
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException ex)
        {
            Log.LeaseFileError(logger, LeasePath, ex.Message);
            return false;
        }
    }

    private void Release()
    {
        lock (_gate)
        {
            ReleaseLocked();
        }
    }

    private void ReleaseLocked()
    {
        if (_lock is null)
        {
            return;
        }

        try
        {
            if (ReadLeader() is { } record && string.Equals(record.Id, _options.ReplicaId, StringComparison.Ordinal))
            {
                File.Delete(LeaderPath);
            }
        }
        catch (IOException ex)
        {
            Log.LeaseFileError(logger, LeaderPath, ex.Message);
        }

        _lock.Dispose();
        _lock = null;
        Log.Released(logger, _options.ReplicaId, Current.Epoch);
        Set(Current with { IsLeader = false, LeaderId = null, LeaderAddress = null });
    }

    /// <summary>
    /// Whether the file we hold locked is still linked (Linux: <c>/proc/self/fd</c> names the open file's path, with " (deleted)"
    /// once it was deleted or replaced by a rename). Elsewhere, or when it cannot be told, assumed so.
    /// </summary>
    private bool LockStillAtPath(out string where)
    {
        where = LeasePath;
        var handle = _lock?.SafeFileHandle;
        if (handle is null || handle.IsInvalid || !OperatingSystem.IsLinux())
        {
            return true;
        }

        try
        {
            var target = new FileInfo("/proc/self/fd/" + handle.DangerousGetHandle().ToInt64().ToString(CultureInfo.InvariantCulture)).LinkTarget;
            if (target is null)
            {
                return true;
            }

            // Only an unlinked file counts (deleted, or renamed over): the path may differ by symbolic links in its folders.
            where = target;
            return !target.EndsWith(" (deleted)", StringComparison.Ordinal);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return true;
        }
    }

    private long ReadEpoch()
    {
        try
        {
            return File.Exists(EpochPath) && long.TryParse(File.ReadAllText(EpochPath).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var epoch) ? epoch : 0;
        }
        catch (IOException)
        {
            return 0;
        }
    }

    private LeaderRecord? ReadLeader()
    {
        try
        {
            return File.Exists(LeaderPath) ? JsonSerializer.Deserialize<LeaderRecord>(File.ReadAllText(LeaderPath)) : null;
        }
        catch (Exception ex) when (ex is IOException or JsonException)
        {
            return null;
        }
    }

    private static void WriteAtomically(string path, string content)
    {
        var temporary = path + ".tmp-" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "-" + Environment.CurrentManagedThreadId.ToString(CultureInfo.InvariantCulture);
        try
        {
            File.WriteAllText(temporary, content);
            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            File.Delete(temporary);
            throw;
        }
    }

    private void Set(LeadershipState state)
    {
        Volatile.Write(ref _current, state);
        Changed?.Invoke(state);
    }

    private sealed record LeaderRecord(string Id, string Address, long Epoch);

    private static partial class Log
    {
        [LoggerMessage(EventId = 101, EventName = "LeaseAcquired", Level = LogLevel.Information, Message = "Replica {ReplicaId} became leader with epoch {Epoch} (lock on {LeaseFile})")]
        public static partial void Acquired(ILogger logger, string replicaId, long epoch, string leaseFile);

        [LoggerMessage(EventId = 102, EventName = "LeaderObserved", Level = LogLevel.Information, Message = "Leader is {LeaderId} at {LeaderAddress}, epoch {Epoch}")]
        public static partial void Observed(ILogger logger, string leaderId, string leaderAddress, long epoch);

        [LoggerMessage(EventId = 103, EventName = "LeaseReleased", Level = LogLevel.Information, Message = "Replica {ReplicaId} released leadership of epoch {Epoch}")]
        public static partial void Released(ILogger logger, string replicaId, long epoch);

        [LoggerMessage(EventId = 105, EventName = "LeaseEpochRaising", Level = LogLevel.Warning, Message = "Replica {ReplicaId} leads at epoch {Epoch}, but a subscriber holds a generation of a later or equal epoch that this leader did not publish (was the epoch file deleted?): moving to epoch {NewEpoch}")]
        public static partial void Raising(ILogger logger, string replicaId, long epoch, long newEpoch);

        [LoggerMessage(EventId = 106, EventName = "LeaseEpochRaiseRefused", Level = LogLevel.Error, Message = "Replica {ReplicaId} leads at epoch {Epoch} and refuses to move above epoch {Claimed}, which a subscriber claims to hold: more than 2^20 above, or out of range (a forged or corrupt WatchRequest?)")]
        public static partial void RaiseRefused(ILogger logger, string replicaId, long epoch, long claimed);

        [LoggerMessage(EventId = 107, EventName = "LeaseLockLost", Level = LogLevel.Error, Message = "Replica {ReplicaId} stops leading epoch {Epoch}: its locked lease file is no longer {LeaseFile} (now {Locked}); deleted or replaced, so another replica can lock the new one")]
        public static partial void LockLost(ILogger logger, string replicaId, long epoch, string leaseFile, string locked);

        [LoggerMessage(EventId = 104, EventName = "LeaseFileError", Level = LogLevel.Error, Message = "Lease file {Path} cannot be used: {Reason}")]
        public static partial void LeaseFileError(ILogger logger, string path, string reason);
    }
}

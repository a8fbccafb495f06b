namespace Sharding.Mapping;

/// <summary>
/// Holds the current <see cref="ShardMap"/> of one service and swaps it atomically; only a newer generation gets in.
/// </summary>
/// <remarks>
/// Readers call <see cref="Current"/> once per request. Writers (a static file, the control-plane subscription) call
/// <see cref="TryPublish"/>; an older or equal generation is refused, so the holder never goes back. Waiters for a
/// generation (version-skew handling) are released when it, or a newer one, arrives.
/// </remarks>
public sealed class ShardMapStore
{
    private readonly object _gate = new();
    private ShardMap? _current;
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Raised after a newer map is published, with the new and the previous map (null at first).</summary>
    public event Action<ShardMap, ShardMap?>? Changed;

    /// <summary>The current map, or null before the first one arrives.</summary>
    public ShardMap? Current => Volatile.Read(ref _current);

    /// <summary>The current generation, or -1 before the first map.</summary>
    public long Generation => Current?.Generation ?? -1;

    /// <summary>Publishes <paramref name="map"/> if its generation is newer than the current one.</summary>
    /// <param name="map">The candidate map.</param>
    /// <returns>True when it became current.</returns>
    public bool TryPublish(ShardMap map)
    {
        ArgumentNullException.ThrowIfNull(map);
        ShardMap? previous;
        TaskCompletionSource changed;
        lock (_gate)
        {
            previous = _current;
            if (previous is not null && map.Generation <= previous.Generation)
            {
                return false;
            }

            Volatile.Write(ref _current, map);
            changed = _changed;
            _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        changed.TrySetResult();
        Changed?.Invoke(map, previous);
        return true;
    }

    /// <summary>Waits until the generation is at least <paramref name="generation"/>, or the timeout passes.</summary>
    /// <param name="generation">The generation to wait for.</param>
    /// <param name="timeout">How long to wait at most.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>True when the generation arrived in time.</returns>
    public async ValueTask<bool> WaitForGenerationAsync(long generation, TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (Generation >= generation)
        {
            return true;
        }

        using var timeoutSource = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeoutSource.CancelAfter(timeout);
        while (true)
        {
            Task changed;
            lock (_gate)
            {
                if (Generation >= generation)
                {
                    return true;
                }

                changed = _changed.Task;
            }

            try
            {
                await changed.WaitAsync(timeoutSource.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                return Generation >= generation;
            }
        }
    }
}

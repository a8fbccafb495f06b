using System.Collections.Concurrent;

namespace Sharding.SampleApp;

/// <summary>The app's state: one counter per key, and waiters notified when a key's counter changes.</summary>
internal sealed class CounterStore
{
    private readonly ConcurrentDictionary<string, Counter> _counters = new(StringComparer.Ordinal);

    public long Increment(string key)
    {
        var counter = _counters.GetOrAdd(key, static _ => new Counter());
        var value = Interlocked.Increment(ref counter.Value);
        counter.Signal();
        return value;
    }

    public long Get(string key) => _counters.TryGetValue(key, out var counter) ? Interlocked.Read(ref counter.Value) : 0;

    public int KeyCount => _counters.Count;

    /// <summary>Completes when the key's counter next changes.</summary>
    public Task NextChangeAsync(string key) => _counters.GetOrAdd(key, static _ => new Counter()).Changed;

    private sealed class Counter
    {
        public long Value;
        private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task Changed => Volatile.Read(ref _changed).Task;

        public void Signal() => Interlocked.Exchange(ref _changed, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
    }
}

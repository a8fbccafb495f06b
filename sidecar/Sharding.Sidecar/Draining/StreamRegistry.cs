using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Options;
using Sharding.Mapping;
using Sharding.Protocol;
using Sharding.Sidecar.Forwarding;
using Sharding.Sidecar.Hosting;
using Sharding.Sidecar.Routing;

namespace Sharding.Sidecar.Draining;

/// <summary>
/// Tracks long-lived streams and drains those whose key moved: GOAWAY on their connection at once, the stream itself ended
/// after <see cref="SidecarOptions.DrainGrace"/> in the way its protocol understands (see <see cref="StreamEnder"/>).
/// </summary>
/// <remarks>
/// <para>Hot path: every request takes a slot in one of a few striped arrays (<see cref="Begin(ShardRequestContext, HttpContext)"/>/<see cref="End"/>: a short
/// lock, no allocation). Requests of a known streaming kind (gRPC, <c>text/event-stream</c>, WebSocket) are tracked at once;
/// a timer sweeps the slots every half threshold and tracks requests open longer than <see cref="SidecarOptions.StreamThreshold"/>.</para>
/// <para>Tracking and drain decisions run under one lock: a stream tracked while a new map is published is checked against
/// that map either by the <see cref="ShardMapStore.Changed"/> handler or by the tracking itself, never by neither.</para>
/// <para>Moved: a locally served stream whose key this pod no longer owns, or a forwarded stream whose owner changed. When the
/// grace ends the stream is checked against the current map again; a key that came back stays open.</para>
/// </remarks>
internal sealed partial class StreamRegistry : IHostedLifecycleService, IDisposable
{
    private const int BucketCount = 16;
    private static readonly TimeSpan CloseWait = TimeSpan.FromSeconds(1);

    private readonly Bucket[] _buckets = new Bucket[BucketCount];
    private readonly object _gate = new();
    private readonly ShardMapStore _store;
    private readonly SidecarMetrics _metrics;
    private readonly SidecarOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger<StreamRegistry> _logger;
    private readonly CancellationTokenSource _stopping = new();
    private ITimer? _sweep;
    private volatile bool _shuttingDown;

    public StreamRegistry(ShardMapStore store, SidecarMetrics metrics, IOptions<SidecarOptions> options, TimeProvider time, ILogger<StreamRegistry> logger)
    {
        _store = store;
        _metrics = metrics;
        _options = options.Value;
        _time = time;
        _logger = logger;
        for (var i = 0; i < BucketCount; i++)
        {
            _buckets[i] = new Bucket();
        }

        store.Changed += OnMapChanged;
    }

    /// <summary>How many streams are tracked now (tests).</summary>
    public int TrackedCount
    {
        get
        {
            var count = 0;
            foreach (var bucket in _buckets)
            {
                count += bucket.Count(static s => Volatile.Read(ref s.TrackingState) == 1);
            }

            return count;
        }
    }

    /// <summary>A request starts (after routing, before forwarding).</summary>
    public void Begin(ShardRequestContext stream, HttpContext context)
    {
        stream.Http = context;
        Begin(stream, context.Features.Get<ConnectionState>(), KindOfRequest(context));
    }

    /// <summary>A request starts on a path without an <c>HttpContext</c> (the HTTP/1.1 fast path).</summary>
    public void Begin(ShardRequestContext stream, ConnectionState? connection, StreamKind kind)
    {
        stream.StartTimestamp = _time.GetTimestamp();
        stream.ConnectionState = connection;
        var bucketIndex = (int)((uint)Environment.CurrentManagedThreadId % BucketCount);
        stream.Bucket = bucketIndex;
        stream.Slot = _buckets[bucketIndex].Add(stream);
        if (kind != StreamKind.None)
        {
            Track(stream, kind);
        }
    }

    /// <summary>The response turned out to be a stream (its headers said event-stream or gRPC).</summary>
    public void MarkStreaming(ShardRequestContext stream, StreamKind kind)
    {
        if (stream.StreamKind == kind)
        {
            return;
        }

        if (Volatile.Read(ref stream.TrackingState) == 1)
        {
            lock (_gate)
            {
                if (stream.TrackingState == 1)
                {
                    _metrics.StreamTracked(stream.StreamKind.ToTag(), -1);
                    stream.StreamKind = kind;
                    _metrics.StreamTracked(kind.ToTag(), 1);
                }
            }

            return;
        }

        Track(stream, kind);
    }

    /// <summary>The request ended.</summary>
    public void End(ShardRequestContext stream)
    {
        if (stream.Slot >= 0)
        {
            _buckets[stream.Bucket].Remove(stream.Slot);
        }

        if (Interlocked.Exchange(ref stream.TrackingState, 2) != 1)
        {
            return;
        }

        DrainBatch? batch;
        lock (_gate)
        {
            _metrics.StreamTracked(stream.StreamKind.ToTag(), -1);
            batch = stream.Batch;
            stream.Batch = null;
        }

        if (batch is not null && batch.Closed())
        {
            var elapsed = _time.GetElapsedTime(batch.StartTimestamp);
            _metrics.DrainCompleted(elapsed);
            Log.DrainCompleted(_logger, batch.Streams.Count, elapsed.TotalMilliseconds);
        }
    }

    private static StreamKind KindOfRequest(HttpContext context)
    {
        var request = context.Request;
        if (GrpcProtocol.IsGrpc(request.ContentType))
        {
            return StreamKind.Grpc;
        }

        if (context.Features.Get<IHttpUpgradeFeature>()?.IsUpgradableRequest == true
            && request.Headers.Upgrade.ToString().Contains("websocket", StringComparison.OrdinalIgnoreCase))
        {
            return StreamKind.WebSocket;
        }

        if (Http2WebSocket.Of(context) is { } connect && Http2WebSocket.IsWebSocket(connect))
        {
            return StreamKind.WebSocket;
        }

        foreach (var accept in request.Headers.Accept)
        {
            if (accept is not null && accept.Contains("text/event-stream", StringComparison.OrdinalIgnoreCase))
            {
                return StreamKind.Sse;
            }
        }

        return StreamKind.None;
    }

    private void Track(ShardRequestContext stream, StreamKind kind)
    {
        DrainOrder? order = null;
        lock (_gate)
        {
            if (Interlocked.CompareExchange(ref stream.TrackingState, 1, 0) != 0)
            {
                return;
            }

            stream.StreamKind = kind;
            _metrics.StreamTracked(kind.ToTag(), 1);
            if (_shuttingDown)
            {
                order = new DrainOrder(DrainReason.Shutdown, _store.Generation, null);
            }
            else if (_store.Current is { } map && map.Generation > stream.Map.Generation)
            {
                order = MovedOrder(stream, map);
            }
        }

        if (order is not null)
        {
            // It moved (or the sidecar stopped) between routing and tracking: drain it on its own.
            var batch = new DrainBatch(_time.GetTimestamp());
            StartDrain(batch, stream, order);
            _ = EndAfterGraceAsync(batch);
        }
    }

    private DrainOrder? MovedOrder(ShardRequestContext stream, ShardMap map)
    {
        if (!stream.HasKey || stream.Drain is not null)
        {
            return null;
        }

        var owner = map.OwnerOf(stream.KeyHash);
        if (owner is null)
        {
            return null;
        }

        var moved = stream.Kind == RouteKind.Local
            ? !string.Equals(owner.Name, _options.PodName, StringComparison.Ordinal)
            : !string.Equals(owner.Name, stream.Owner.Name, StringComparison.Ordinal);
        return moved ? new DrainOrder(DrainReason.Moved, map.Generation, owner.Name) : null;
    }

    private void OnMapChanged(ShardMap map, ShardMap? previous)
    {
        if (previous is null)
        {
            return;
        }

        var batch = new DrainBatch(_time.GetTimestamp());
        var streams = new List<ShardRequestContext>();
        lock (_gate)
        {
            Collect(streams, trackedOnly: true);
            foreach (var stream in streams)
            {
                if (MovedOrder(stream, map) is { } order)
                {
                    StartDrain(batch, stream, order);
                }
            }
        }

        Log.MapChanged(_logger, map.Generation, streams.Count, batch.Streams.Count);
        if (batch.Streams.Count > 0)
        {
            _ = EndAfterGraceAsync(batch);
        }
    }

    /// <summary>Step 1 of a drain: remember why, and close the client connection gracefully (GOAWAY) so new streams go elsewhere.</summary>
    private void StartDrain(DrainBatch batch, ShardRequestContext stream, DrainOrder order)
    {
        lock (_gate)
        {
            stream.Drain = order;
            stream.Batch = batch;
            batch.Add(stream);
        }

        var connection = stream.ConnectionState;
        if (connection is not null && connection.RequestClose() && HttpProtocol.IsHttp2(stream.Protocol))
        {
            _metrics.GoAwaySent();
            if (_logger.IsEnabled(LogLevel.Debug))
            {
                Log.GoAway(_logger, stream.ConnectionId, order.Reason, order.Generation);
            }
        }
    }

    /// <summary>Step 2: after the grace, end the streams still open (and still moved).</summary>
    private async Task EndAfterGraceAsync(DrainBatch batch)
    {
        try
        {
            await Task.Delay(_options.DrainGrace, _time, _stopping.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Shutdown ends everything itself.
            return;
        }

        EndStreams(batch.Streams);
    }

    private void EndStreams(List<ShardRequestContext> streams)
    {
        var toEnd = new List<ShardRequestContext>(streams.Count);
        var released = new List<DrainBatch>();
        lock (_gate)
        {
            var current = _store.Current;
            foreach (var stream in streams)
            {
                if (stream.TrackingState != 1 || stream.Drain is not { } order)
                {
                    continue;
                }

                if (order.Reason == DrainReason.Moved && current is not null)
                {
                    stream.Drain = null;
                    if (MovedOrder(stream, current) is not { } now)
                    {
                        // The key came back (or its owner did): keep the stream.
                        if (stream.Batch is { } batch)
                        {
                            stream.Batch = null;
                            released.Add(batch);
                        }

                        continue;
                    }

                    // Still moved, maybe on to another owner since the drain began: the client is told where the key is now.
                    stream.Drain = now;
                }

                toEnd.Add(stream);
            }
        }

        foreach (var batch in released)
        {
            if (batch.Closed())
            {
                _metrics.DrainCompleted(_time.GetElapsedTime(batch.StartTimestamp));
            }
        }

        foreach (var stream in toEnd)
        {
            _metrics.StreamDrained(stream.Drain!.Reason.ToTag(), stream.StreamKind.ToTag());
            stream.RequestEnd();
        }

        if (toEnd.Count > 0 && _logger.IsEnabled(LogLevel.Information))
        {
            Log.StreamsEnded(_logger, toEnd.Count, toEnd[0].Drain!.Reason);
        }
    }

    private void Collect(List<ShardRequestContext> into, bool trackedOnly)
    {
        foreach (var bucket in _buckets)
        {
            bucket.CopyTo(into, trackedOnly);
        }
    }

    /// <summary>The sweep: tracks requests open past the threshold, drains connections past their max age.</summary>
    private void Sweep()
    {
        var streams = new List<ShardRequestContext>();
        Collect(streams, trackedOnly: false);
        var threshold = _options.StreamThreshold;
        var maxAge = _options.MaxConnectionAge;
        List<ShardRequestContext>? aged = null;
        foreach (var stream in streams)
        {
            if (Volatile.Read(ref stream.TrackingState) == 0 && _time.GetElapsedTime(stream.StartTimestamp) >= threshold)
            {
                var http = stream.Http;
                var started = Volatile.Read(ref stream.TrackingState) == 0 && (http is null ? stream.ResponseStarted : http.Response.HasStarted);
                Track(stream, started ? StreamKind.Http : StreamKind.LongPoll);
            }

            if (maxAge > TimeSpan.Zero && stream.ConnectionState is { MaxAgeReached: true } && stream.TrackingState == 1 && stream.Drain is null)
            {
                (aged ??= []).Add(stream);
            }
        }

        if (aged is not null)
        {
            var batch = new DrainBatch(_time.GetTimestamp());
            var order = new DrainOrder(DrainReason.MaxAge, _store.Generation, null);
            foreach (var stream in aged)
            {
                StartDrain(batch, stream, order);
            }

            _ = EndAfterGraceAsync(batch);
        }
    }

    /// <summary>Connection middleware for the data port: a <see cref="ConnectionState"/> per connection, and its max age.</summary>
    public ConnectionDelegate ConnectionMiddleware(ConnectionDelegate next) => connection =>
    {
        var lifetime = connection.Features.Get<Microsoft.AspNetCore.Connections.Features.IConnectionLifetimeNotificationFeature>();
        var state = new ConnectionState(lifetime, _time.GetTimestamp());
        connection.Features.Set(state);
        if (_options.MaxConnectionAge > TimeSpan.Zero)
        {
            var jitter = _options.MaxConnectionAge * (Random.Shared.NextDouble() * _options.MaxConnectionAgeJitter);
            _ = CloseWhenOldAsync(state, _options.MaxConnectionAge + jitter, connection.ConnectionClosed);
        }

        return next(connection);
    };

    private async Task CloseWhenOldAsync(ConnectionState state, TimeSpan age, CancellationToken closed)
    {
        try
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(closed, _stopping.Token);
            await Task.Delay(age, _time, linked.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return;
        }

        // GOAWAY now; its streams are ended after the grace by the next sweep's max-age drain.
        state.MaxAgeReached = true;
        state.RequestClose();
    }

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var period = TimeSpan.FromTicks(Math.Max(TimeSpan.FromMilliseconds(50).Ticks, _options.StreamThreshold.Ticks / 2));
        _sweep = _time.CreateTimer(static state => ((StreamRegistry)state!).SafeSweep(), this, period, period);
        return Task.CompletedTask;
    }

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Shutdown, before Kestrel stops: GOAWAY everywhere, let streams finish within the grace, then end the rest.</summary>
    public async Task StoppingAsync(CancellationToken cancellationToken)
    {
        _shuttingDown = true;
        var streams = new List<ShardRequestContext>();
        var batch = new DrainBatch(_time.GetTimestamp());
        var order = new DrainOrder(DrainReason.Shutdown, _store.Generation, null);
        lock (_gate)
        {
            Collect(streams, trackedOnly: true);
        }

        foreach (var stream in streams)
        {
            StartDrain(batch, stream, order);
        }

        if (streams.Count == 0)
        {
            return;
        }

        if (_logger.IsEnabled(LogLevel.Information))
        {
            Log.ShutdownDrain(_logger, streams.Count, _options.DrainGrace.TotalMilliseconds);
        }

        await WaitClosedAsync(streams, _options.DrainGrace, cancellationToken).ConfigureAwait(false);
        await _stopping.CancelAsync().ConfigureAwait(false);
        lock (_gate)
        {
            // Streams that arrived since were tracked with reason shutdown; end them too.
            streams.Clear();
            Collect(streams, trackedOnly: true);
            foreach (var stream in streams)
            {
                stream.Drain = order;
            }
        }

        EndStreams(streams);
        await WaitClosedAsync(streams, CloseWait, cancellationToken).ConfigureAwait(false);
    }

    private async Task WaitClosedAsync(List<ShardRequestContext> streams, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var start = _time.GetTimestamp();
        var step = TimeSpan.FromMilliseconds(20);

        // Bounded by the timeout.
        while (_time.GetElapsedTime(start) < timeout && !cancellationToken.IsCancellationRequested)
        {
            if (streams.TrueForAll(static s => Volatile.Read(ref s.TrackingState) != 1))
            {
                return;
            }

            try
            {
                await Task.Delay(step, _time, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    private void SafeSweep()
    {
        try
        {
            Sweep();
        }
        catch (Exception ex) when (ex is InvalidOperationException or ObjectDisposedException or NullReferenceException)
        {
            Log.SweepFailed(_logger, ex);
        }
    }

    public void Dispose()
    {
        _store.Changed -= OnMapChanged;
        _sweep?.Dispose();
        _stopping.Dispose();
    }

    /// <summary>One stripe of in-flight requests: a slot array with a free-slot hint, guarded by its own lock.</summary>
    private sealed class Bucket
    {
        private readonly object _lock = new();
        private ShardRequestContext?[] _items = new ShardRequestContext?[64];
        private int _hint;
        private int _highWater;

        public int Add(ShardRequestContext stream)
        {
            lock (_lock)
            {
                for (var i = _hint; i < _items.Length; i++)
                {
                    if (_items[i] is null)
                    {
                        return Place(i, stream);
                    }
                }

                var old = _items.Length;
                Array.Resize(ref _items, old * 2);
                return Place(old, stream);
            }
        }

        private int Place(int index, ShardRequestContext stream)
        {
            _items[index] = stream;
            _hint = index + 1;
            _highWater = Math.Max(_highWater, index + 1);
            return index;
        }

        public void Remove(int slot)
        {
            lock (_lock)
            {
                _items[slot] = null;
                if (slot < _hint)
                {
                    _hint = slot;
                }

                if (slot == _highWater - 1)
                {
                    // Bounded by the array: shrink the scanned range past trailing empty slots.
                    while (_highWater > 0 && _items[_highWater - 1] is null)
                    {
                        _highWater--;
                    }
                }
            }
        }

        public void CopyTo(List<ShardRequestContext> into, bool trackedOnly)
        {
            lock (_lock)
            {
                for (var i = 0; i < _highWater; i++)
                {
                    if (_items[i] is { } stream && (!trackedOnly || Volatile.Read(ref stream.TrackingState) == 1))
                    {
                        into.Add(stream);
                    }
                }
            }
        }

        public int Count(Func<ShardRequestContext, bool> predicate)
        {
            lock (_lock)
            {
                var count = 0;
                for (var i = 0; i < _highWater; i++)
                {
                    if (_items[i] is { } stream && predicate(stream))
                    {
                        count++;
                    }
                }

                return count;
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 800, EventName = "MapChangedDrain", Level = LogLevel.Information,
            Message = "Generation {Generation}: {Tracked} tracked streams, {Moved} moved; GOAWAY sent, ending them after the grace")]
        public static partial void MapChanged(ILogger logger, long generation, int tracked, int moved);

        [LoggerMessage(EventId = 801, EventName = "GoAway", Level = LogLevel.Debug,
            Message = "Closing connection {ConnectionId} gracefully ({Reason}, generation {Generation})")]
        public static partial void GoAway(ILogger logger, string connectionId, DrainReason reason, long generation);

        [LoggerMessage(EventId = 802, EventName = "StreamsEnded", Level = LogLevel.Information, Message = "Ended {Count} streams ({Reason})")]
        public static partial void StreamsEnded(ILogger logger, int count, DrainReason reason);

        [LoggerMessage(EventId = 803, EventName = "DrainCompleted", Level = LogLevel.Information,
            Message = "The last of {Count} drained streams closed {ElapsedMs} ms after the new generation")]
        public static partial void DrainCompleted(ILogger logger, int count, double elapsedMs);

        [LoggerMessage(EventId = 804, EventName = "ShutdownDrain", Level = LogLevel.Information,
            Message = "Shutting down: draining {Count} streams within {GraceMs} ms")]
        public static partial void ShutdownDrain(ILogger logger, int count, double graceMs);

        [LoggerMessage(EventId = 805, EventName = "SweepFailed", Level = LogLevel.Error, Message = "The stream sweep failed")]
        public static partial void SweepFailed(ILogger logger, Exception exception);
    }
}

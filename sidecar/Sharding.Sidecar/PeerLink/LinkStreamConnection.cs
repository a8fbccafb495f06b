using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;
using Sharding.Sidecar.Draining;
using Sharding.Sidecar.Transport;

namespace Sharding.Sidecar.PeerLink;

/// <summary>
/// On the owner's side, one link stream seen as a client connection: the fast path's session reads requests from it and
/// writes responses to it as on any connection, and Kestrel serves it the same way when the session hands it over.
/// </summary>
/// <remarks>
/// Its features fall back to the link's (its lifetime notification: shutdown and max age close the streams with the link),
/// except its own <see cref="ConnectionState"/> (a drain of one stream's key must not close the whole link) and its own
/// heartbeat: Kestrel's timeouts (keep-alive, request headers, body data rates) run on a once-a-second heartbeat callback
/// it registers per connection and never removes, so a handed-over stream gets a heartbeat that ends with the stream, not
/// the link's, which lives for hours.
/// </remarks>
internal sealed class LinkStreamConnection : ConnectionContext, IDuplexPipe
{
    private readonly StreamInput _input;
    private readonly StreamOutput _output;
    private readonly StreamLifetime _lifetime;
    private readonly StreamHeartbeat _heartbeat = new();

    public LinkStreamConnection(LinkStream stream, ConnectionContext link)
    {
        Stream = stream;
        ConnectionId = string.Concat(link.ConnectionId, ":", stream.Id.ToString(System.Globalization.CultureInfo.InvariantCulture));
        RemoteEndPoint = link.RemoteEndPoint;
        LocalEndPoint = link.LocalEndPoint;
        Features = new FeatureCollection(link.Features);
        _lifetime = new StreamLifetime(link.Features.Get<IConnectionLifetimeNotificationFeature>());
        Features.Set<IConnectionLifetimeNotificationFeature>(_lifetime);
        Features.Set(new ConnectionState(_lifetime, System.Diagnostics.Stopwatch.GetTimestamp()));
        Features.Set<IConnectionHeartbeatFeature>(_heartbeat);
        _input = new StreamInput(stream);
        _output = new StreamOutput(stream);
    }

    public LinkStream Stream { get; }

    public override string ConnectionId { get; set; }

    public override IFeatureCollection Features { get; }

    public override IDictionary<object, object?> Items { get; set; } = new Dictionary<object, object?>();

    public override IDuplexPipe Transport
    {
        get => this;
        set => throw new NotSupportedException("a link stream's transport is the stream");
    }

    public override CancellationToken ConnectionClosed
    {
        get => Stream.Aborted;
        set => throw new NotSupportedException();
    }

    public PipeReader Input => _input;

    public PipeWriter Output => _output;

    public override void Abort(ConnectionAbortedException abortReason) => Stream.Release();

    /// <summary>
    /// After the session (or Kestrel): a clean end sends what is left, then REFUSED_STREAM (<see cref="LinkStream.Refuse"/>):
    /// a request the forwarding side sent on this kept-alive tunnel as it closed goes again on a new one. Anything else resets.
    /// </summary>
    public override async ValueTask DisposeAsync()
    {
        await _output.CompleteAsync().ConfigureAwait(false);
        await _input.CompleteAsync().ConfigureAwait(false);
        Stream.Release();
        _heartbeat.Stop();
        _lifetime.Dispose();
        await base.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>A graceful close of this stream alone (a drain of its key), or of all of them with the link (shutdown, max age).</summary>
    private sealed class StreamLifetime : IConnectionLifetimeNotificationFeature, IDisposable
    {
        private readonly CancellationTokenSource _requested = new();
        private readonly CancellationTokenRegistration _link;

        public StreamLifetime(IConnectionLifetimeNotificationFeature? link)
        {
            ConnectionClosedRequested = _requested.Token;
            if (link is not null)
            {
                _link = link.ConnectionClosedRequested.UnsafeRegister(static state => ((StreamLifetime)state!).RequestClose(), this);
            }
        }

        public CancellationToken ConnectionClosedRequested { get; set; }

        public void RequestClose()
        {
            try
            {
                _requested.Cancel();
            }
            catch (ObjectDisposedException)
            {
                // The stream is over.
            }
        }

        public void Dispose()
        {
            _link.Dispose();
            _requested.Dispose();
        }
    }

    /// <summary>
    /// Kestrel's heartbeat for one stream: the callbacks Kestrel registers (its HTTP connection's timeout checks) run once a
    /// second, as on Kestrel's own connections, until the stream is over.
    /// </summary>
    internal sealed class StreamHeartbeat : IConnectionHeartbeatFeature
    {
        /// <summary>Kestrel's heartbeat interval.</summary>
        private static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);

        // One timer for every beating stream of the process: a few handed-over streams at a time, each tick quick.
        private static readonly System.Collections.Concurrent.ConcurrentDictionary<StreamHeartbeat, byte> s_beating = new();
        private static readonly Timer s_timer = new(static _ => BeatAll(), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        private static int s_started;

        private readonly Lock _gate = new();
        private List<(Action<object> Action, object State)>? _callbacks;
        private bool _stopped;

        public void OnHeartbeat(Action<object> action, object state)
        {
            lock (_gate)
            {
                if (_stopped)
                {
                    return;
                }

                (_callbacks ??= []).Add((action, state));
            }

            s_beating.TryAdd(this, 0);
            if (Interlocked.Exchange(ref s_started, 1) == 0)
            {
                s_timer.Change(Interval, Interval);
            }
        }

        /// <summary>No more beats: the stream is over (Kestrel never unregisters its callback).</summary>
        public void Stop()
        {
            lock (_gate)
            {
                _stopped = true;
                _callbacks = null;
            }

            s_beating.TryRemove(this, out _);
        }

        private static void BeatAll()
        {
            foreach (var heartbeat in s_beating.Keys)
            {
                heartbeat.Beat();
            }
        }

        private void Beat()
        {
            (Action<object> Action, object State)[] callbacks;
            lock (_gate)
            {
                if (_callbacks is null)
                {
                    return;
                }

                callbacks = [.. _callbacks];
            }

            foreach (var (action, state) in callbacks)
            {
                try
                {
                    action(state);
                }
                catch (Exception ex)
                {
                    // As Kestrel's heartbeat: one connection's failing tick must not stop the others'.
                    System.Diagnostics.Trace.TraceError($"A link stream's heartbeat callback failed: {ex}");
                }
            }
        }
    }

    /// <summary>The stream's input, crediting the other side's window with what the reader consumes.</summary>
    private sealed class StreamInput(LinkStream stream) : PipeReader
    {
        private readonly PipeReader _inner = stream.Input;
        private ReadOnlySequence<byte> _last;

        public override bool TryRead(out ReadResult result)
        {
            if (_inner.TryRead(out result))
            {
                _last = result.Buffer;
                return true;
            }

            return false;
        }

        public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
        {
            var read = _inner.ReadAsync(cancellationToken);
            if (read.IsCompletedSuccessfully)
            {
                var result = read.Result;
                _last = result.Buffer;
                return new ValueTask<ReadResult>(result);
            }

            return AwaitAsync(read);
        }

        private async ValueTask<ReadResult> AwaitAsync(ValueTask<ReadResult> read)
        {
            var result = await read.ConfigureAwait(false);
            _last = result.Buffer;
            return result;
        }

        public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

        public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
        {
            var bytes = _last.Slice(_last.Start, consumed).Length;
            _last = default;
            _inner.AdvanceTo(consumed, examined);
            stream.Consumed((int)bytes);
        }

        public override void CancelPendingRead() => _inner.CancelPendingRead();

        public override void Complete(Exception? exception = null) => _inner.Complete(exception);
    }

    /// <summary>The response as the session or Kestrel writes it: buffered until a flush, which sends it as DATA.</summary>
    private sealed class StreamOutput(LinkStream stream) : BufferedPipeWriter(8192)
    {
        private bool _completed;

        public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
        {
            if (UnflushedBytes == 0 || _completed)
            {
                return ValueTask.FromResult(new FlushResult(isCanceled: false, isCompleted: stream.IsReset));
            }

            ValueTask send;
            try
            {
                send = stream.SendAsync(Written, cancellationToken);
            }
            catch (SocketException)
            {
                ClearWritten();
                return ValueTask.FromResult(new FlushResult(isCanceled: false, isCompleted: true)); // the forwarding side is gone
            }

            if (send.IsCompletedSuccessfully)
            {
                ClearWritten();
                return ValueTask.FromResult(new FlushResult(isCanceled: false, isCompleted: false));
            }

            return AwaitAsync(send);
        }

        private async ValueTask<FlushResult> AwaitAsync(ValueTask send)
        {
            try
            {
                await send.ConfigureAwait(false);
                return new FlushResult(isCanceled: false, isCompleted: false);
            }
            catch (SocketException)
            {
                return new FlushResult(isCanceled: false, isCompleted: true);
            }
            finally
            {
                ClearWritten();
            }
        }

        public override void CancelPendingFlush()
        {
        }

        public override void Complete(Exception? exception = null)
        {
            // Never blocks: on the loop thread, a send waiting for window would wait for a WINDOW_UPDATE only this thread reads.
            var completing = CompleteAsync(exception);
            if (!completing.IsCompleted)
            {
                _ = completing.AsTask();
            }
        }

        public override async ValueTask CompleteAsync(Exception? exception = null)
        {
            if (_completed)
            {
                return;
            }

            try
            {
                if (exception is null && !stream.IsReset)
                {
                    await FlushAsync().ConfigureAwait(false);
                    _completed = true;
                    stream.Refuse();
                }
                else
                {
                    _completed = true;
                    stream.Release();
                }
            }
            catch (Exception ex) when (ex is SocketException or OperationCanceledException)
            {
                stream.Release();
            }
            finally
            {
                _completed = true;
                ReleaseBuffer();
            }
        }
    }
}

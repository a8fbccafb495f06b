using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace Sharding.Sidecar.Transport;

/// <summary>
/// A Kestrel connection over an <see cref="EpollSocket"/>: a receive loop fills the input pipe and a send loop drains the
/// output pipe, with the close semantics of Kestrel's socket transport (a graceful shutdown on abort, the input completed
/// with the reason, <see cref="ConnectionClosed"/> fired once the receive side ends).
/// </summary>
internal sealed partial class EpollConnection : ConnectionContext, IConnectionIdFeature, IConnectionTransportFeature, IConnectionItemsFeature,
    IMemoryPoolFeature, IConnectionLifetimeFeature, IConnectionEndPointFeature
{
    /// <summary>Kestrel's: half its 4 KiB block, so a receive never gets a sliver.</summary>
    private const int MinReceiveBuffer = 2048;

    private static long s_lastId;

    private readonly EpollSocket _socket;
    private readonly Pipe _input;
    private readonly Pipe _output;
    private readonly CancellationTokenSource _closed = new();
    private readonly Lock _shutdownLock = new();
    private readonly ILogger _logger;
    private Exception? _shutdownReason;
    private bool _shutdown;
    private Task _processing = Task.CompletedTask;

    // True while the send loop waits for output with everything before sent (see TrySendDirect).
    private volatile bool _sendIdle;
    private IDictionary<object, object?>? _items;
    private string? _id;

    public EpollConnection(EpollSocket socket, MemoryPool<byte> pool, long maxReadBufferSize, long maxWriteBufferSize, ILogger logger)
    {
        _socket = socket;
        _logger = logger;
        MemoryPool = pool;
        LocalEndPoint = socket.Socket.LocalEndPoint;
        RemoteEndPoint = socket.Socket.RemoteEndPoint;
        ConnectionClosed = _closed.Token;

        // With inline completions the reader of the input (Kestrel or the fast path) runs on the loop thread, as the
        // runtime's sockets do with UnsafePreferInlineScheduling; the send loop always runs on the flushing thread.
        var application = socket.Inline ? PipeScheduler.Inline : PipeScheduler.ThreadPool;
        _input = new Pipe(new PipeOptions(pool, application, PipeScheduler.Inline, maxReadBufferSize, maxReadBufferSize / 2, useSynchronizationContext: false));
        _output = new Pipe(new PipeOptions(pool, PipeScheduler.Inline, application, maxWriteBufferSize, maxWriteBufferSize / 2, useSynchronizationContext: false));
        Transport = new DuplexPipe(_input.Reader, _output.Writer);

        Features.Set<IConnectionIdFeature>(this);
        Features.Set<IConnectionTransportFeature>(this);
        Features.Set<IConnectionItemsFeature>(this);
        Features.Set<IMemoryPoolFeature>(this);
        Features.Set<IConnectionLifetimeFeature>(this);
        Features.Set<IConnectionEndPointFeature>(this);
        Features.Set(socket.Loop); // upstream connections for this client go on its loop (Http1FastPath, HttpForwarder)
    }

    public override string ConnectionId
    {
        get => _id ??= "E" + Interlocked.Increment(ref s_lastId).ToString("X8", System.Globalization.CultureInfo.InvariantCulture);
        set => _id = value;
    }

    public override IFeatureCollection Features { get; } = new FeatureCollection();

    public override IDictionary<object, object?> Items
    {
        get => _items ??= new Dictionary<object, object?>();
        set => _items = value;
    }

    public override IDuplexPipe Transport { get; set; }

    public MemoryPool<byte> MemoryPool { get; }

    public override CancellationToken ConnectionClosed { get; set; }

    public override EndPoint? LocalEndPoint { get; set; }

    public override EndPoint? RemoteEndPoint { get; set; }

    /// <summary>The loop that serves the connection.</summary>
    public EpollLoop Loop => _socket.Loop;

    /// <summary>
    /// Sends what the socket takes now straight from <paramref name="data"/>, past the output pipe and its send loop, when
    /// that keeps the order: the pipe's writer is still the connection's own (no TLS in between), and the send loop waits
    /// with all it was given sent. With inline completions a flush runs the send loop up to its next wait at once, so it
    /// cannot hold bytes it has not seen. The caller sends the rest, if any, through <see cref="Transport"/>'s output.
    /// </summary>
    /// <returns>False when the bytes must go through the pipe (<paramref name="sent"/> is 0).</returns>
    public bool TrySendDirect(PipeWriter writer, ReadOnlySpan<byte> data, out int sent)
    {
        sent = 0;
        if (!_sendIdle || !_socket.Inline || !ReferenceEquals(writer, _output.Writer) || _output.Writer.UnflushedBytes > 0)
        {
            return false;
        }

        sent = _socket.TrySendNow(data);
        return true;
    }

    public void Start() => _processing = RunAsync();

    public override void Abort(ConnectionAbortedException abortReason)
    {
        Shutdown(abortReason);
        _output.Reader.CancelPendingRead();
    }

    public override async ValueTask DisposeAsync()
    {
        Transport.Input.Complete();
        Transport.Output.Complete();
        await _processing.ConfigureAwait(false);
        _closed.Dispose();
        await base.DisposeAsync().ConfigureAwait(false);
    }

    private async Task RunAsync()
    {
        try
        {
            var receiving = ReceiveAsync();
            await SendAsync().ConfigureAwait(false);
            await receiving.ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            LogUnexpected(_logger, ex, ConnectionId);
        }
        finally
        {
            _socket.Dispose();
        }
    }

    private async Task ReceiveAsync()
    {
        Exception? error = null;
        var input = _input.Writer;
        try
        {
            // Bounded by the peer: ends at its FIN, an error, or when the reader completes.
            while (true)
            {
                // No buffer is held by an idle connection.
                await _socket.WaitReadableAsync().ConfigureAwait(false);
                var received = await _socket.ReceiveAsync(input.GetMemory(MinReceiveBuffer)).ConfigureAwait(false);
                if (received == 0)
                {
                    break;
                }

                input.Advance(received);
                var result = await input.FlushAsync().ConfigureAwait(false);
                if (result.IsCompleted || result.IsCanceled)
                {
                    break;
                }
            }
        }
        catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionReset or SocketError.Shutdown)
        {
            error = new ConnectionResetException(ex.Message, ex);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            error = ex;
        }
        finally
        {
            // After a shutdown, that is why the receive ended.
            await input.CompleteAsync(Volatile.Read(ref _shutdownReason) ?? error).ConfigureAwait(false);
            // ConnectionClosed fires off this thread (its callbacks may be slow), and before the connection can be disposed.
            var fired = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            ThreadPool.UnsafeQueueUserWorkItem(
                static state =>
                {
                    state.Closed.Cancel();
                    state.Fired.SetResult();
                },
                (Closed: _closed, Fired: fired),
                preferLocal: false);
            await fired.Task.ConfigureAwait(false);
        }
    }

    private async Task SendAsync()
    {
        Exception? reason = null;
        Exception? unexpected = null;
        var output = _output.Reader;
        try
        {
            // Bounded by the writer: ends when it completes or the connection is aborted.
            while (true)
            {
                _sendIdle = true;
                var result = await output.ReadAsync().ConfigureAwait(false);
                _sendIdle = false;
                if (result.IsCanceled)
                {
                    break;
                }

                var buffer = result.Buffer;
                if (!buffer.IsEmpty)
                {
                    await _socket.SendAsync(buffer).ConfigureAwait(false);
                }

                output.AdvanceTo(buffer.End);
                if (result.IsCompleted)
                {
                    break;
                }
            }
        }
        catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionReset or SocketError.Shutdown)
        {
            reason = new ConnectionResetException(ex.Message, ex);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            reason = ex;
        }
        catch (Exception ex)
        {
            reason = unexpected = ex;
            LogUnexpected(_logger, ex, ConnectionId);
        }
        finally
        {
            _sendIdle = false;
            Shutdown(reason);
            await output.CompleteAsync(unexpected).ConfigureAwait(false);
            _input.Writer.CancelPendingFlush(); // a receive paused by a full input must see the end
        }
    }

    /// <summary>Shuts both directions down once (the peer sees a FIN after what was sent, the receive loop its end).</summary>
    private void Shutdown(Exception? reason)
    {
        lock (_shutdownLock)
        {
            if (_shutdown)
            {
                return;
            }

            _shutdown = true;
            Volatile.Write(ref _shutdownReason, reason ?? new ConnectionAbortedException("The epoll transport's send loop completed gracefully."));
            try
            {
                _socket.Socket.Shutdown(SocketShutdown.Both);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                // Already gone: the receive loop ends with its own error.
            }
        }
    }

    [LoggerMessage(1, LogLevel.Error, "Unexpected error on the epoll transport's connection {ConnectionId}")]
    private static partial void LogUnexpected(ILogger logger, Exception exception, string connectionId);

    [LoggerMessage(2, LogLevel.Warning, "A connection was closed at accept: the epoll transport could not watch it")]
    internal static partial void LogRefused(ILogger logger, Exception exception);

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }
}

using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Connections;

namespace Sharding.Sidecar.PeerLink;

/// <summary>
/// One tunnel of a <see cref="LinkConnection"/>: the bytes of one kept-alive HTTP/1.1 connection in each direction. What
/// arrives waits in <see cref="Input"/> (at most <see cref="LinkConnection.StreamWindow"/> bytes, the other side's send
/// window) and is credited back as it is consumed; what is sent waits for this side's send window.
/// </summary>
internal sealed class LinkStream
{
    private readonly LinkConnection _link;
    private readonly Pipe _input;
    private readonly Lock _lock = new();
    private TaskCompletionSource? _windowOpened;
    private CancellationTokenSource? _aborted;
    private int _receiveWindow = LinkConnection.StreamWindow;
    private int _uncredited;
    private int _reset;

    public LinkStream(LinkConnection link, int id, int sendWindow, bool inline)
    {
        _link = link;
        Id = id;
        SendWindow = sendWindow;

        // Unpaused: the other side's send window bounds what waits here. The reader (a session) runs where the data arrived
        // when the loop runs continuations inline, as it does for a socket.
        _input = new Pipe(new PipeOptions(
            MemoryPool<byte>.Shared,
            readerScheduler: inline ? PipeScheduler.Inline : PipeScheduler.ThreadPool,
            writerScheduler: PipeScheduler.Inline,
            pauseWriterThreshold: 0,
            resumeWriterThreshold: 0,
            minimumSegmentSize: 4096,
            useSynchronizationContext: false));
    }

    public int Id { get; }

    /// <summary>What the other side sent, in order; completed at its END_STREAM, failed at a reset.</summary>
    public PipeReader Input => _input.Reader;

    /// <summary>This side's send window (the link's lock held): spent by DATA, grown by WINDOW_UPDATE and by a new initial size.</summary>
    internal long SendWindow { get; set; }

    /// <summary>This side sent END_STREAM.</summary>
    internal bool LocalEnded { get; set; }

    /// <summary>The other side sent END_STREAM.</summary>
    internal bool RemoteEnded { get; private set; }

    public bool IsReset => Volatile.Read(ref _reset) != 0;

    /// <summary>The other side refused the stream, or ended it as an owner does (RST_STREAM REFUSED_STREAM): nothing sent on
    /// it after what that side answered was processed, so an unanswered request may be sent again elsewhere. Its input then
    /// ends cleanly after what arrived, as a closed kept-alive connection's would.</summary>
    public bool Refused { get; private set; }

    /// <summary>Cancelled when the stream is reset or the link closes (off the reading thread).</summary>
    public CancellationToken Aborted
    {
        get
        {
            lock (_lock)
            {
                _aborted ??= new CancellationTokenSource();
                if (IsReset)
                {
                    _aborted.Cancel();
                }

                return _aborted.Token;
            }
        }
    }

    /// <summary>Sends <paramref name="data"/>, waiting for the send window when it is spent.</summary>
    public ValueTask SendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default) =>
        SendAsync(data, endStream: false, cancellationToken);

    /// <summary>Ends this side's direction (END_STREAM) after what was sent.</summary>
    public ValueTask EndAsync(CancellationToken cancellationToken = default) => SendAsync(ReadOnlyMemory<byte>.Empty, endStream: true, cancellationToken);

    private ValueTask SendAsync(ReadOnlyMemory<byte> data, bool endStream, CancellationToken cancellationToken)
    {
        var written = _link.WriteData(this, data.Span, endStream, out var windowOpened);
        return windowOpened is null ? default : SendRestAsync(data[written..], endStream, windowOpened, cancellationToken);
    }

    private async ValueTask SendRestAsync(ReadOnlyMemory<byte> data, bool endStream, Task windowOpened, CancellationToken cancellationToken)
    {
        // Bounded by the data: every turn waits for window and writes some of it, or throws.
        while (true)
        {
            await windowOpened.WaitAsync(cancellationToken).ConfigureAwait(false);
            var written = _link.WriteData(this, data.Span, endStream, out var next);
            if (next is null)
            {
                return;
            }

            data = data[written..];
            windowOpened = next;
        }
    }

    /// <summary>Receives into <paramref name="destination"/>: 0 at the other side's END_STREAM; a reset throws a <see cref="SocketException"/>.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<int> ReceiveAsync(Memory<byte> destination, CancellationToken cancellationToken)
    {
        ReadResult result;
        try
        {
            if (!_input.Reader.TryRead(out result))
            {
                result = await _input.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is IOException or ConnectionAbortedException or InvalidOperationException)
        {
            throw new SocketException((int)SocketError.ConnectionReset);
        }

        var buffer = result.Buffer;
        var length = (int)Math.Min(buffer.Length, destination.Length);
        buffer.Slice(0, length).CopyTo(destination.Span);
        _input.Reader.AdvanceTo(buffer.GetPosition(length));
        Consumed(length);
        return length;
    }

    /// <summary>True while nothing arrived and the other side has not ended: what a liveness poll of an idle socket says.</summary>
    public bool IsIdleAndOpen()
    {
        if (IsReset)
        {
            return false;
        }

        try
        {
            if (_input.Reader.TryRead(out var result))
            {
                _input.Reader.AdvanceTo(result.Buffer.Start);
                return false;
            }
        }
        catch (Exception ex) when (ex is IOException or ConnectionAbortedException or InvalidOperationException)
        {
            return false;
        }

        return true;
    }

    /// <summary>The reader consumed <paramref name="bytes"/>: the other side may send that much more.</summary>
    public void Consumed(int bytes)
    {
        if (bytes > 0)
        {
            _link.Credit(this, bytes);
        }
    }

    /// <summary>
    /// The owner's end of a tunnel (its session is over): RST_STREAM REFUSED_STREAM after what it sent, in place of
    /// END_STREAM. Its sessions answer every request they take or reset the stream, so a request the other side sent that
    /// is still unanswered was not processed, and the forwarding side may send it again on a new tunnel (see <see cref="Refused"/>).
    /// </summary>
    public void Refuse() => _link.Release(this, LinkFrames.RefusedStream);

    /// <summary>Done with the stream: reset unless both directions ended.</summary>
    public void Release() => _link.Release(this);

    /// <summary>Adds to the uncredited bytes (the link's lock held); true with the increment once it is worth a WINDOW_UPDATE.</summary>
    internal bool TakeCredit(int bytes, out int increment)
    {
        _uncredited += bytes;
        increment = _uncredited;
        if (RemoteEnded || IsReset || _uncredited < LinkConnection.StreamWindow / 4)
        {
            return false;
        }

        Interlocked.Add(ref _receiveWindow, _uncredited);
        _uncredited = 0;
        return true;
    }

    /// <summary>DATA from the other side (on the reading thread); false when it is more than the window allowed.</summary>
    /// <param name="payload">The data.</param>
    /// <param name="padding">Padding bytes the frame also carried: counted against the window and credited back at once.</param>
    /// <param name="endStream">The frame ended the other side's direction.</param>
    internal bool OnData(ReadOnlySpan<byte> payload, int padding, bool endStream)
    {
        // Under the stream's lock, as a reset from another thread completes the same writer (the lock is re-entrant: an
        // inline reader that releases the stream comes back here).
        lock (_lock)
        {
            if (IsReset || RemoteEnded)
            {
                return true; // in flight when this side gave up on it
            }

            if (Interlocked.Add(ref _receiveWindow, -(payload.Length + padding)) < 0)
            {
                return false;
            }

            var writer = _input.Writer;
            if (!payload.IsEmpty)
            {
                writer.Write(payload);
            }

            if (endStream)
            {
                RemoteEnded = true;
                writer.Complete();
            }
            else if (!payload.IsEmpty)
            {
                // Never pauses (no threshold): completes at once, running an inline reader here.
                var flushed = writer.FlushAsync();
                System.Diagnostics.Debug.Assert(flushed.IsCompleted, "an unpaused pipe's flush completes at once");
                flushed.GetAwaiter().GetResult();
            }
        }

        if (endStream)
        {
            _link.OnRemoteEnded(this);
        }
        else
        {
            Consumed(padding);
        }

        return true;
    }

    /// <summary>A task for a sender the windows stopped (the link's lock held).</summary>
    internal Task WaitForWindow() => (_windowOpened ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;

    internal void WakeSender()
    {
        var waiter = Interlocked.Exchange(ref _windowOpened, null);
        waiter?.TrySetResult();
    }

    /// <summary>Reset by either side, or the link closed: the reader sees the error after what arrived, a sender fails.</summary>
    internal void OnReset(Exception reason, bool refused)
    {
        if (Interlocked.Exchange(ref _reset, 1) != 0)
        {
            return;
        }

        CancellationTokenSource? aborted;
        lock (_lock)
        {
            Refused = refused;
            if (!RemoteEnded)
            {
                _input.Writer.Complete(refused ? null : reason as IOException ?? new ConnectionResetException(reason.Message, reason));
            }

            aborted = _aborted;
        }

        Interlocked.Exchange(ref _windowOpened, null)?.TrySetException(new SocketException((int)SocketError.ConnectionReset));

        if (aborted is not null)
        {
            // Its callbacks (a session's cancellation) may be slow: not on the link's reading thread.
            ThreadPool.UnsafeQueueUserWorkItem(static source => source.Cancel(), aborted, preferLocal: false);
        }
    }
}

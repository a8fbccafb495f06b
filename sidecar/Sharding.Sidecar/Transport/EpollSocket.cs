using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;

namespace Sharding.Sidecar.Transport;

/// <summary>
/// A non-blocking socket driven by an <see cref="EpollLoop"/>: at most one receive and one send at a time. A receive that
/// filled less than its buffer drained the kernel's queue, so the next receive waits for the next edge instead of trying
/// (and finding nothing); a send is always tried first.
/// </summary>
internal sealed class EpollSocket : IDisposable
{
    private readonly EpollLoop _loop;
    private readonly ulong _id;
    private readonly Readiness _read;
    private readonly Readiness _write;
    private int _disposed;
    private bool _hangUp;

    private EpollSocket(Socket socket, EpollLoop loop, bool writable)
    {
        Socket = socket;
        _loop = loop;
        _read = new Readiness(!loop.Inline, ready: true);
        _write = new Readiness(!loop.Inline, ready: writable);
        _id = loop.Register(this, (int)socket.SafeHandle.DangerousGetHandle());
    }

    /// <summary>The runtime socket that owns the fd (options, addresses, shutdown, poll); never used for I/O.</summary>
    public Socket Socket { get; }

    /// <summary>The loop that watches it.</summary>
    public EpollLoop Loop => _loop;

    /// <summary>Whether continuations after a wait run on the loop thread.</summary>
    public bool Inline => _loop.Inline;

    /// <summary>Takes over a connected socket (one that has never been used for asynchronous I/O by the runtime).</summary>
    public static EpollSocket Attach(Socket socket, EpollLoop loop)
    {
        socket.Blocking = false;
        return new EpollSocket(socket, loop, writable: true);
    }

    /// <summary>Connects a new socket to <paramref name="endPoint"/>; cancelling the token (a timeout) closes it.</summary>
    public static async ValueTask<EpollSocket> ConnectAsync(EndPoint endPoint, EpollLoop loop, CancellationToken cancellationToken)
    {
        var socket = NewStreamSocket(endPoint);
        EpollSocket? connection = null;
        try
        {
            socket.Blocking = false;
            try
            {
                socket.Connect(endPoint);
                return new EpollSocket(socket, loop, writable: true);
            }
            catch (SocketException ex) when (ex.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress)
            {
            }

            // In progress: registered only now, so the first write edge is the connect's outcome.
            connection = new EpollSocket(socket, loop, writable: false);
            while (true)
            {
                await connection._write.WaitAsync(cancellationToken).ConfigureAwait(false);
                connection._write.Clear();
                if (socket.Poll(0, SelectMode.SelectError) || socket.Poll(0, SelectMode.SelectWrite))
                {
                    break;
                }
            }

            connection._write.MarkReady();
            var error = (SocketError)(int)socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error)!;
            return error == SocketError.Success ? connection : throw new SocketException((int)error);
        }
        catch
        {
            if (connection is not null)
            {
                connection.Dispose();
            }
            else
            {
                socket.Dispose();
            }

            throw;
        }
    }

    /// <summary>An unconnected stream socket for <paramref name="endPoint"/>: Unix, or TCP without Nagle's delay.</summary>
    public static Socket NewStreamSocket(EndPoint endPoint) => endPoint is UnixDomainSocketEndPoint
        ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
        : new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };

    /// <summary>Receives into <paramref name="buffer"/>; 0 at the end of the stream.</summary>
    public ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var received = TryReceiveNow(buffer.Span);
        return received >= 0 ? new ValueTask<int>(received) : ReceiveWhenReadyAsync(buffer, cancellationToken);
    }

    /// <summary>Completes when a receive may find bytes (at once unless the last one drained the socket).</summary>
    public ValueTask WaitReadableAsync(CancellationToken cancellationToken = default) =>
        _read.IsReady ? default : _read.WaitAsync(cancellationToken);

    /// <summary>
    /// A receive that does not wait: the count (0 at the end of the stream), or -1 when there is nothing yet and the caller
    /// should <see cref="WaitReadableAsync"/>. Lets a caller wait on the readiness itself, with no async layer in between.
    /// </summary>
    public int TryReceiveNow(Span<byte> buffer) => _read.IsReady ? TryReceive(buffer) : -1;

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<int> ReceiveWhenReadyAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        // Bounded by the peer: every edge either brings bytes, the end of the stream or an error.
        while (true)
        {
            await _read.WaitAsync(cancellationToken).ConfigureAwait(false);
            var received = TryReceive(buffer.Span);
            if (received >= 0)
            {
                return received;
            }
        }
    }

    /// <summary>One recv: the count, or -1 when nothing is there yet (EAGAIN); other errors throw.</summary>
    private unsafe int TryReceive(Span<byte> buffer)
    {
        using var fd = new FdLease(Socket.SafeHandle);
        _read.Clear();
        nint received;
        fixed (byte* pointer = buffer)
        {
            received = Native.Receive(fd.Value, pointer, buffer.Length);
        }

        if (received < 0)
        {
            var error = Native.LastError;
            return error is Native.EAGAIN or Native.EINTR ? -1 : throw Native.SocketError(error);
        }

        // A full buffer: more may be queued. A hang-up the loop saw: its one edge may have come before this receive,
        // which then took the last bytes but not the end, so the next receive must try rather than wait for another.
        if (received == buffer.Length || received == 0 || Volatile.Read(ref _hangUp))
        {
            _read.MarkReady();
        }

        return (int)received;
    }

    /// <summary>Sends all of <paramref name="data"/>.</summary>
    public ValueTask SendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        var sent = TrySend(data.Span);
        return sent == data.Length ? default : SendRestAsync(data, sent, cancellationToken);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask SendRestAsync(ReadOnlyMemory<byte> data, int sent, CancellationToken cancellationToken)
    {
        // Bounded by data: every write edge lets at least one byte go, or the send throws.
        while (sent < data.Length)
        {
            await _write.WaitAsync(cancellationToken).ConfigureAwait(false);
            sent += TrySend(data.Span[sent..]);
        }
    }

    /// <summary>Sends all of <paramref name="data"/>, several segments per call.</summary>
    public ValueTask SendAsync(in ReadOnlySequence<byte> data, CancellationToken cancellationToken = default)
    {
        if (data.IsSingleSegment)
        {
            return SendAsync(data.First, cancellationToken);
        }

        var sent = TrySend(data);
        return sent == data.Length ? default : SendRestAsync(data.Slice(sent), cancellationToken);
    }

    private async ValueTask SendRestAsync(ReadOnlySequence<byte> data, CancellationToken cancellationToken)
    {
        // Bounded by data, as above.
        while (!data.IsEmpty)
        {
            await _write.WaitAsync(cancellationToken).ConfigureAwait(false);
            data = data.Slice(TrySend(data));
        }
    }

    /// <summary>One send that does not wait: the bytes the kernel took (0 when its buffer is full); errors throw.</summary>
    public int TrySendNow(ReadOnlySpan<byte> data) => TrySend(data);

    /// <summary>One send: the bytes taken (0 when the kernel's buffer is full); errors throw.</summary>
    private unsafe int TrySend(ReadOnlySpan<byte> data)
    {
        using var fd = new FdLease(Socket.SafeHandle);
        _write.Clear();
        nint sent;
        fixed (byte* pointer = data)
        {
            sent = Native.Send(fd.Value, pointer, data.Length);
        }

        return SendResult(sent);
    }

    private unsafe long TrySend(in ReadOnlySequence<byte> data)
    {
        const int MaxVectors = Pins.Length;
        var vectors = stackalloc Native.IoVector[MaxVectors];
        var pins = default(Pins);
        var count = 0;
        try
        {
            foreach (var segment in data)
            {
                if (segment.IsEmpty)
                {
                    continue;
                }

                pins[count] = segment.Pin();
                vectors[count] = new Native.IoVector { Base = (byte*)pins[count].Pointer, Length = segment.Length };
                if (++count == MaxVectors)
                {
                    break;
                }
            }

            using var fd = new FdLease(Socket.SafeHandle);
            _write.Clear();
            return SendResult(Native.SendVector(fd.Value, vectors, count));
        }
        finally
        {
            for (var i = 0; i < count; i++)
            {
                pins[i].Dispose();
            }
        }
    }

    private int SendResult(nint sent)
    {
        if (sent >= 0)
        {
            _write.MarkReady();
            return (int)sent;
        }

        var error = Native.LastError;
        return error is Native.EAGAIN or Native.EINTR ? 0 : throw Native.SocketError(error);
    }

    /// <summary>The loop saw an edge: wake the waiting receive or send.</summary>
    internal void OnEvents(uint events)
    {
        if ((events & (Native.EPOLLRDHUP | Native.EPOLLHUP | Native.EPOLLERR)) != 0)
        {
            Volatile.Write(ref _hangUp, true); // sticky: no further edge announces an end that is already there
        }

        if ((events & (Native.EPOLLIN | Native.EPOLLRDHUP | Native.EPOLLHUP | Native.EPOLLERR)) != 0)
        {
            _read.Signal();
        }

        if ((events & (Native.EPOLLOUT | Native.EPOLLHUP | Native.EPOLLERR)) != 0)
        {
            _write.Signal();
        }
    }

    /// <summary>Closes the socket; a receive or send in progress fails with <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _loop.Unregister(_id);
        Socket.Dispose();
        _read.Signal(); // a closed fd sends no edge: wake a waiter so it sees the disposal
        _write.Signal();
    }

    /// <summary>
    /// One direction's readiness: <see cref="Ready"/> (try the call), <see cref="NotReady"/> (the last call found nothing;
    /// wait for an edge) or <see cref="Waiting"/> (a caller waits). The caller clears it before each call, so an edge that
    /// comes during the call is kept.
    /// </summary>
    private sealed class Readiness : IValueTaskSource
    {
        private const int NotReady = 0;
        private const int Ready = 1;
        private const int Waiting = 2;

        private ManualResetValueTaskSourceCore<bool> _core;
        private int _state;
        private CancellationTokenRegistration _cancellation;

        public Readiness(bool runContinuationsAsynchronously, bool ready)
        {
            _core.RunContinuationsAsynchronously = runContinuationsAsynchronously;
            _state = ready ? Ready : NotReady;
        }

        public bool IsReady => Volatile.Read(ref _state) == Ready;

        public void Clear() => Volatile.Write(ref _state, NotReady);

        public void MarkReady() => Volatile.Write(ref _state, Ready);

        /// <summary>From the loop (or disposal): ready, and the waiter, if any, resumes.</summary>
        public void Signal()
        {
            if (Interlocked.Exchange(ref _state, Ready) == Waiting)
            {
                _core.SetResult(true);
            }
        }

        public ValueTask WaitAsync(CancellationToken cancellationToken)
        {
            _core.Reset();
            if (Interlocked.CompareExchange(ref _state, Waiting, NotReady) != NotReady)
            {
                return default; // an edge came since the last call
            }

            if (cancellationToken.CanBeCanceled)
            {
                _cancellation = cancellationToken.UnsafeRegister(static (state, token) => ((Readiness)state!).Cancel(token), this);
            }

            return new ValueTask(this, _core.Version);
        }

        private void Cancel(CancellationToken token)
        {
            // Ready afterwards: the next call tries rather than trusting a state nobody watched.
            if (Interlocked.CompareExchange(ref _state, Ready, Waiting) == Waiting)
            {
                _core.SetException(new OperationCanceledException(token));
            }
        }

        void IValueTaskSource.GetResult(short token)
        {
            // Only the waiter touches the registration (after WaitAsync set it), so no edge can race its disposal.
            _cancellation.Dispose();
            _cancellation = default;
            _core.GetResult(token);
        }

        ValueTaskSourceStatus IValueTaskSource.GetStatus(short token) => _core.GetStatus(token);

        void IValueTaskSource.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);
    }

    /// <summary>
    /// The fd, held open for one syscall: a concurrent <see cref="Dispose"/> cannot close it (and the number cannot be reused
    /// for another socket) until the call returns; after a dispose, taking the lease throws <see cref="ObjectDisposedException"/>.
    /// </summary>
    private readonly ref struct FdLease
    {
        private readonly SafeHandle _handle;

        public FdLease(SafeHandle handle)
        {
            var added = false;
            handle.DangerousAddRef(ref added);
            _handle = handle;
            Value = handle.DangerousGetHandle();
        }

        public nint Value { get; }

        public void Dispose() => _handle.DangerousRelease();
    }

    [InlineArray(Length)]
    private struct Pins
    {
        public const int Length = 16;

        private MemoryHandle _element;
    }
}

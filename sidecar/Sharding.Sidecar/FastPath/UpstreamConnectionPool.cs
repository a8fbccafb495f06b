using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Sharding.Sidecar.PeerLink;
using Sharding.Sidecar.Transport;

namespace Sharding.Sidecar.FastPath;

/// <summary>One kept-alive HTTP/1.1 connection of the fast path (to this pod's app or another sidecar), with its receive buffer.</summary>
internal sealed class UpstreamConnection : IDisposable
{
    /// <summary>Room for the app's response head (SocketsHttpHandler's default limit is 64 KiB as well).</summary>
    public const int MaxHeadBytes = 64 * 1024;

    private const int InitialBufferSize = 16 * 1024;

    public UpstreamConnection(Socket socket)
    {
        Socket = socket;
        Buffer = ArrayPool<byte>.Shared.Rent(InitialBufferSize);
    }

    public UpstreamConnection(EpollSocket socket, int idleStack)
        : this(socket.Socket)
    {
        _epoll = socket;
        IdleStack = idleStack;
    }

    /// <summary>A tunnel on a peer link to another sidecar, instead of a connection of its own.</summary>
    public UpstreamConnection(LinkStream stream, int idleStack)
    {
        _link = stream;
        IdleStack = idleStack;
        Buffer = ArrayPool<byte>.Shared.Rent(InitialBufferSize);
    }

    /// <summary>The pool's idle stack this connection goes back to: its event loop's (0 without the epoll transport).</summary>
    public int IdleStack { get; }

    /// <summary>The connection's I/O when the epoll transport is on (<see cref="Socket"/> then only for poll and options).</summary>
    private readonly EpollSocket? _epoll;

    /// <summary>The connection's I/O when it is a peer link's tunnel (then there is no <see cref="Socket"/>).</summary>
    private readonly LinkStream? _link;

    /// <summary>The socket, except for a peer link's tunnel (null).</summary>
    public Socket? Socket { get; }

    /// <summary>Whether this is a tunnel on a peer link.</summary>
    public bool IsLinkStream => _link is not null;

    /// <summary>A peer link's tunnel the other sidecar refused (GOAWAY, full) or ended: a request on it that is still
    /// unanswered was never seen, and may go again.</summary>
    public bool WasRefused => _link is { Refused: true };

    /// <summary>Received bytes not yet handled are <c>Buffer[Start..End]</c>.</summary>
    public byte[] Buffer { get; private set; }

    public int Start { get; set; }

    public int End { get; set; }

    /// <summary>Requests this connection has carried (a failure on a used one may be a stale keep-alive).</summary>
    public int Requests { get; set; }

    public long IdleSince { get; set; }

    public ReadOnlySpan<byte> Pending => Buffer.AsSpan(Start, End - Start);

    /// <summary>Moves pending bytes to the front, growing the buffer (up to <see cref="MaxHeadBytes"/>) when it is full.</summary>
    /// <returns>False when the buffer cannot grow further.</returns>
    public bool MakeRoom()
    {
        if (Start > 0)
        {
            Buffer.AsSpan(Start, End - Start).CopyTo(Buffer);
            End -= Start;
            Start = 0;
        }

        if (End < Buffer.Length)
        {
            return true;
        }

        if (Buffer.Length >= MaxHeadBytes)
        {
            return false;
        }

        var larger = ArrayPool<byte>.Shared.Rent(Buffer.Length * 2);
        Buffer.AsSpan(0, End).CopyTo(larger);
        ArrayPool<byte>.Shared.Return(Buffer);
        Buffer = larger;
        return true;
    }

    /// <summary>
    /// Receives into the buffer without waiting: the count (0 at the end of the stream), or -1 when nothing is there yet and
    /// the caller should await <see cref="WaitReceivableAsync"/> and try again (as <see cref="ReceiveAsync"/> does). A caller
    /// that waits itself resumes straight from the socket's readiness over the epoll transport (the fast path's wait for
    /// the app's answer); over a tunnel or a runtime socket the wait receives.
    /// </summary>
    public int TryReceive()
    {
        if (_received is { } received)
        {
            _received = null;
            return received;
        }

        if (_epoll is null)
        {
            return -1;
        }

        EnsureRoom();
        var read = _epoll.TryReceiveNow(Buffer.AsSpan(End));
        if (read > 0)
        {
            End += read;
        }

        return read;
    }

    /// <summary>Completes when <see cref="TryReceive"/> has something to say (bytes, the end, or an error to throw).</summary>
    public ValueTask WaitReceivableAsync(CancellationToken cancellationToken) =>
        _epoll is { } epoll ? epoll.WaitReadableAsync(cancellationToken) : ReceiveForTryAsync(cancellationToken);

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask ReceiveForTryAsync(CancellationToken cancellationToken)
    {
        EnsureRoom();
        var read = _link is { } link ? await link.ReceiveAsync(Buffer.AsMemory(End), cancellationToken).ConfigureAwait(false)
            : await Socket!.ReceiveAsync(Buffer.AsMemory(End), SocketFlags.None, cancellationToken).ConfigureAwait(false);
        End += read;
        _received = read;
    }

    /// <summary>What a wait of <see cref="WaitReceivableAsync"/> received (tunnels and runtime sockets), for the next try.</summary>
    private int? _received;

    /// <summary>
    /// A new request goes out: a receive of the last exchange that no <see cref="TryReceive"/> reported (its response was
    /// whole in the buffer, so nobody asked) is not this exchange's news.
    /// </summary>
    public void BeginExchange() => _received = null;

    private void EnsureRoom()
    {
        if (!MakeRoom())
        {
            throw new InvalidOperationException($"the app's response head is larger than {MaxHeadBytes} bytes");
        }
    }

    /// <summary>Receives into the buffer, waiting when nothing is there yet: the count (0 at the end of the stream).</summary>
    public ValueTask<int> ReceiveAsync(CancellationToken cancellationToken)
    {
        var read = TryReceive();
        return read >= 0 ? new ValueTask<int>(read) : ReceiveAfterWaitAsync(cancellationToken);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<int> ReceiveAfterWaitAsync(CancellationToken cancellationToken)
    {
        // Bounded by the upstream: each wake-up brings bytes, the end of the stream or an error.
        while (true)
        {
            await WaitReceivableAsync(cancellationToken).ConfigureAwait(false);
            var read = TryReceive();
            if (read >= 0)
            {
                return read;
            }
        }
    }

    public ValueTask SendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
        _epoll is { } epoll ? epoll.SendAsync(data, cancellationToken)
        : _link is { } link ? link.SendAsync(data, cancellationToken)
        : SendOnSocketAsync(data, cancellationToken);

    /// <summary>An idle connection with something to read has been closed (or sent garbage): it must not be reused.</summary>
    public bool IsOpen()
    {
        if (_link is { } link)
        {
            return link.IsIdleAndOpen();
        }

        try
        {
            return !Socket!.Poll(0, SelectMode.SelectRead);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            return false;
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask SendOnSocketAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        // Bounded by data: every turn sends at least one byte or throws.
        while (!data.IsEmpty)
        {
            var sent = await Socket!.SendAsync(data, SocketFlags.None, cancellationToken).ConfigureAwait(false);
            data = data[sent..];
        }
    }

    /// <summary>Closes the socket, failing a send or receive in progress; the buffer stays until <see cref="Dispose"/>.</summary>
    public void Abort() => Close();

    public void Dispose()
    {
        Close();
        _link?.Input.Complete(); // nobody reads it any more: its buffered bytes go back to the pool
        var buffer = Buffer;
        Buffer = [];
        if (buffer.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private void Close()
    {
        if (_epoll is { } epoll)
        {
            epoll.Dispose();
        }
        else if (_link is { } link)
        {
            link.Release();
        }
        else
        {
            Socket!.Dispose();
        }
    }
}

/// <summary>
/// Idle keep-alive connections to one upstream (this pod's app, or one other sidecar) for the HTTP/1.1 fast path. A client
/// connection keeps the connection it leased while its requests go to the same upstream, so the pool is touched about once
/// per client connection, not per request. With the epoll transport, idle connections are kept per event loop and a
/// client connection rents from (or connects on) the loop it runs on, so a relayed request stays on one thread.
/// </summary>
internal sealed class UpstreamConnectionPool : IDisposable
{
    /// <summary>Idle connections older than this are closed rather than reused (the app's keep-alive may have ended them).</summary>
    public static readonly TimeSpan IdleTimeout = TimeSpan.FromSeconds(60);

    private const int MaxIdle = 256;

    private readonly Lock _lock = new();
    private readonly Stack<UpstreamConnection>[] _idle;
    private readonly EndPoint _endPoint;
    private readonly TimeSpan _connectTimeout;
    private readonly TimeProvider _time;
    private readonly EpollLoops? _loops;
    private readonly PeerLinks? _links;
    private readonly ITimer _trim;
    private bool _disposed;

    /// <param name="endPoint">The app's or the other sidecar's address.</param>
    /// <param name="connectTimeout">How long a connect may take.</param>
    /// <param name="time">The clock for idle times.</param>
    /// <param name="loops">The epoll transport's loops, when it is on.</param>
    /// <param name="links">For another sidecar: tunnels on peer links instead of connections of their own (needs loops).</param>
    public UpstreamConnectionPool(EndPoint endPoint, TimeSpan connectTimeout, TimeProvider time, EpollLoops? loops = null, PeerLinks? links = null)
    {
        _links = links;
        _loops = loops is { Enabled: true } ? loops : null;
        _idle = new Stack<UpstreamConnection>[Math.Max(1, _loops?.Count ?? 1)];
        for (var i = 0; i < _idle.Length; i++)
        {
            _idle[i] = new Stack<UpstreamConnection>();
        }

        _endPoint = endPoint;
        _connectTimeout = connectTimeout;
        _time = time;
        _trim = time.CreateTimer(static pool => ((UpstreamConnectionPool)pool!).Trim(), this, IdleTimeout / 2, IdleTimeout / 2);
    }

    /// <summary>An idle connection that still looks open, or a new one.</summary>
    /// <param name="cancellationToken">Cancels a connect.</param>
    /// <param name="uncheckedIdle">A connection idle for less than this is reused without the liveness check (a poll
    /// syscall): for a caller that rents per request and can send its request again when the connection turns out closed.</param>
    /// <param name="loop">The loop of the caller's own connection: the upstream connection (or tunnel) should live on it, so
    /// that both legs of a relay wake one thread and a tunnel's frames are flushed at the end of that loop's turn. Without one,
    /// the calling thread's loop, or the next.</param>
    public ValueTask<UpstreamConnection> RentAsync(CancellationToken cancellationToken, TimeSpan uncheckedIdle = default, EpollLoop? loop = null)
    {
        // Bounded by the idle stack.
        loop = LoopFor(loop);
        while (TryPop(loop?.Index ?? 0, out var connection))
        {
            var idle = _time.GetElapsedTime(connection.IdleSince);
            // A tunnel's check costs no syscall: always made.
            if (idle < IdleTimeout && (connection.IsLinkStream ? connection.IsOpen() : idle < uncheckedIdle || connection.IsOpen()))
            {
                return ValueTask.FromResult(connection);
            }

            connection.Dispose();
        }

        return ConnectAsync(loop, cancellationToken);
    }

    /// <summary>A new connection (a retry after a stale keep-alive one failed), on <paramref name="loop"/> as in <see cref="RentAsync"/>.</summary>
    public ValueTask<UpstreamConnection> ConnectAsync(CancellationToken cancellationToken, EpollLoop? loop = null) =>
        ConnectAsync(LoopFor(loop), cancellationToken);

    /// <summary>The loop a connection goes on: the caller's choice, else the calling thread's loop, else the next; none without loops.</summary>
    private EpollLoop? LoopFor(EpollLoop? preferred) => _loops is null ? null : preferred ?? _loops.ForThisThread();

    private async ValueTask<UpstreamConnection> ConnectAsync(EpollLoop? loop, CancellationToken cancellationToken)
    {
        if (loop is not null && _links is not null && await _links.OpenStreamAsync(loop, cancellationToken).ConfigureAwait(false) is { } stream)
        {
            return new UpstreamConnection(stream, loop.Index);
        }

        if (loop is not null)
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            linked.CancelAfter(_connectTimeout);
            return new UpstreamConnection(await EpollSocket.ConnectAsync(_endPoint, loop, linked.Token).ConfigureAwait(false), loop.Index);
        }

        var socket = EpollSocket.NewStreamSocket(_endPoint);
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(_connectTimeout);
            await socket.ConnectAsync(_endPoint, timeout.Token).ConfigureAwait(false);
            return new UpstreamConnection(socket);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Gives back a connection that ended a response cleanly; anything else is disposed by the caller.</summary>
    public void Return(UpstreamConnection connection)
    {
        connection.IdleSince = _time.GetTimestamp();
        lock (_lock)
        {
            var idle = _idle[connection.IdleStack];
            if (!_disposed && idle.Count < MaxIdle && connection.Start == connection.End)
            {
                connection.Start = connection.End = 0;
                idle.Push(connection);
                return;
            }
        }

        connection.Dispose();
    }

    /// <summary>Idle connections kept for the loop at <paramref name="index"/> (for tests).</summary>
    internal int IdleOn(int index)
    {
        lock (_lock)
        {
            return _idle[index].Count;
        }
    }

    /// <summary>
    /// Closes the idle connections older than <see cref="IdleTimeout"/> (on a timer). Renting looks only at the top of a stack,
    /// so after a burst the ones at the bottom would stay open for good: sockets in CLOSE_WAIT once the app's keep-alive has
    /// ended them, tunnels the other sidecar holds state for.
    /// </summary>
    /// <returns>How many were closed.</returns>
    internal int Trim()
    {
        List<UpstreamConnection>? expired = null;
        lock (_lock)
        {
            foreach (var stack in _idle)
            {
                // Return pushes with IdleSince = now, so the oldest are at the bottom: keep the top ones still young enough.
                var all = stack.ToArray(); // top first
                var keep = all.Length;
                while (keep > 0 && _time.GetElapsedTime(all[keep - 1].IdleSince) >= IdleTimeout)
                {
                    keep--;
                }

                if (keep == all.Length)
                {
                    continue;
                }

                stack.Clear();
                for (var i = keep - 1; i >= 0; i--)
                {
                    stack.Push(all[i]);
                }

                (expired ??= []).AddRange(all[keep..]);
            }
        }

        foreach (var connection in expired ?? [])
        {
            connection.Dispose();
        }

        return expired?.Count ?? 0;
    }

    private bool TryPop(int stack, out UpstreamConnection connection)
    {
        lock (_lock)
        {
            return _idle[stack].TryPop(out connection!);
        }
    }

    public void Dispose()
    {
        _trim.Dispose();
        _links?.Dispose();
        lock (_lock)
        {
            _disposed = true;
            foreach (var idle in _idle)
            {
                while (idle.TryPop(out var connection))
                {
                    connection.Dispose();
                }
            }
        }
    }
}

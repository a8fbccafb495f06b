using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Options;
using Sharding.Sidecar.Hosting;

namespace Sharding.Sidecar.Transport;

/// <summary>
/// The sidecar's event loops (<see cref="EpollLoop"/>), shared by Kestrel's listeners and the fast path's upstream
/// connections, so a relayed request's two sockets are usually served by one thread. Null loops: the runtime's sockets.
/// </summary>
internal sealed partial class EpollLoops : IDisposable
{
    private readonly EpollLoop[] _loops;
    private int _next;

    public EpollLoops(IOptions<SidecarOptions> options, IHostApplicationLifetime lifetime, ILogger<EpollLoops> logger)
    {
        var value = options.Value;
        if (!value.EpollTransport || !Native.IsSupported)
        {
            _loops = [];
            return;
        }

        var count = value.IoThreads > 0 ? value.IoThreads : DefaultCount(Environment.ProcessorCount);
        _loops = new EpollLoop[count];
        for (var i = 0; i < count; i++)
        {
            _loops[i] = new EpollLoop($"sharding-io-{i}", i, value.InlineSocketCompletions, value.IdleYields, (loop, error) =>
            {
                // Its connections can no longer be served: stop the way SIGTERM does (the other loops drain theirs and the
                // log is flushed), with a failing exit code, so the pod restarts.
                LogLoopFailed(logger, error, loop.Name);
                Environment.ExitCode = 1;
                lifetime.StopApplication();
            });
        }
    }

    public bool Enabled => _loops.Length > 0;

    /// <summary>
    /// Loops when <see cref="SidecarOptions.IoThreads"/> is 0: half the processors, at least two (or one on one processor)
    /// and at most four. The sidecar shares its pod's CPU with the app, and an injected sidecar has no CPU limit, so it sees
    /// the whole node; each loop also opens its own link to every peer: one loop per processor of a 64-core node meant 64
    /// links to every other pod. Not one loop on two cores: it forwards more cheaply (its link carries more requests per
    /// send) but a single thread descheduled on a busy node stalls every connection: its owned-key p99 under load was 1.4×
    /// nginx's, where two loops' was level (docs/benchmarks.md, "Session 17").
    /// </summary>
    internal static int DefaultCount(int processors) => Math.Min(processors, Math.Clamp(processors / 2, 2, 4));

    public int Count => _loops.Length;

    /// <summary>Sockets registered on all loops now.</summary>
    public int Sockets
    {
        get
        {
            var count = 0;
            foreach (var loop in _loops)
            {
                count += loop.Count;
            }

            return count;
        }
    }

    /// <summary>Times the loops slept in epoll_wait, and times they yielded the processor instead (see <see cref="SidecarOptions.IdleYields"/>).</summary>
    public (long Sleeps, long Yields) Waits
    {
        get
        {
            long sleeps = 0, yields = 0;
            foreach (var loop in _loops)
            {
                sleeps += loop.Sleeps;
                yields += loop.Yields;
            }

            return (sleeps, yields);
        }
    }

    /// <summary>
    /// The loop for a new connection (round robin), passing over a loop that failed: the sidecar is stopping then, and
    /// connections accepted while the others drain would otherwise hang on it until the end.
    /// </summary>
    public EpollLoop Next()
    {
        EpollLoop loop;
        var retries = 0;
        do
        {
            loop = _loops[(int)((uint)Interlocked.Increment(ref _next) % (uint)_loops.Length)];
        }
        while (loop.Failed && retries++ < _loops.Length);

        return loop;
    }

    /// <summary>The loop running the caller (one of these), else the next one: an upstream connection opened for a client
    /// connection then wakes the thread that serves that client.</summary>
    public EpollLoop ForThisThread() =>
        EpollLoop.Current is { } current && current.Index < _loops.Length && ReferenceEquals(_loops[current.Index], current) ? current : Next();

    public void Dispose()
    {
        foreach (var loop in _loops)
        {
            loop.Dispose();
        }
    }

    [LoggerMessage(3, LogLevel.Critical, "Event loop {Loop} failed; the sidecar stops with exit code 1: its connections can no longer be served")]
    private static partial void LogLoopFailed(ILogger logger, Exception exception, string loop);
}

/// <summary>Kestrel's transport for the sidecar's IP endpoints when <see cref="EpollLoops.Enabled"/>.</summary>
internal sealed class EpollTransportFactory(
    EpollLoops loops, IOptions<SocketTransportOptions> options, IMemoryPoolFactory<byte> pools, ILogger<EpollConnection> logger)
    : IConnectionListenerFactory, IConnectionListenerFactorySelector
{
    private readonly EpollLoops _loops = loops;
    private readonly IOptions<SocketTransportOptions> _options = options;
    private readonly IMemoryPoolFactory<byte> _pools = pools;
    private readonly ILogger<EpollConnection> _logger = logger;

    public bool CanBind(EndPoint endpoint) => _loops.Enabled && endpoint is IPEndPoint;

    public ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        var socket = SocketTransportOptions.CreateDefaultBoundListenSocket(endpoint);
        try
        {
            socket.Listen(_options.Value.Backlog);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        return ValueTask.FromResult<IConnectionListener>(new Listener(socket, this));
    }

    private sealed class Listener(Socket socket, EpollTransportFactory factory) : IConnectionListener
    {
        private readonly MemoryPool<byte> _pool = factory._pools.Create();

        public EndPoint EndPoint { get; } = socket.LocalEndPoint!;

        public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
        {
            // Bounded by the listen socket: ends when it is closed; a connection reset before accept is skipped.
            while (true)
            {
                Socket accepted;
                try
                {
                    accepted = await socket.AcceptAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (ObjectDisposedException)
                {
                    return null;
                }
                catch (SocketException ex) when (ex.SocketErrorCode == SocketError.OperationAborted)
                {
                    return null;
                }
                catch (SocketException ex) when (ex.SocketErrorCode == SocketError.ConnectionReset)
                {
                    continue;
                }

                var options = factory._options.Value;
                if (accepted.LocalEndPoint is IPEndPoint)
                {
                    accepted.NoDelay = options.NoDelay;
                }

                EpollSocket attached;
                try
                {
                    attached = EpollSocket.Attach(accepted, factory._loops.Next());
                }
                catch (SocketException ex)
                {
                    // Out of epoll watches or memory: this connection is refused, the listener goes on.
                    accepted.Dispose();
                    EpollConnection.LogRefused(factory._logger, ex);
                    continue;
                }

                var connection = new EpollConnection(attached, _pool, options.MaxReadBufferSize ?? 0, options.MaxWriteBufferSize ?? 0, factory._logger);
                connection.Start();
                return connection;
            }
        }

        public ValueTask UnbindAsync(CancellationToken cancellationToken = default)
        {
            socket.Dispose();
            return default;
        }

        public ValueTask DisposeAsync()
        {
            socket.Dispose();
            _pool.Dispose();
            return default;
        }
    }
}

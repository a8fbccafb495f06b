using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace Sharding.Sidecar.Transport;

/// <summary>
/// One edge-triggered epoll set and the thread that waits on it: it tells each registered <see cref="EpollSocket"/> when it
/// may read or write again. Continuations of the socket's waiters run on this thread when <c>inline</c> (nginx's model: one
/// event loop that parses and relays), else on the thread pool.
/// </summary>
/// <remarks>
/// Why not the runtime's sockets: they try every receive first and wait for epoll only after EAGAIN, so each request costs
/// one receive that finds nothing on each side of the relay. A socket here remembers whether its last receive drained the
/// kernel buffer (fewer bytes than asked for) and then waits for the next edge without trying.
/// </remarks>
internal sealed unsafe class EpollLoop : IDisposable
{
    private const int MaxEvents = 256;
    private const ulong WakeId = 0;

    private readonly int _epoll;
    private readonly int _wake;
    private readonly Thread _thread;
    private readonly Action<EpollLoop, Exception>? _onFatal;
    private readonly ConcurrentDictionary<ulong, EpollSocket> _sockets = new();
    private long _nextId;
    private volatile bool _stopping;
    private volatile bool _failed; // epoll_wait failed: the thread ended and left the fds to Dispose
    private readonly int _idleYields;
    private long _sleeps; // written by the loop thread only
    private long _yields;

    // Work to run once the current batch of events is handled (loop thread only): a multiplexed connection's frames from
    // every request of the batch then leave in one send, as Envoy flushes once per event-loop turn.
    private List<IEndOfBatch> _deferred = [];
    private List<IEndOfBatch> _running = [];

    [ThreadStatic]
    private static EpollLoop? t_current;

    /// <summary>
    /// Starts the loop's thread, named <paramref name="name"/>, at position <paramref name="index"/>; continuations run on it
    /// when <paramref name="inline"/>. With nothing left to do it yields the processor and polls again, up to
    /// <paramref name="idleYields"/> times (see <see cref="Hosting.SidecarOptions.IdleYields"/>), before it sleeps. When it cannot
    /// go on (epoll_wait failed) its thread ends and tells <paramref name="onFatal"/>; without one the error is thrown on the
    /// thread, which ends the process.
    /// </summary>
    public EpollLoop(string name, int index, bool inline, int idleYields = 0, Action<EpollLoop, Exception>? onFatal = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(idleYields);
        Index = index;
        Inline = inline;
        _idleYields = idleYields;
        _onFatal = onFatal;
        _epoll = Native.EpollCreate();
        _wake = Native.EventFdCreate();
        Native.EpollAdd(_epoll, _wake, Native.EPOLLIN | Native.EPOLLET, WakeId);
        _thread = new Thread(Run) { IsBackground = true, Name = name };
        _thread.UnsafeStart();
    }

    /// <summary>The loop whose thread is running the caller, if any.</summary>
    public static EpollLoop? Current => t_current;

    /// <summary>The loop thread's name.</summary>
    public string Name => _thread.Name!;

    /// <summary>Position among its <see cref="EpollLoops"/>.</summary>
    public int Index { get; }

    /// <summary>Whether waiters' continuations run on the loop thread.</summary>
    public bool Inline { get; }

    public int Count => _sockets.Count;

    /// <summary>Whether its epoll_wait failed: it serves nothing any more.</summary>
    public bool Failed => _failed;

    /// <summary>Times it slept in epoll_wait.</summary>
    public long Sleeps => Volatile.Read(ref _sleeps);

    /// <summary>Times it yielded the processor instead of sleeping.</summary>
    public long Yields => Volatile.Read(ref _yields);

    /// <summary>Adds a socket for read and write edges (both start as ready: the first attempt tells).</summary>
    public ulong Register(EpollSocket socket, int fd)
    {
        var id = (ulong)Interlocked.Increment(ref _nextId);
        _sockets[id] = socket; // before the add: its first edge may come at once
        try
        {
            Native.EpollAdd(_epoll, fd, Native.EPOLLIN | Native.EPOLLOUT | Native.EPOLLRDHUP | Native.EPOLLET, id);
        }
        catch
        {
            _sockets.TryRemove(id, out _);
            throw;
        }

        return id;
    }

    /// <summary>
    /// Runs <paramref name="work"/> after the events of the current batch are handled. Only from this loop's thread (see
    /// <see cref="Current"/>); the caller makes sure it defers each piece of work once.
    /// </summary>
    public void Defer(IEndOfBatch work)
    {
        System.Diagnostics.Debug.Assert(t_current == this, "deferred from another thread");
        _deferred.Add(work);
    }

    /// <summary>Forgets a socket whose fd is about to be closed (closing the fd removes it from the epoll set).</summary>
    public void Unregister(ulong id) => _sockets.TryRemove(id, out _);

    public void Dispose()
    {
        _stopping = true;
        Native.EventFdSignal(_wake); // the fd is open until the thread ends normally, or until below after a failure
        if (Thread.CurrentThread != _thread)
        {
            _thread.Join();
            if (_failed)
            {
                Native.Close(_wake);
                Native.Close(_epoll);
            }
        }
    }

    private void RunDeferred()
    {
        // Bounded: deferred work that defers more (a flush whose send completed inline and woke a writer) runs in the next
        // round, and each round's work was added by the round before.
        for (var round = 0; _deferred.Count > 0 && round < 8; round++)
        {
            (_running, _deferred) = (_deferred, _running);
            foreach (var work in _running)
            {
                try
                {
                    work.RunAtEndOfBatch();
                }
                catch (Exception ex)
                {
                    // Deferred work handles its own failures; one that escapes must not end the loop (and the process).
                    System.Diagnostics.Trace.TraceError($"Deferred work failed on {_thread.Name}: {ex}");
                }
            }

            _running.Clear();
        }

        if (_deferred.Count > 0)
        {
            Native.EventFdSignal(_wake); // the rest runs after the next epoll_wait, which this makes return at once
        }
    }

    private void Run()
    {
        t_current = this;
        var events = (byte*)NativeMemory.Alloc((nuint)(MaxEvents * Native.EpollEventSize));
        try
        {
            // Yields still allowed: one per event handled, at most _idleYields in a row. The bound keeps an idle node, where
            // a yield returns at once, from spinning: about half a microsecond of polling per event at most.
            var credit = 0;
            while (!_stopping)
            {
                var count = 0;
                for (; credit > 0 && count == 0; credit--)
                {
                    Native.YieldProcessor();
                    _yields++;
                    count = Native.EpollPoll(_epoll, events, MaxEvents);
                }

                if (count == 0)
                {
                    _sleeps++;
                    count = Native.EpollWait(_epoll, events, MaxEvents);
                }

                if (count < 0)
                {
                    if (Native.LastError == Native.EINTR)
                    {
                        continue;
                    }

                    // Nothing can watch this loop's sockets any more: its connections would hang.
                    var error = Native.SocketError(Native.LastError);
                    if (_onFatal is null)
                    {
                        throw error;
                    }

                    _failed = true;
                    _onFatal(this, error);
                    return;
                }

                credit = Math.Min(credit + count, _idleYields);
                for (var i = 0; i < count; i++)
                {
                    var id = Native.EventId(events, i);
                    if (id == WakeId)
                    {
                        Native.EventFdDrain(_wake);
                    }
                    else if (_sockets.TryGetValue(id, out var socket))
                    {
                        socket.OnEvents(Native.EventMask(events, i));
                    }
                }

                RunDeferred();
            }
        }
        finally
        {
            NativeMemory.Free(events);
            if (!_failed)
            {
                Native.Close(_wake);
                Native.Close(_epoll);
            }
        }
    }
}

/// <summary>Work an <see cref="EpollLoop"/> runs after it handled a batch of events.</summary>
internal interface IEndOfBatch
{
    void RunAtEndOfBatch();
}

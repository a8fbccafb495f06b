using Microsoft.Extensions.DependencyInjection;
using System.Collections.Concurrent;
using System.Net.Sockets;
using Sharding.Sidecar.FastPath;
using Sharding.Sidecar.Tests.Infrastructure;
using Sharding.Testing;

namespace Sharding.Sidecar.Tests.FastPath;

/// <summary>
/// Renting looks only at the top of the idle stack, so after a burst the connections at its bottom were never looked at
/// again: the sweep closes those idle for <see cref="UpstreamConnectionPool.IdleTimeout"/> and keeps the younger ones.
/// </summary>
public sealed class UpstreamConnectionPoolTests
{
    [Fact]
    public async Task IdleConnectionsPastTheIdleTimeout_AreClosedByTheSweep_YoungerOnesAreKept()
    {
        await using var app = new AcceptingApp();
        var accepted = app.Accepted;
        var time = new ManualTimeProvider();
        using var pool = new UpstreamConnectionPool(app.EndPoint, TimeSpan.FromSeconds(5), time);
        var a = await pool.RentAsync(CancellationToken.None);
        var b = await pool.RentAsync(CancellationToken.None);
        var c = await pool.RentAsync(CancellationToken.None);
        pool.Return(a);
        pool.Return(b);
        pool.Return(c); // on top

        time.Advance(TimeSpan.FromSeconds(20));
        var reused = await pool.RentAsync(CancellationToken.None);
        Assert.Same(c, reused);
        pool.Return(reused); // idle again from 20 s

        // The sweeps at 30 s and 60 s: at 60 s a and b have been idle 60 s, c 40 s.
        time.Advance(TimeSpan.FromSeconds(45));

        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (accepted.Count < 3 || accepted.Count(Ended) < 2)
        {
            Assert.True(waited.Elapsed < TimeSpan.FromSeconds(10), $"{accepted.Count(Ended)} of {accepted.Count} app-side connections ended, expected 2 of 3");
            await Task.Delay(20);
        }

        Assert.Equal(2, accepted.Count(Ended));
        Assert.Same(c, await pool.RentAsync(CancellationToken.None)); // the young one is still there, still open
    }

    [Fact]
    public async Task A_connection_rented_for_a_loop_lives_on_that_loop_whichever_thread_rents_it()
    {
        // A session often reads its first request on the thread that started it, not on its connection's loop: the app
        // connection (or tunnel) it rents must still live on that loop, or each of its requests wakes two loop threads.
        await using var cluster = await Cluster.StartAsync(size: 1, sidecarSettings: new Dictionary<string, string?> { ["Sidecar:IoThreads"] = "2" });
        var loops = cluster.Sidecars[0].Services.GetRequiredService<Sharding.Sidecar.Transport.EpollLoops>();
        await using var app = new AcceptingApp();
        using var pool = new UpstreamConnectionPool(app.EndPoint, TimeSpan.FromSeconds(5), TimeProvider.System, loops);
        foreach (var loop in new[] { loops.Next(), loops.Next() })
        {
            for (var i = 0; i < 3; i++)
            {
                using var connection = await pool.RentAsync(CancellationToken.None, loop: loop); // from the test's thread
                Assert.Equal(loop.Index, connection.IdleStack);
            }
        }
    }

    /// <summary>A loopback listener that accepts every connection and keeps its app-side socket until disposed.</summary>
    private sealed class AcceptingApp : IAsyncDisposable
    {
        private readonly Socket _listener = LoopbackListener.Listen();
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _accepting;

        public AcceptingApp() => _accepting = LoopbackListener.AcceptAllAsync(_listener, Accepted.Enqueue, _stop.Token);

        public ConcurrentQueue<Socket> Accepted { get; } = new();

        public System.Net.EndPoint EndPoint => _listener.LocalEndPoint!;

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _listener.Dispose();
            await _accepting;
            foreach (var socket in Accepted)
            {
                socket.Dispose();
            }

            _stop.Dispose();
        }
    }

    /// <summary>The app's side of a connection the pool closed reads end of stream.</summary>
    private static bool Ended(Socket socket) => socket.Poll(0, SelectMode.SelectRead) && socket.Available == 0;
}

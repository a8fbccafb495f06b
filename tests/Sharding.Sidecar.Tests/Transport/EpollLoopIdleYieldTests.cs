using System.Net;
using System.Net.Sockets;
using Sharding.Sidecar.Transport;

namespace Sharding.Sidecar.Tests.Transport;

/// <summary>
/// A loop with nothing left to do yields the processor and polls again before it sleeps (Sidecar:IdleYields), at most once per
/// event it handled: busy, it finds the next bytes without being woken; idle, it sleeps and costs nothing. (Its range is
/// checked at start: OptionLimitsTests.)
/// </summary>
public sealed class EpollLoopIdleYieldTests
{
    private const int Exchanges = 50;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task A_busy_loop_yields_at_most_once_per_event_and_an_idle_one_sleeps_without_yielding()
    {
        using var loop = new EpollLoop("yield-test-io", 0, inline: true, idleYields: 16);
        await EchoAsync(loop);

        Assert.True(loop.Yields > 0, "the loop never yielded before sleeping");
        Assert.True(loop.Yields <= Exchanges + 8, $"{loop.Yields} yields for {Exchanges} receive edges: more than one per event");

        // Idle: the loop sleeps in epoll_wait; nothing wakes it, so neither count moves (a loop that kept polling would yield).
        await Task.Delay(200);
        var (sleeps, yields) = (loop.Sleeps, loop.Yields);
        await Task.Delay(500);
        Assert.Equal(yields, loop.Yields);
        Assert.Equal(sleeps, loop.Sleeps);
    }

    [Fact]
    public async Task With_no_idle_yields_a_loop_sleeps_at_once()
    {
        using var loop = new EpollLoop("yield-test-io", 0, inline: true, idleYields: 0);
        await EchoAsync(loop);

        Assert.Equal(0, loop.Yields);
        Assert.True(loop.Sleeps > 0);
    }

    /// <summary>
    /// Byte by byte ping-pong: a plain client sends, the loop's socket receives and answers on the loop thread. The client
    /// pauses before each byte, so the loop's polls after an exchange find nothing and use up what it may yield.
    /// </summary>
    private static async Task EchoAsync(EpollLoop loop)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await client.ConnectAsync(listener.LocalEndPoint!);
        using var accepted = await listener.AcceptAsync().WaitAsync(Timeout);
        accepted.NoDelay = true;
        using var server = EpollSocket.Attach(accepted, loop);

        var echo = Task.Run(async () =>
        {
            var buffer = new byte[16];
            for (var i = 0; i < Exchanges; i++)
            {
                var read = await server.ReceiveAsync(buffer);
                Assert.Equal(1, read);
                await server.SendAsync(buffer.AsMemory(0, 1));
            }
        });

        var one = new byte[1];
        for (var i = 0; i < Exchanges; i++)
        {
            await Task.Delay(2);
            one[0] = (byte)i;
            await client.SendAsync(one);
            using var timeout = new CancellationTokenSource(Timeout);
            Assert.Equal(1, await client.ReceiveAsync(one, timeout.Token));
            Assert.Equal((byte)i, one[0]);
        }

        await echo.WaitAsync(Timeout);
    }
}

using System.Diagnostics;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Sharding.Mapping;
using Sharding.Sidecar.Draining;
using Sharding.Sidecar.Tests.Infrastructure;

namespace Sharding.Sidecar.Tests.FastPath;

/// <summary>
/// Requests on the fast path are tracked and drained like the full path's: a moved long poll is answered 503, a moved
/// chunked stream ends at a chunk boundary after the grace, and shutdown closes idle kept-alive connections at once.
/// </summary>
public sealed class FastPathDrainTests
{
    private static readonly TimeSpan Grace = TimeSpan.FromMilliseconds(300);

    private static readonly Dictionary<string, string?> DrainSettings = new()
    {
        ["Sidecar:StreamThreshold"] = "00:00:00.200",
        ["Sidecar:DrainGrace"] = "00:00:00.300",
    };

    /// <summary>The app: /long-poll never answers (it waits for the sidecar to close the connection); /stream sends a
    /// chunk every 100 ms until the connection breaks.</summary>
    private static FakeApp StartApp(TaskCompletionSource<bool> appSawClose) => FakeApp.Start(async (request, connection) =>
    {
        connection.CloseAfterResponse = true;
        if (request.Target == "/long-poll")
        {
            appSawClose.TrySetResult(await connection.WaitForCloseAsync(TimeSpan.FromSeconds(20)));
            return;
        }

        await connection.SendAsync("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
        var deadline = Stopwatch.GetTimestamp() + (Stopwatch.Frequency * 20);
        try
        {
            while (Stopwatch.GetTimestamp() < deadline)
            {
                await connection.SendAsync("5\r\nchunk\r\n");
                await Task.Delay(100);
            }
        }
        catch (System.Net.Sockets.SocketException)
        {
            appSawClose.TrySetResult(true);
        }
    });

    /// <summary>A key pod-0 owns alone (generation 1) that pod-1 owns once it joins (generation 2).</summary>
    private static string MovingKey(SoloSidecar solo, int otherPort)
    {
        var grown = ShardMap.Create("echo", 2, [new ShardMember("pod-0", $"127.0.0.1:{solo.Port}"), new ShardMember("pod-1", $"127.0.0.1:{otherPort}")]);
        return Enumerable.Range(0, 10_000).Select(i => $"move-{i}").First(k => grown.OwnerOf(k.AsSpan())!.Name == "pod-1");
    }

    private static async Task WaitTrackedAsync(SoloSidecar solo)
    {
        var registry = solo.Sidecar.Services.GetRequiredService<StreamRegistry>();
        var deadline = Stopwatch.GetTimestamp() + (Stopwatch.Frequency * 10);
        while (registry.TrackedCount == 0)
        {
            Assert.True(Stopwatch.GetTimestamp() < deadline, "the fast-path request was never tracked as a long-lived stream");
            await Task.Delay(20);
        }
    }

    [Fact]
    public async Task MovedLongPoll_OnTheFastPath_IsAnswered503WithRetryAfter0AndTheNewOwner_ThenClosed()
    {
        var appSawClose = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = StartApp(appSawClose);
        await using var solo = await SoloSidecar.StartAsync(app.Port, DrainSettings);
        using var counters = new FastPathCounters(solo.Sidecar);
        var otherPort = TestSidecar.FreePort();
        var key = MovingKey(solo, otherPort);
        using var client = await RawClient.ConnectAsync(solo.Port);

        await client.SendAsync($"GET /long-poll HTTP/1.1\r\nHost: app.test\r\nx-shard-key: {key}\r\n\r\n");
        await app.NextRequestAsync();
        await WaitTrackedAsync(solo);
        Assert.Equal(0, counters.TotalHandovers); // it is the fast path's request

        // Timed from before the edit: the drain cannot start earlier, while ChangeMapAsync may see the new map late on a busy
        // machine (its poll can return after the grace already ran).
        var changed = Stopwatch.GetTimestamp();
        await solo.ChangeMapAsync(2, [("pod-0", solo.Port), ("pod-1", otherPort)]);
        var response = await client.ReadResponseAsync(timeout: TimeSpan.FromSeconds(10));
        var elapsed = Stopwatch.GetElapsedTime(changed);

        Assert.Equal("HTTP/1.1 503 Service Unavailable", response.StatusLine);
        Assert.Equal("0", response.Single("retry-after"));
        Assert.Equal("pod-1", response.Single("x-sharding-owner"));
        Assert.Equal("1", response.Single("x-sharding-generation")); // the generation it was routed with, as on the full path
        Assert.Equal("close", response.Single("connection"));
        Assert.Equal("text/plain; charset=utf-8", response.Single("content-type"));
        Assert.Equal("shard moved to pod-1 at generation 2\n", response.BodyText);
        Assert.True(elapsed >= Grace - TimeSpan.FromMilliseconds(100), $"answered {elapsed} after the change, before the grace");
        Assert.True(await client.ClosesAsync(TimeSpan.FromSeconds(5)), "the client connection stayed open after connection: close");
        Assert.True(await appSawClose.Task.WaitAsync(TimeSpan.FromSeconds(10)), "the app connection of the ended long poll stayed open");
    }

    [Fact]
    public async Task MovedChunkedStream_OnTheFastPath_EndsWithTheTerminatorAtAChunkBoundary_ThenCloses()
    {
        var appSawClose = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = StartApp(appSawClose);
        await using var solo = await SoloSidecar.StartAsync(app.Port, DrainSettings);
        var otherPort = TestSidecar.FreePort();
        var key = MovingKey(solo, otherPort);
        using var client = await RawClient.ConnectAsync(solo.Port);

        await client.SendAsync($"GET /stream HTTP/1.1\r\nHost: app.test\r\nx-shard-key: {key}\r\n\r\n");
        var reading = client.ReadResponseAsync(timeout: TimeSpan.FromSeconds(20));
        await WaitTrackedAsync(solo);
        Assert.False(reading.IsCompleted, "the stream ended before the map changed");

        // Timed from before the edit: the drain cannot start earlier, while ChangeMapAsync may see the new map late on a busy
        // machine (its poll can return after the grace already ran).
        var changed = Stopwatch.GetTimestamp();
        await solo.ChangeMapAsync(2, [("pod-0", solo.Port), ("pod-1", otherPort)]);
        var response = await reading;
        var elapsed = Stopwatch.GetElapsedTime(changed);

        Assert.Equal("HTTP/1.1 200 OK", response.StatusLine);
        Assert.Equal("chunked", response.Single("transfer-encoding"));
        Assert.Equal("pod-0", response.Single("x-sharding-owner"));
        var raw = Encoding.Latin1.GetString(response.RawBody);
        var chunks = response.Body.Length / 5;
        Assert.True(chunks >= 2, raw);
        Assert.Equal(string.Concat(Enumerable.Repeat("5\r\nchunk\r\n", chunks)) + "0\r\n\r\n", raw); // whole chunks, then the terminator
        Assert.Empty(response.Trailers);
        Assert.True(elapsed >= Grace - TimeSpan.FromMilliseconds(100), $"ended {elapsed} after the change, before the grace");
        Assert.True(await client.ClosesAsync(TimeSpan.FromSeconds(5)), "the client connection stayed open after the drained stream");
        Assert.True(await appSawClose.Task.WaitAsync(TimeSpan.FromSeconds(10)), "the app connection of the ended stream stayed open");
    }

    [Fact]
    public async Task Shutdown_ClosesAnIdleKeptAliveFastPathConnection_Promptly()
    {
        await using var app = FakeApp.Start();
        await using var solo = await SoloSidecar.StartAsync(app.Port, DrainSettings);
        using var counters = new FastPathCounters(solo.Sidecar);
        using var client = await RawClient.ConnectAsync(solo.Port);
        await client.SendAsync("GET /before HTTP/1.1\r\nHost: app.test\r\nx-shard-key: k\r\n\r\n");
        Assert.Equal(200, (await client.ReadResponseAsync()).Status);
        await counters.WaitForAsync(static c => c.Served == 1, "1 served");

        // The connection is idle, kept alive, inside the fast path: shutdown must not wait for its keep-alive timeout.
        var started = Stopwatch.GetTimestamp();
        var stopping = solo.StopSidecarAsync();
        Assert.True(await client.ClosesAsync(TimeSpan.FromSeconds(10)), "the idle connection was not closed by the shutdown");
        var closedAfter = Stopwatch.GetElapsedTime(started);
        await stopping.WaitAsync(TimeSpan.FromSeconds(25));
        var stoppedAfter = Stopwatch.GetElapsedTime(started);
        Assert.True(closedAfter < TimeSpan.FromSeconds(5), $"the idle connection closed {closedAfter} after shutdown began");
        Assert.True(stoppedAfter < TimeSpan.FromSeconds(10), $"the sidecar took {stoppedAfter} to stop (its shutdown timeout is 30 s)");
    }
}

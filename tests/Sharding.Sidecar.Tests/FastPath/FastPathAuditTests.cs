using System.Diagnostics;
using System.Text;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;

namespace Sharding.Sidecar.Tests.FastPath;

/// <summary>
/// Bytes the fast path must treat as Kestrel does on the full path: its limits (the request-headers deadline, the request
/// line's length) and its validation of the Host field hold whichever path a request takes.
/// </summary>
public sealed class FastPathAuditTests
{
    private static readonly TimeSpan Soon = TimeSpan.FromSeconds(5);

    private static Dictionary<string, string?> FastPath(bool on, Dictionary<string, string?>? extra = null)
    {
        var settings = new Dictionary<string, string?> { ["Sidecar:Http1FastPath"] = on ? "true" : "false" };
        foreach (var (key, value) in extra ?? [])
        {
            settings[key] = value;
        }

        return settings;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task HeadTrickledByteByByte_IsCutAtTheRequestHeadersTimeout_NotKeptAliveByEachByte(bool fastPath)
    {
        await using var app = FakeApp.Start();
        await using var solo = await SoloSidecar.StartAsync(app.Port, FastPath(fastPath), configure: static builder =>
            builder.Services.Configure<KestrelServerOptions>(static kestrel => kestrel.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(2)));
        using var client = await RawClient.ConnectAsync(solo.Port);

        // Kestrel's RequestHeadersTimeout bounds the whole head, however its bytes are spread (slowloris): a byte every
        // 0.5 s must not restart it.
        var started = Stopwatch.GetTimestamp();
        await client.SendAsync("GET / HTTP/1.1\r\nHost: app.test\r\nx-shard-key: k1\r\nX-Slow: ");
        using var stop = new CancellationTokenSource();
        var trickle = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                await Task.Delay(500);
                try
                {
                    await client.SendAsync("a");
                }
                catch (Exception ex) when (ex is System.Net.Sockets.SocketException or OperationCanceledException or ObjectDisposedException)
                {
                    return;
                }
            }
        });
        try
        {
            await client.DrainUntilClosedAsync(TimeSpan.FromSeconds(8)); // Kestrel may answer 408 first
        }
        finally
        {
            await stop.CancelAsync();
            await trickle;
        }

        Assert.True(Stopwatch.GetElapsedTime(started) < TimeSpan.FromSeconds(5), $"closed only after {Stopwatch.GetElapsedTime(started).TotalSeconds:F1} s");
        Assert.Equal(0, app.Connections);
    }

    [Theory]
    [InlineData("a/b", true)]
    [InlineData("a/b", false)]
    [InlineData("a b", true)]
    [InlineData("a b", false)]
    [InlineData("a@b", true)]
    [InlineData("a@b", false)]
    [InlineData("a:8x", true)]
    [InlineData(":80", true)]
    [InlineData("[::1", true)]
    [InlineData("a\"b", true)]
    [InlineData("a*b", true)]
    [InlineData("a*b", false)]
    [InlineData("a%41", true)]
    [InlineData("a%41", false)]
    [InlineData("a:", true)]
    [InlineData("a:", false)]
    [InlineData("[::]", true)]
    [InlineData("[::]", false)]
    public async Task InvalidHost_IsAnswered400_AsKestrelDoes_AndNeverReachesTheApp(string host, bool fastPath)
    {
        await using var app = FakeApp.Start();
        await using var solo = await SoloSidecar.StartAsync(app.Port, FastPath(fastPath));
        using var client = await RawClient.ConnectAsync(solo.Port);

        await client.SendAsync($"GET /x HTTP/1.1\r\nHost: {host}\r\nx-shard-key: k1\r\n\r\n");
        var response = await client.ReadResponseAsync(timeout: Soon);
        Assert.Equal(400, response.Status);
        Assert.False(app.Requests.Reader.TryRead(out var seen), $"the app got a request with Host '{seen?.Header("host")}'");
    }

    [Theory]
    [InlineData("app.test")]
    [InlineData("app.test:8080")]
    [InlineData("10.0.0.1:80")]
    [InlineData("[::1]:8080")]
    [InlineData("[fe80::1]")]
    [InlineData("")]
    [InlineData("xn--bcher-kva.example")]
    [InlineData("a_b.test")]
    [InlineData("a~!$&'()b")]
    public async Task ValidHost_IsServedByTheFastPath_AndKestrelTakesItToo(string host)
    {
        await using var app = FakeApp.Start();
        await using (var full = await SoloSidecar.StartAsync(app.Port, FastPath(false)))
        {
            using var kestrel = await RawClient.ConnectAsync(full.Port);
            await kestrel.SendAsync($"GET /x HTTP/1.1\r\nHost: {host}\r\nx-shard-key: k1\r\n\r\n");
            Assert.Equal(200, (await kestrel.ReadResponseAsync(timeout: Soon)).Status);
            Assert.Equal(host, (await app.NextRequestAsync()).Header("host"));
        }

        await using var solo = await SoloSidecar.StartAsync(app.Port);
        using var counters = new FastPathCounters(solo.Sidecar);
        using var client = await RawClient.ConnectAsync(solo.Port);

        await client.SendAsync($"GET /x HTTP/1.1\r\nHost: {host}\r\nx-shard-key: k1\r\n\r\n");
        var response = await client.ReadResponseAsync(timeout: Soon);
        Assert.Equal(200, response.Status);
        Assert.Equal(host, (await app.NextRequestAsync()).Header("host"));
        await counters.WaitForAsync(static c => c.Served == 1, "1 served");
        Assert.Equal(0, counters.TotalHandovers);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task RequestLineLongerThanKestrelsLimit_IsAnswered414_AsKestrelDoes(bool fastPath)
    {
        await using var app = FakeApp.Start();
        await using var solo = await SoloSidecar.StartAsync(app.Port, FastPath(fastPath));
        using var counters = new FastPathCounters(solo.Sidecar);
        using var client = await RawClient.ConnectAsync(solo.Port);

        // Kestrel's MaxRequestLineSize is 8 KiB; the fast path's head limit (16 KiB) is not a request-line limit.
        var target = "/" + new string('a', 10 * 1024);
        await client.SendAsync($"GET {target} HTTP/1.1\r\nHost: app.test\r\nx-shard-key: k1\r\n\r\n");
        var response = await client.ReadResponseAsync(timeout: Soon);
        Assert.Equal(414, response.Status);
        Assert.False(app.Requests.Reader.TryRead(out _), "the app got a request line Kestrel refuses");
        if (fastPath)
        {
            Assert.Equal(0, counters.Served);
        }
    }

    [Theory]
    [InlineData("HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)] // a HEAD answered with a body anyway
    [InlineData("GET", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", true)]
    [InlineData("GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true)] // more than its length
    [InlineData("HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false)]
    public async Task BytesTheAppSentAfterItsResponse_AreNotReadAsTheNextRequestsResponse(string method, string head, bool fastPath)
    {
        // The app writes more than its response holds, a moment later (a separate write): bytes no response owns, sitting on
        // the kept app connection. The next request must not get them as the start of its own response.
        await using var app = FakeApp.Start(async (request, connection) =>
        {
            if (request.Target == "/sloppy")
            {
                await connection.SendAsync(head);
                await Task.Delay(100);
                await connection.SendAsync("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nspoofed");
                return;
            }

            await FakeApp.EchoAsync(request, connection);
        });
        await using var solo = await SoloSidecar.StartAsync(app.Port, FastPath(fastPath));
        using var client = await RawClient.ConnectAsync(solo.Port);

        await client.SendAsync($"{method} /sloppy HTTP/1.1\r\nHost: app.test\r\nx-shard-key: k1\r\n\r\n");
        var first = await client.ReadResponseAsync(headRequest: method == "HEAD", timeout: Soon);
        Assert.Contains(first.Status, new[] { 200, 204 });
        await Task.Delay(400); // the stray bytes are on the app connection by now

        for (var i = 0; i < 2; i++)
        {
            await client.SendAsync($"GET /next{i} HTTP/1.1\r\nHost: app.test\r\nx-shard-key: k1\r\n\r\n");
            var next = await client.ReadResponseAsync(timeout: Soon);
            Assert.Equal(200, next.Status);
            Assert.StartsWith($"GET /next{i} 0 ", next.BodyText);
        }
    }

    private static void SlowBodyLimit(Microsoft.AspNetCore.Builder.WebApplicationBuilder builder) =>
        builder.Services.Configure<KestrelServerOptions>(static kestrel => kestrel.Limits.MinRequestBodyDataRate = new MinDataRate(100, TimeSpan.FromSeconds(2)));

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task BodyTrickledBelowTheMinimumRequestBodyDataRate_IsCut_AsKestrelDoes(bool fastPath)
    {
        await using var app = FakeApp.Start();
        await using var solo = await SoloSidecar.StartAsync(app.Port, FastPath(fastPath), configure: SlowBodyLimit);
        using var client = await RawClient.ConnectAsync(solo.Port);

        // 20 bytes/s against a minimum of 100 bytes/s after a 2 s grace: Kestrel cuts it after about 2 s (slow POST), and
        // the full path answers 400.
        await client.SendAsync("POST /upload HTTP/1.1\r\nHost: app.test\r\nx-shard-key: k1\r\nContent-Length: 100000\r\n\r\n");
        var started = Stopwatch.GetTimestamp();
        using var stop = new CancellationTokenSource();
        var trickle = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                await Task.Delay(500);
                try
                {
                    await client.SendAsync("0123456789");
                }
                catch (Exception ex) when (ex is System.Net.Sockets.SocketException or OperationCanceledException or ObjectDisposedException)
                {
                    return;
                }
            }
        });
        string received;
        try
        {
            var response = await client.ReadResponseAsync(timeout: TimeSpan.FromSeconds(8));
            received = response.StatusLine;
            Assert.Equal(400, response.Status); // the full path's answer when reading the body fails
            Assert.Equal("reading the request body failed", response.BodyText.Trim());
            await client.DrainUntilClosedAsync(Soon); // the rest of the body is never read: the connection cannot go on
        }
        finally
        {
            await stop.CancelAsync();
            await trickle;
        }

        Assert.True(Stopwatch.GetElapsedTime(started) < TimeSpan.FromSeconds(5), $"'{received}' only after {Stopwatch.GetElapsedTime(started).TotalSeconds:F1} s");
        Assert.False(app.Requests.Reader.TryRead(out _), "the app got the cut request as a whole one");
    }

    [Fact]
    public async Task BodySentInPiecesAboveTheMinimumRate_ArrivesWhole()
    {
        await using var app = FakeApp.Start();
        await using var solo = await SoloSidecar.StartAsync(app.Port, configure: SlowBodyLimit);
        using var counters = new FastPathCounters(solo.Sidecar);
        using var client = await RawClient.ConnectAsync(solo.Port);

        // Pauses longer than the grace in all, but 500 bytes/s on average: not too slow.
        var piece = new string('b', 500);
        await client.SendAsync($"POST /upload HTTP/1.1\r\nHost: app.test\r\nx-shard-key: k1\r\nContent-Length: {piece.Length * 6}\r\n\r\n");
        for (var i = 0; i < 6; i++)
        {
            await Task.Delay(900);
            await client.SendAsync(piece);
        }

        var response = await client.ReadResponseAsync(timeout: Soon);
        Assert.Equal(200, response.Status);
        Assert.StartsWith($"POST /upload {piece.Length * 6} ", response.BodyText);
        await counters.WaitForAsync(static c => c.Served == 1, "1 served");
    }
}

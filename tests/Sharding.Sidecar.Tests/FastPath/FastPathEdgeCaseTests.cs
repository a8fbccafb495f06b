using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Sharding.Sidecar.Tests.Infrastructure;

namespace Sharding.Sidecar.Tests.FastPath;

/// <summary>
/// The fast path's risky corners over real loopback sockets: message framing the client or the app could make the sidecar
/// and its peer disagree on (smuggling, response splitting), and app connections that must not be reused after an exchange
/// ended abnormally.
/// </summary>
public sealed class FastPathEdgeCaseTests
{
    private static readonly TimeSpan Soon = TimeSpan.FromSeconds(5);

    private static string Get(string target, string key = "k1", string extra = "") =>
        $"GET {target} HTTP/1.1\r\nHost: app.test\r\nx-shard-key: {key}\r\n{extra}\r\n";

    private static string Sha(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    private static string EchoBody(string method, string target, string body = "") => $"{method} {target} {Encoding.UTF8.GetByteCount(body)} {Sha(body)}";

    [Fact]
    public async Task ConnectionHeaderNamingContentLengthAndHost_TheAppStillGetsBoth_AndTheBodyAsTheBody_NotAsARequest()
    {
        await using var app = FakeApp.Start();
        await using var solo = await SoloSidecar.StartAsync(app.Port);
        using var client = await RawClient.ConnectAsync(solo.Port);

        // The body is itself a request: if the app's copy lost its Content-Length, the app would take it for a second request.
        var smuggled = "GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n";
        await client.SendAsync(
            $"POST /upload HTTP/1.1\r\nHost: app.test\r\nx-shard-key: k1\r\nConnection: keep-alive, Content-Length, Host\r\nContent-Length: {smuggled.Length}\r\n\r\n{smuggled}");
        var response = await client.ReadResponseAsync(timeout: Soon);
        Assert.Equal(EchoBody("POST", "/upload", smuggled), response.BodyText);
        var seen = await app.NextRequestAsync();
        Assert.Equal("/upload", seen.Target);
        Assert.Equal(smuggled.Length.ToString(System.Globalization.CultureInfo.InvariantCulture), seen.Header("content-length"));
        Assert.Equal("app.test", seen.Header("host")); // HTTP/1.1 requires it; the full path sets it whatever Connection says
        Assert.Equal(smuggled, Encoding.Latin1.GetString(seen.Body));

        // The connection is still in step: the next request gets its own answer, and the app never saw a smuggled request.
        await client.SendAsync(Get("/next"));
        Assert.Equal(EchoBody("GET", "/next"), (await client.ReadResponseAsync(timeout: Soon)).BodyText);
        Assert.Equal("/next", (await app.NextRequestAsync()).Target);
        Assert.False(app.Requests.Reader.TryRead(out var extra), $"the app saw another request: {extra?.RequestLine}");
    }

    [Fact]
    public async Task AppResponseWhoseConnectionHeaderNamesContentLength_KeepsItsLength_AndTheConnectionStaysInSync()
    {
        await using var app = FakeApp.Start((request, connection) => request.Target == "/named"
            ? connection.SendAsync("HTTP/1.1 200 OK\r\nConnection: keep-alive, Content-Length\r\nContent-Length: 5\r\n\r\nhello")
            : FakeApp.EchoAsync(request, connection));
        await using var solo = await SoloSidecar.StartAsync(app.Port);
        using var client = await RawClient.ConnectAsync(solo.Port);

        await client.SendAsync(Get("/named"));
        var response = await client.ReadResponseAsync(timeout: Soon); // without a length or a close, the client could only wait
        Assert.Equal("5", response.Single("content-length"));
        Assert.Equal("hello", response.BodyText);

        await client.SendAsync(Get("/next"));
        Assert.Equal(EchoBody("GET", "/next"), (await client.ReadResponseAsync(timeout: Soon)).BodyText);
    }

    [Fact]
    public async Task ClientResettingMidRequestBody_TheAppConnectionIsNotReusedForAnotherClient()
    {
        await using var app = FakeApp.Start();
        await using var solo = await SoloSidecar.StartAsync(app.Port);

        // 1: a client sends the head and 10 of 100 body bytes, then its connection is reset.
        var first = await RawClient.ConnectAsync(solo.Port);
        await first.SendAsync($"POST /upload HTTP/1.1\r\nHost: app.test\r\nx-shard-key: k1\r\nContent-Length: 100\r\n\r\n{new string('a', 10)}");
        await Task.Delay(300); // the head and the 10 bytes reached the app, which waits for 90 more
        first.Reset();
        await Task.Delay(300);

        // 2: another client's request must not be appended to the first one's body on that app connection.
        using var second = await RawClient.ConnectAsync(solo.Port);
        await second.SendAsync(Get("/next"));
        var response = await second.ReadResponseAsync(timeout: Soon);
        Assert.Equal(200, response.Status);
        Assert.Equal(EchoBody("GET", "/next"), response.BodyText);
        var seen = await app.NextRequestAsync();
        Assert.Equal("/next", seen.Target);
        Assert.Equal(0, seen.Index);
    }

    [Fact]
    public async Task ResponseHeadersTimeout_The504SaysConnectionClose_AndTheConnectionCloses_EvenWithARequestPipelinedBehind()
    {
        await using var app = FakeApp.Start(async (request, connection) =>
        {
            await connection.WaitForCloseAsync(TimeSpan.FromSeconds(20)); // never answers
            connection.CloseAfterResponse = true;
        });
        await using var solo = await SoloSidecar.StartAsync(app.Port, new Dictionary<string, string?> { ["Sidecar:ResponseHeadersTimeout"] = "00:00:01" });
        using var client = await RawClient.ConnectAsync(solo.Port);

        // The timeout spends the connection's cancellation: it cannot serve another request, so it must say it closes
        // (it used to answer as if kept alive, then drop the next request unanswered).
        await client.SendAsync(Get("/slow") + Get("/next"));
        var timedOut = await client.ReadResponseAsync(timeout: Soon);
        Assert.Equal(504, timedOut.Status);
        Assert.Equal("close", timedOut.Single("connection"));
        Assert.True(await client.ClosesAsync(Soon), "the connection stayed open after a 504 that said it closes");
        Assert.Equal("/slow", (await app.NextRequestAsync()).Target);
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nX-A: one\nX-Injected: 1\r\nContent-Length: 2\r\n\r\nok")] // a bare LF: a lenient client sees two fields
    [InlineData("HTTP/1.1 200 OK\r\nX-A: one\rX-Injected: 1\r\nContent-Length: 2\r\n\r\nok")] // a bare CR
    [InlineData("HTTP/1.1 200 OK\r\nX-A: one\0X-Injected: 1\r\nContent-Length: 2\r\n\r\nok")] // NUL
    [InlineData("HTTP/1.1 200 OK\nX-Injected: 1\r\nContent-Length: 2\r\n\r\nok")] // a bare LF in the status line
    public async Task AppResponseHeadWithCrLfOrNulInALine_IsNotPassedOn_But502_AndTheConnectionGoesOn(string head)
    {
        // RFC 9110 §5.5: a recipient of CR, LF or NUL in a field value must reject the message or replace them (an app
        // reflecting input into a header would otherwise let it split the response for lenient clients and proxies).
        await using var app = FakeApp.Start((request, connection) =>
            request.Target == "/reflect" ? connection.SendAsync(head) : FakeApp.EchoAsync(request, connection));
        await using var solo = await SoloSidecar.StartAsync(app.Port);
        using var client = await RawClient.ConnectAsync(solo.Port);

        await client.SendAsync(Get("/reflect"));
        var response = await client.ReadResponseAsync(timeout: Soon);
        Assert.Equal(502, response.Status);
        Assert.DoesNotContain("X-Injected", response.Head, StringComparison.Ordinal);

        await client.SendAsync(Get("/next"));
        Assert.Equal(EchoBody("GET", "/next"), (await client.ReadResponseAsync(timeout: Soon)).BodyText);
    }

    /// <summary>Sends <paramref name="length"/> body bytes, or until the sidecar closes the connection (the rest is not wanted).</summary>
    private static Task UploadUntilClosedAsync(RawClient client, int length) => Task.Run(async () =>
    {
        var chunk = new byte[64 * 1024];
        try
        {
            for (var sent = 0; sent < length; sent += chunk.Length)
            {
                await client.SendAsync(chunk);
            }
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException or ObjectDisposedException)
        {
        }
    });

    [Fact]
    public async Task AppAnsweringEarly_AndClosing_WhileTheBodyIsStillComing_ItsAnswerReachesTheClient()
    {
        // An app that refuses a large upload from its head (413, 401...) answers and closes without reading the body: the
        // sidecar's send then fails, but the app's answer is what the client must see (the full path's HTTP client reads
        // the response while it sends), not a 502.
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(8);
        var appTask = Task.Run(async () =>
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            using var socket = await listener.AcceptAsync(timeout.Token);
            var input = new ReceiveBuffer(socket);
            await input.ReadHeadAsync(timeout.Token);
            var answer = "HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n"u8.ToArray();
            await socket.SendAsync(answer, SocketFlags.None, timeout.Token);
            await Task.Delay(100, timeout.Token);
            socket.Close(); // unread body bytes: the kernel resets the connection
        });
        await using var solo = await SoloSidecar.StartAsync(((IPEndPoint)listener.LocalEndPoint!).Port);
        using var client = await RawClient.ConnectAsync(solo.Port);

        const int Length = 16 * 1024 * 1024;
        await client.SendAsync($"PUT /upload HTTP/1.1\r\nHost: app.test\r\nx-shard-key: k1\r\nContent-Length: {Length}\r\n\r\n");
        var upload = UploadUntilClosedAsync(client, Length);

        var response = await client.ReadResponseAsync(timeout: TimeSpan.FromSeconds(15));
        await appTask;
        Assert.Equal(413, response.Status);
        Assert.Equal("too big\n", response.BodyText);
        Assert.Equal("close", response.Single("connection")); // the rest of the body was never read
        Assert.Equal("pod-0", response.Single("x-sharding-owner"));
        await upload.WaitAsync(TimeSpan.FromSeconds(15));
    }

    [Fact]
    public async Task AppAnsweringEarly_WithoutReadingTheBodyOrClosing_ItsAnswerReachesTheClientAtOnce_ThenTheConnectionsClose()
    {
        // An app that refuses an upload from its head and keeps its connection open without reading on: the client gets
        // the answer as soon as the app sent it (not a 504 once the response-headers timeout is over), and once the app has
        // taken nothing more for a few seconds the body is cut and both connections close.
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(8);
        var testDone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var appTask = Task.Run(async () =>
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(40));
            using var socket = await listener.AcceptAsync(timeout.Token);
            var input = new ReceiveBuffer(socket);
            await input.ReadHeadAsync(timeout.Token);
            await socket.SendAsync("HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\n\r\nno!\r\n"u8.ToArray(), SocketFlags.None, timeout.Token);
            await testDone.Task.WaitAsync(timeout.Token); // holds the connection open without reading another byte
        });
        await using var solo = await SoloSidecar.StartAsync(((IPEndPoint)listener.LocalEndPoint!).Port);
        using var client = await RawClient.ConnectAsync(solo.Port);

        const int Length = 64 * 1024 * 1024;
        var watch = System.Diagnostics.Stopwatch.StartNew();
        await client.SendAsync($"PUT /upload HTTP/1.1\r\nHost: app.test\r\nx-shard-key: k1\r\nContent-Length: {Length}\r\n\r\n");
        var upload = UploadUntilClosedAsync(client, Length);

        var response = await client.ReadResponseAsync(timeout: TimeSpan.FromSeconds(5));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(4), $"the answer took {watch.Elapsed}");
        Assert.Equal(401, response.Status);
        Assert.Equal("no!\r\n", response.BodyText);
        Assert.Equal("pod-0", response.Single("x-sharding-owner"));

        // The body stalls (nobody reads it): after the stall limit both connections end, well before any timeout.
        Assert.True(await client.ClosesAsync(TimeSpan.FromSeconds(15)), "the client connection stayed open");
        await upload.WaitAsync(TimeSpan.FromSeconds(15));
        testDone.TrySetResult();
        await appTask.WaitAsync(TimeSpan.FromSeconds(5));
    }

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfour")]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nfour\r\n")] // cut at a chunk boundary, before the terminator
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\nfour")] // cut inside a chunk
    public async Task AppClosingMidBody_TheClientSeesTheConnectionCut_NotACompleteResponse(string partial)
    {
        await using var app = FakeApp.Start(async (request, connection) =>
        {
            if (request.Target == "/cut")
            {
                await connection.SendAsync(partial);
                await Task.Delay(100);
                connection.CloseAfterResponse = true;
                return;
            }

            await FakeApp.EchoAsync(request, connection);
        });
        await using var solo = await SoloSidecar.StartAsync(app.Port);
        using var client = await RawClient.ConnectAsync(solo.Port);

        // The body's framing is the client's only way to tell a cut response from a whole one: the sidecar must not end it
        // (no chunked terminator, no more bytes) and must close the connection.
        await client.SendAsync(Get("/cut"));
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var received = await client.DrainAvailableAsync(Soon); // until the connection ends (or the wait does)
        Assert.True(watch.Elapsed < Soon - TimeSpan.FromSeconds(1), $"the connection stayed open after the app cut its response: {received}");
        Assert.StartsWith("HTTP/1.1 200 OK\r\n", received, StringComparison.Ordinal);
        Assert.EndsWith(partial[(partial.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4)..], received, StringComparison.Ordinal);
        Assert.DoesNotContain("\r\n0\r\n", received, StringComparison.Ordinal);

        // A new client connection gets a new app connection, whole answers.
        using var next = await RawClient.ConnectAsync(solo.Port);
        await next.SendAsync(Get("/next"));
        Assert.Equal(EchoBody("GET", "/next"), (await next.ReadResponseAsync(timeout: Soon)).BodyText);
    }

    /// <summary>
    /// Chunked trailers follow the full path's trailer rules: the app cannot claim <c>x-sharding-*</c>, hop-by-hop fields
    /// stay behind, the rest passes as sent, whether the trailer section comes in one read or byte by byte.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AppTrailers_PassOn_ExceptSidecarAndHopByHopFields(bool byteByByte)
    {
        const string Head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n2\r\nok\r\n";
        const string Trailers = "0\r\nx-sharding-owner: evil\r\nX-Sharding-Generation: 99\r\nkeep-alive: timeout=5\r\nx-checksum: 42\r\nno-colon-line\r\nconnection: close\r\n\r\n";
        await using var app = FakeApp.Start(async (request, connection) =>
        {
            if (request.Target != "/trailers")
            {
                await FakeApp.EchoAsync(request, connection);
                return;
            }

            if (!byteByByte)
            {
                await connection.SendAsync(Head + Trailers);
                return;
            }

            await connection.SendAsync(Head);
            foreach (var b in Encoding.Latin1.GetBytes(Trailers))
            {
                await connection.SendAsync(new[] { b });
                await Task.Delay(2);
            }
        });
        await using var solo = await SoloSidecar.StartAsync(app.Port);
        using var client = await RawClient.ConnectAsync(solo.Port);

        await client.SendAsync(Get("/trailers", extra: "TE: trailers\r\n"));
        var response = await client.ReadResponseAsync(timeout: Soon);
        Assert.Equal("ok", response.BodyText);
        Assert.Equal(["x-checksum: 42"], response.Trailers.Select(static t => $"{t.Key}: {t.Value}"));
        Assert.Equal("pod-0", response.Single("x-sharding-owner"));

        // The connection is in step after it: the trailer section was consumed whole, nothing more.
        await client.SendAsync(Get("/next"));
        Assert.Equal(EchoBody("GET", "/next"), (await client.ReadResponseAsync(timeout: Soon)).BodyText);
    }

    /// <summary>A trailer section of several KiB split across reads keeps every byte while the held copy grows.</summary>
    [Fact]
    public async Task AppTrailersLargerThanTheFirstHeldBuffer_SplitAcrossReads_PassWhole()
    {
        var first = "x-first: " + new string('a', 600) + "\r\n";
        var second = "x-second: " + new string('b', 3000) + "\r\n";
        await using var app = FakeApp.Start(async (request, connection) =>
        {
            await connection.SendAsync("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n" + first);
            await Task.Delay(100);
            await connection.SendAsync(second + "\r\n");
        });
        await using var solo = await SoloSidecar.StartAsync(app.Port);
        using var client = await RawClient.ConnectAsync(solo.Port);

        await client.SendAsync(Get("/trailers", extra: "TE: trailers\r\n"));
        var response = await client.ReadResponseAsync(timeout: Soon);
        Assert.Equal("ok", response.BodyText);
        Assert.Equal([new string('a', 600), new string('b', 3000)], response.Trailers.Select(static t => t.Value));
    }

    [Fact]
    public async Task ClientThatStopsReading_IsCutOnceTheMinimumResponseDataRatesGracePeriodIsOver_AndTheAppConnectionWithIt()
    {
        // Far more than the socket buffers between the app, the sidecar and the client can hold.
        const long Total = 256L * 1024 * 1024;
        var appOutcome = new TaskCompletionSource<(long Sent, bool Cut)>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = FakeApp.Start(async (_, connection) =>
        {
            var block = new byte[64 * 1024];
            long sent = 0;
            try
            {
                await connection.SendAsync($"HTTP/1.1 200 OK\r\nContent-Length: {Total}\r\n\r\n");
                while (sent < Total)
                {
                    await connection.SendAsync(block);
                    sent += block.Length;
                }

                appOutcome.TrySetResult((sent, false));
            }
            catch (Exception ex) when (ex is SocketException or OperationCanceledException)
            {
                appOutcome.TrySetResult((sent, ex is SocketException));
            }
        });
        await using var solo = await SoloSidecar.StartAsync(app.Port, new Dictionary<string, string?>
        {
            ["Sidecar:MinResponseDataRate"] = "1000000",
            ["Sidecar:MinResponseDataRateGracePeriod"] = "00:00:02",
        });
        using var client = await RawClient.ConnectAsync(solo.Port);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        await client.SendAsync(Get("/big"));

        // The client reads nothing: once a flush has waited the grace period, the sidecar closes both connections, so the
        // app's sends fail (before the fix the sidecar waited for the client for good, and so did the app).
        var (sent, cut) = await appOutcome.Task.WaitAsync(TimeSpan.FromSeconds(25));
        Assert.True(cut, $"the app's sends ended without a failure after {sent} bytes");
        Assert.True(sent < Total / 2, $"the app sent {sent} bytes");
        Assert.True(clock.Elapsed >= TimeSpan.FromSeconds(1.5), $"cut after {clock.Elapsed}, before the grace period");
        Assert.True(await client.DrainUntilClosedAsync(TimeSpan.FromSeconds(10)) < Total, "the client's connection was not cut");
    }
}

/// <summary>Keys with non-ASCII characters on the fast path, which reads the head as Latin-1 (a char per byte).</summary>
public sealed class FastPathKeyEncodingTests(ClusterFixture fixture) : IClassFixture<ClusterFixture>
{
    private Cluster Cluster => fixture.Cluster;

    [Theory]
    [InlineData("x-shard-key: ")]
    [InlineData("Cookie: theme=dark; sid=")]
    public async Task NonAsciiKeyInAHeaderOrCookie_IsHashedAsItsUtf8Bytes_AndGoesToTheOwnerTheFullPathAndEnvoyPick(string prefix)
    {
        // A UTF-8 key read byte per char would hash differently: find one whose misread owner differs from its owner.
        string key = "";
        for (var i = 0; i < 1000; i++)
        {
            key = $"ключ-{i}";
            if (Cluster.OwnerOf(key) != Cluster.OwnerOf(Encoding.Latin1.GetString(Encoding.UTF8.GetBytes(key))))
            {
                break;
            }
        }

        var owner = Cluster.OwnerOf(key); // the contract: xxHash64 of the key's UTF-8 bytes (what Envoy hashes)
        Assert.NotEqual(owner, Cluster.OwnerOf(Encoding.Latin1.GetString(Encoding.UTF8.GetBytes(key))));
        using var counters = new FastPathCounters(Cluster.Sidecars[0]);
        using var client = await RawClient.ConnectAsync(Cluster.Sidecars[0].Port);
        await client.SendAsync(Encoding.UTF8.GetBytes($"GET /utf8 HTTP/1.1\r\nHost: sidecar.test\r\n{prefix}{key}\r\n\r\n"));
        var response = await client.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        Assert.Equal(owner, response.Single("x-sharding-owner"));
        Assert.StartsWith($"{owner}|", Encoding.UTF8.GetString(response.Body), StringComparison.Ordinal);
        await counters.WaitForAsync(static c => c.Served == 1, "1 served on the fast path");
    }
}

using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Sharding.Metrics;
using Sharding.Sidecar.Tests.Infrastructure;

namespace Sharding.Sidecar.Tests.FastPath;

/// <summary>
/// The HTTP/1.1 fast path end to end against a raw-socket app: header rules on both sides, pipelining, request bodies,
/// every response framing, interim responses, stale keep-alive connections, a down app and a client that goes away.
/// Every request here is for a key the sidecar owns (it is alone in its map).
/// </summary>
public sealed class FastPathRelayTests
{
    private static readonly TimeSpan Soon = TimeSpan.FromSeconds(5);

    private static string Get(string target, string key = "k1", string extra = "") =>
        $"GET {target} HTTP/1.1\r\nHost: app.test\r\nx-shard-key: {key}\r\n{extra}\r\n";

    private static string Post(string target, string body, string key = "k1") =>
        $"POST {target} HTTP/1.1\r\nHost: app.test\r\nx-shard-key: {key}\r\nContent-Length: {Encoding.UTF8.GetByteCount(body)}\r\n\r\n{body}";

    private static string Sha(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    private static string EchoBody(string method, string target, string body = "") => $"{method} {target} {Encoding.UTF8.GetByteCount(body)} {Sha(body)}";

    private static void AssertFields(IEnumerable<string> expected, IEnumerable<KeyValuePair<string, string>> actual, string context)
    {
        var want = expected.Order(StringComparer.Ordinal).ToList();
        var got = actual.Select(static h => $"{h.Key}: {h.Value}").Order(StringComparer.Ordinal).ToList();
        Assert.True(want.SequenceEqual(got), $"expected fields:\n  {string.Join("\n  ", want)}\nbut got:\n  {string.Join("\n  ", got)}\nin:\n{context}");
    }

    [Fact]
    public async Task OwnedKeyGet_IsRelayed_WithTheSidecarsHeaderRulesBothWays()
    {
        await using var app = FakeApp.Start((request, connection) => connection.SendAsync(
            "HTTP/1.1 200 OK\r\n"
            + "Content-Type: text/plain\r\n"
            + "Content-Length: 5\r\n"
            + "Connection: keep-alive, X-App-Hop\r\n"
            + "X-App-Hop: 1\r\n"
            + "Keep-Alive: timeout=5\r\n"
            + "Proxy-Connection: keep-alive\r\n"
            + "X-Sharding-Owner: pod-evil\r\n"
            + "x-sharding-generation: 999\r\n"
            + "X-App: yes\r\n"
            + "\r\n"
            + "hello"));
        await using var solo = await SoloSidecar.StartAsync(app.Port);
        using var counters = new FastPathCounters(solo.Sidecar);
        using var client = await RawClient.ConnectAsync(solo.Port);

        await client.SendAsync(
            "GET /items/7?x=1 HTTP/1.1\r\n"
            + "Host: shop.example:8080\r\n"
            + "X-Shard-Key: k1\r\n"
            + "Connection: keep-alive, X-Hop-A\r\n"
            + "X-Hop-A: secret\r\n"
            + "Keep-Alive: timeout=5\r\n"
            + "Proxy-Connection: keep-alive\r\n"
            + "TE: gzip, trailers\r\n"
            + "X-Sharding-Owner: pod-evil\r\n"
            + "X-Sharding-Generation: 999\r\n"
            + "x-sharding-key: someone-else\r\n"
            + "Accept: text/plain\r\n"
            + "User-Agent: raw\r\n"
            + "\r\n");
        var response = await client.ReadResponseAsync();
        var seen = await app.NextRequestAsync();

        // What the app saw: the client's end-to-end headers, the sidecar's own, nothing hop-by-hop or spoofed.
        Assert.Equal("GET /items/7?x=1 HTTP/1.1", seen.RequestLine);
        AssertFields(
            [
                "Host: shop.example:8080", "X-Shard-Key: k1", "Accept: text/plain", "User-Agent: raw", "te: trailers",
                "x-forwarded-for: 127.0.0.1", "x-forwarded-proto: http", "x-forwarded-host: shop.example:8080",
                "x-sharding-generation: 1", "x-sharding-owner: pod-0",
            ],
            seen.Headers,
            seen.Head);
        Assert.Equal(["Host", "X-Shard-Key", "Accept", "User-Agent"], seen.Headers.Select(static h => h.Key).Where(static k => !k.StartsWith('x') && k != "te")); // the client's order kept

        // What the client saw: the app's end-to-end headers and the sidecar's, none of the app's hop-by-hop or x-sharding-*.
        Assert.Equal("HTTP/1.1 200 OK", response.StatusLine);
        AssertFields(
            ["Content-Type: text/plain", "Content-Length: 5", "X-App: yes", "x-sharding-owner: pod-0", "x-sharding-generation: 1"],
            response.Headers,
            response.Head);
        Assert.Equal("hello", response.BodyText);

        // Second request on the same connection: an existing x-forwarded-* is extended or kept; TE without trailers is dropped.
        await client.SendAsync(
            "GET /second HTTP/1.1\r\nHost: a.test\r\nx-shard-key: k1\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n"
            + "X-Forwarded-Host: public.example\r\nTE: gzip\r\n\r\n");
        var second = await client.ReadResponseAsync();
        var seen2 = await app.NextRequestAsync();
        Assert.Equal(200, second.Status);
        Assert.Equal("hello", second.BodyText);
        Assert.Equal(seen.Connection, seen2.Connection); // the kept-alive app connection was reused
        AssertFields(
            [
                "Host: a.test", "x-shard-key: k1", "X-Forwarded-Proto: https", "X-Forwarded-Host: public.example",
                "x-forwarded-for: 10.0.0.1, 127.0.0.1", "x-sharding-generation: 1", "x-sharding-owner: pod-0",
            ],
            seen2.Headers,
            seen2.Head);

        await counters.WaitForAsync(static c => c.Served == 2, "2 served");
        Assert.Equal(0, counters.TotalHandovers);

        // The counter is exposed on the admin port.
        using var http = new HttpClient();
        var metrics = await http.GetStringAsync($"http://127.0.0.1:{solo.Sidecar.AdminPort}/metrics");
        Assert.Contains("# TYPE sharding_sidecar_fast_path_requests_total counter", metrics, StringComparison.Ordinal);
        Assert.Matches(@"(?m)^sharding_sidecar_fast_path_requests_total [1-9]\d*$", metrics);
    }

    /// <summary>
    /// x-forwarded-* fields the client names in Connection are hop-by-hop (RFC 9110 §7.6.1): dropped, so the app gets the
    /// sidecar's own values, not nothing (proto, host) nor an extended client value (for). On the fast path, and on the full
    /// path that Kestrel serves when the fast path hands a request over (an event-stream request here).
    /// </summary>
    [Theory]
    [InlineData("")]
    [InlineData("Accept: text/event-stream\r\n")]
    public async Task ForwardedFieldsTheClientNamesInConnection_AreReplacedByTheSidecars(string extra)
    {
        await using var app = FakeApp.Start();
        await using var solo = await SoloSidecar.StartAsync(app.Port);
        using var client = await RawClient.ConnectAsync(solo.Port);
        await client.SendAsync(
            "GET /a HTTP/1.1\r\nHost: a.test\r\nx-shard-key: k1\r\nConnection: x-forwarded-for, X-Forwarded-Proto,x-forwarded-host\r\n"
            + "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n" + extra + "\r\n");
        Assert.Equal(200, (await client.ReadResponseAsync()).Status);
        var seen = await app.NextRequestAsync();
        Assert.Equal("127.0.0.1", seen.Header("x-forwarded-for"));
        Assert.Equal("http", seen.Header("x-forwarded-proto"));
        Assert.Equal("a.test", seen.Header("x-forwarded-host"));
    }

    [Fact]
    public async Task PipelinedRequests_InOneWrite_AreAnsweredInOrderOnOneConnection()
    {
        await using var app = FakeApp.Start();
        await using var solo = await SoloSidecar.StartAsync(app.Port);
        using var counters = new FastPathCounters(solo.Sidecar);
        using var client = await RawClient.ConnectAsync(solo.Port);

        await client.SendAsync(Get("/one") + Post("/two", "xyz") + Get("/three", key: "k2"));
        var first = await client.ReadResponseAsync();
        var second = await client.ReadResponseAsync();
        var third = await client.ReadResponseAsync();

        Assert.Equal((200, EchoBody("GET", "/one")), (first.Status, first.BodyText));
        Assert.Equal((200, EchoBody("POST", "/two", "xyz")), (second.Status, second.BodyText));
        Assert.Equal((200, EchoBody("GET", "/three")), (third.Status, third.BodyText));
        var seen = new[] { await app.NextRequestAsync(), await app.NextRequestAsync(), await app.NextRequestAsync() };
        Assert.Equal(["/one", "/two", "/three"], seen.Select(static r => r.Target));
        Assert.Equal([0, 1, 2], seen.Select(static r => r.Index)); // one app connection, in order
        Assert.Equal(1, app.Connections);
        await counters.WaitForAsync(static c => c.Served == 3, "3 served");
        Assert.Equal(0, counters.TotalHandovers);
    }

    [Fact]
    public async Task LargeResponses_ToAClientThatReadsLate_ArriveWholeAndInOrder_WithTheNextResponseAfterThem()
    {
        // The responses go straight to the client's socket while it takes them, and through the connection's output pipe
        // once it stops: the bytes of both ways, and the pipelined answers, must come out in order.
        const int Size = 8 * 1024 * 1024;
        static byte Expected(long i) => (byte)(i * 31 % 251);
        await using var app = FakeApp.Start(async (request, connection) =>
        {
            if (request.Target != "/big")
            {
                await FakeApp.EchoAsync(request, connection);
                return;
            }

            await connection.SendAsync($"HTTP/1.1 200 OK\r\nContent-Length: {Size}\r\n\r\n");
            var chunk = new byte[64 * 1024];
            for (var offset = 0; offset < Size; offset += chunk.Length)
            {
                for (var i = 0; i < chunk.Length; i++)
                {
                    chunk[i] = Expected(offset + i);
                }

                await connection.SendAsync(chunk);
            }
        });
        await using var solo = await SoloSidecar.StartAsync(app.Port);
        using var counters = new FastPathCounters(solo.Sidecar);
        using var client = await RawClient.ConnectAsync(solo.Port);

        await client.SendAsync(Get("/small") + Get("/big") + Get("/after") + Get("/big") + Get("/last"));
        await Task.Delay(500); // the sidecar's sends fill the kernel's buffers, and its output queues

        for (var round = 0; round < 2; round++)
        {
            var small = await client.ReadResponseAsync();
            Assert.Equal(EchoBody("GET", round == 0 ? "/small" : "/after"), small.BodyText);
            var big = await client.ReadResponseAsync(timeout: TimeSpan.FromSeconds(60));
            Assert.Equal(Size, big.Body.Length);
            for (var i = 0; i < Size; i++)
            {
                if (big.Body[i] != Expected(i))
                {
                    Assert.Fail($"byte {i} of the large response {round + 1} is {big.Body[i]}, not {Expected(i)}");
                }
            }
        }

        var last = await client.ReadResponseAsync();
        Assert.Equal(EchoBody("GET", "/last"), last.BodyText);
        await counters.WaitForAsync(static c => c.Served == 5, "5 served");
        Assert.Equal(0, counters.TotalHandovers);
    }

    [Fact]
    public async Task RequestBodies_WithContentLength_ArriveIntact_SmallLargeAndEmpty()
    {
        await using var app = FakeApp.Start();
        await using var solo = await SoloSidecar.StartAsync(app.Port);
        using var counters = new FastPathCounters(solo.Sidecar);
        using var client = await RawClient.ConnectAsync(solo.Port);

        await client.SendAsync(Post("/small", "hello world"));
        var small = await client.ReadResponseAsync();
        Assert.Equal(EchoBody("POST", "/small", "hello world"), small.BodyText);
        Assert.Equal("hello world", Encoding.UTF8.GetString((await app.NextRequestAsync()).Body));

        // ~5 MB, streamed in 64 KiB writes after the head (the sidecar must not buffer it whole or cut it).
        var large = new byte[(5 * 1024 * 1024) + 123];
        new Random(7).NextBytes(large);
        await client.SendAsync($"PUT /large HTTP/1.1\r\nHost: app.test\r\nx-shard-key: k1\r\nContent-Length: {large.Length}\r\n\r\n");
        for (var offset = 0; offset < large.Length; offset += 64 * 1024)
        {
            await client.SendAsync(large.AsMemory(offset, Math.Min(64 * 1024, large.Length - offset)));
        }

        var largeResponse = await client.ReadResponseAsync(timeout: TimeSpan.FromSeconds(60));
        var sha = Convert.ToHexStringLower(SHA256.HashData(large));
        Assert.Equal($"PUT /large {large.Length} {sha}", largeResponse.BodyText);
        var seenLarge = await app.NextRequestAsync();
        Assert.Equal(large.Length.ToString(CultureInfo.InvariantCulture), seenLarge.Header("content-length"));

        await client.SendAsync("POST /empty HTTP/1.1\r\nHost: app.test\r\nx-shard-key: k1\r\nContent-Length: 0\r\n\r\n");
        var empty = await client.ReadResponseAsync();
        Assert.Equal(EchoBody("POST", "/empty"), empty.BodyText);
        var seenEmpty = await app.NextRequestAsync();
        Assert.Equal("0", seenEmpty.Header("content-length"));
        Assert.Empty(seenEmpty.Body);

        // Still in sync afterwards.
        await client.SendAsync(Get("/after"));
        Assert.Equal(EchoBody("GET", "/after"), (await client.ReadResponseAsync()).BodyText);
        await counters.WaitForAsync(static c => c.Served == 4, "4 served");
        Assert.Equal(0, counters.TotalHandovers);
        Assert.Equal(1, app.Connections);
    }

    private const string ChunkedBody = "5\r\nhello\r\n6;ext=\"v\"\r\n world\r\nA\r\n0123456789\r\n0\r\nx-checksum: abc\r\nx-count: 3\r\n\r\n";

    /// <summary>The app's answers by target: each framing the fast path must pass through as it is.</summary>
    private static async Task FramingAppAsync(FakeRequest request, FakeAppConnection connection)
    {
        switch (request.Target)
        {
            case "/length":
                await connection.SendAsync("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nlength");
                break;
            case "/chunked":
                // In 3-byte pieces, so sizes, extensions, CRLFs and trailers are split across the sidecar's reads.
                var bytes = Encoding.ASCII.GetBytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum, x-count\r\n\r\n" + ChunkedBody);
                for (var i = 0; i < bytes.Length; i += 3)
                {
                    await connection.SendAsync(bytes.AsMemory(i, Math.Min(3, bytes.Length - i)));
                    await Task.Delay(2);
                }

                break;
            case "/head":
                await connection.SendAsync("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n");
                break;
            case "/204":
                await connection.SendAsync("HTTP/1.1 204 No Content\r\nX-Done: 1\r\n\r\n");
                break;
            case "/304":
                await connection.SendAsync("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 10\r\n\r\n");
                break;
            case "/interim":
                await connection.SendAsync("HTTP/1.1 100 Continue\r\n\r\n");
                await Task.Delay(20);
                await connection.SendAsync("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal");
                break;
            case "/close":
                await connection.SendAsync("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ");
                await Task.Delay(50);
                await connection.SendAsync("the close");
                connection.CloseAfterResponse = true;
                break;
            case "/http10":
                await connection.SendAsync("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold style");
                connection.CloseAfterResponse = true;
                break;
            default:
                await connection.SendAsync("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                break;
        }
    }

    [Theory]
    [InlineData("length")]
    [InlineData("chunked")]
    [InlineData("head")]
    [InlineData("204")]
    [InlineData("304")]
    [InlineData("interim")]
    public async Task ResponseFramings_PassThroughExactly_AndTheConnectionStaysInSync(string framing)
    {
        await using var app = FakeApp.Start(FramingAppAsync);
        await using var solo = await SoloSidecar.StartAsync(app.Port);
        using var counters = new FastPathCounters(solo.Sidecar);
        using var client = await RawClient.ConnectAsync(solo.Port);

        var method = framing == "head" ? "HEAD" : "GET";
        await client.SendAsync($"{method} /{framing} HTTP/1.1\r\nHost: app.test\r\nx-shard-key: k1\r\n\r\n");
        var response = await client.ReadResponseAsync(headRequest: framing == "head");
        Assert.Equal("pod-0", response.Single("x-sharding-owner"));
        Assert.Equal("1", response.Single("x-sharding-generation"));
        Assert.False(response.Has("connection"), response.Head);
        switch (framing)
        {
            case "length":
                Assert.Equal("HTTP/1.1 200 OK", response.StatusLine);
                Assert.Equal("6", response.Single("content-length"));
                Assert.Equal("length", response.BodyText);
                break;
            case "chunked":
                Assert.Equal("chunked", response.Single("transfer-encoding"));
                Assert.Equal("x-checksum, x-count", response.Single("trailer"));
                Assert.Null(response.Single("content-length"));
                Assert.Equal(ChunkedBody, Encoding.Latin1.GetString(response.RawBody)); // sizes, extension and trailers verbatim
                Assert.Equal("hello world0123456789", response.BodyText);
                Assert.Equal(["x-checksum: abc", "x-count: 3"], response.Trailers.Select(static t => $"{t.Key}: {t.Value}"));
                break;
            case "head":
                Assert.Equal("HTTP/1.1 200 OK", response.StatusLine);
                Assert.Equal("1234", response.Single("content-length"));
                Assert.Empty(response.RawBody);
                break;
            case "204":
                Assert.Equal("HTTP/1.1 204 No Content", response.StatusLine);
                Assert.Equal("1", response.Single("x-done"));
                break;
            case "304":
                Assert.Equal("HTTP/1.1 304 Not Modified", response.StatusLine);
                Assert.Equal("\"v1\"", response.Single("etag"));
                Assert.Equal("10", response.Single("content-length"));
                break;
            case "interim":
                // The app's 100 and 103 are dropped (as the full path's HTTP client does); the final response arrives.
                Assert.Equal("HTTP/1.1 200 OK", response.StatusLine);
                Assert.Equal("final", response.BodyText);
                Assert.False(response.Has("link"), response.Head);
                break;
        }

        // The next request on the same connection is answered (the sidecar did not wait for or swallow body bytes).
        await client.SendAsync(Get("/length"));
        var next = await client.ReadResponseAsync(timeout: TimeSpan.FromSeconds(10));
        Assert.Equal("HTTP/1.1 200 OK", next.StatusLine);
        Assert.Equal("length", next.BodyText);
        Assert.Equal("", await client.DrainAvailableAsync(TimeSpan.FromMilliseconds(200)));
        await counters.WaitForAsync(static c => c.Served == 2, "2 served");
        Assert.Equal(0, counters.TotalHandovers);
    }

    [Theory]
    [InlineData("/close", "until the close")]
    [InlineData("/http10", "old style")]
    public async Task CloseDelimitedResponse_ReachesTheClientWhole_ThenTheConnectionCloses(string target, string body)
    {
        await using var app = FakeApp.Start(FramingAppAsync);
        await using var solo = await SoloSidecar.StartAsync(app.Port);
        using var counters = new FastPathCounters(solo.Sidecar);
        using var client = await RawClient.ConnectAsync(solo.Port);

        await client.SendAsync(Get(target));
        var response = await client.ReadResponseAsync();
        Assert.Equal("HTTP/1.1 200 OK", response.StatusLine); // an HTTP/1.0 status line goes on as HTTP/1.1
        Assert.True(response.EndedByClose, response.ToString());
        Assert.Equal(body, response.BodyText);
        Assert.Equal("close", response.Single("connection"));
        Assert.Null(response.Single("content-length"));
        Assert.Null(response.Single("transfer-encoding"));
        Assert.Equal("pod-0", response.Single("x-sharding-owner"));
        await counters.WaitForAsync(static c => c.Served == 1, "1 served");
    }

    [Fact]
    public async Task AppClosingItsKeptAliveConnection_RightAfterAResponse_TheNextBodilessRequestIsRetriedOnANewConnection()
    {
        await using var app = FakeApp.Start(async (request, connection) =>
        {
            await FakeApp.EchoAsync(request, connection);
            connection.CloseAfterResponse = true; // no Connection: close: the sidecar learns it only by trying
        });
        await using var solo = await SoloSidecar.StartAsync(app.Port);
        using var counters = new FastPathCounters(solo.Sidecar);
        using var client = await RawClient.ConnectAsync(solo.Port);

        for (var i = 0; i < 3; i++)
        {
            await client.SendAsync(Get($"/r{i}"));
            var response = await client.ReadResponseAsync();
            Assert.Equal(200, response.Status);
            Assert.Equal(EchoBody("GET", $"/r{i}"), response.BodyText);
            var seen = await app.NextRequestAsync();
            Assert.Equal(0, seen.Index); // each on a fresh app connection
            Assert.Equal($"/r{i}", seen.Target);
        }

        Assert.Equal(3, app.Connections);
        await counters.WaitForAsync(static c => c.Served == 3, "3 served");
        Assert.Equal(0, counters.TotalHandovers);
    }

    [Fact]
    public async Task AppClosingAnIdleKeptAliveConnection_AfterADelay_TheNextRequestSucceeds()
    {
        await using var app = FakeApp.Start(async (request, connection) =>
        {
            await FakeApp.EchoAsync(request, connection);
            _ = connection.CloseGracefullyAfterAsync(TimeSpan.FromMilliseconds(200)); // its idle timeout: FIN, no reset
        });
        await using var solo = await SoloSidecar.StartAsync(app.Port);
        using var counters = new FastPathCounters(solo.Sidecar);
        using var client = await RawClient.ConnectAsync(solo.Port);

        await client.SendAsync(Get("/first"));
        Assert.Equal(EchoBody("GET", "/first"), (await client.ReadResponseAsync()).BodyText);
        await Task.Delay(700); // the app has closed its side by now

        await client.SendAsync(Get("/second"));
        var second = await client.ReadResponseAsync();
        Assert.Equal(200, second.Status);
        Assert.Equal(EchoBody("GET", "/second"), second.BodyText);
        Assert.Equal(2, app.Connections);
        await counters.WaitForAsync(static c => c.Served == 2, "2 served");
    }

    [Fact]
    public async Task AppClosingAnIdleKeptAliveConnection_TheNextRequestWithABody_Succeeds()
    {
        await using var app = FakeApp.Start(async (request, connection) =>
        {
            await FakeApp.EchoAsync(request, connection);
            _ = connection.CloseGracefullyAfterAsync(TimeSpan.FromMilliseconds(200));
        });
        await using var solo = await SoloSidecar.StartAsync(app.Port);
        using var client = await RawClient.ConnectAsync(solo.Port);

        await client.SendAsync(Get("/first"));
        Assert.Equal(EchoBody("GET", "/first"), (await client.ReadResponseAsync()).BodyText);
        await Task.Delay(700); // the app closed the idle connection half a second ago

        await client.SendAsync(Post("/second", "payload"));
        var second = await client.ReadResponseAsync();
        Assert.True(second.Status == 200, second.ToString());
        Assert.Equal(EchoBody("POST", "/second", "payload"), second.BodyText);
    }

    [Fact]
    public async Task AppDown_OwnedKey_Is503WithRetryAfter_AndCountsAConnectHandover()
    {
        var closedPort = TestSidecar.FreePort(); // nobody listens here
        await using var solo = await SoloSidecar.StartAsync(closedPort);
        using var counters = new FastPathCounters(solo.Sidecar);
        using var client = await RawClient.ConnectAsync(solo.Port);

        await client.SendAsync(Get("/x"));
        var response = await client.ReadResponseAsync();
        Assert.Equal(503, response.Status);
        Assert.True(int.TryParse(response.Single("retry-after"), NumberStyles.None, CultureInfo.InvariantCulture, out var seconds) && seconds >= 1, response.Head);
        Assert.Equal("this pod's app is unavailable; the key is not moved to another pod, retry later\n", response.BodyText);
        Assert.Equal("pod-0", response.Single("x-sharding-owner"));
        Assert.Equal(1, counters.Handovers(SidecarMetricNames.HandoverConnect));
        Assert.Equal(0, counters.Served);
    }

    [Fact]
    public async Task AppGoingDown_MidConnection_Is503FromTheFastPath_WithRetryAfter()
    {
        var app = FakeApp.Start();
        await using var solo = await SoloSidecar.StartAsync(app.Port);
        using var counters = new FastPathCounters(solo.Sidecar);
        using var client = await RawClient.ConnectAsync(solo.Port);
        await client.SendAsync(Get("/up"));
        Assert.Equal(200, (await client.ReadResponseAsync()).Status);
        await app.DisposeAsync(); // the app process is gone: its connections closed, its port refuses

        await client.SendAsync(Get("/down"));
        var response = await client.ReadResponseAsync();
        Assert.Equal("HTTP/1.1 503 Service Unavailable", response.StatusLine);
        Assert.Equal("1", response.Single("retry-after"));
        Assert.Equal("pod-0", response.Single("x-sharding-owner"));
        Assert.Equal("1", response.Single("x-sharding-generation"));
        Assert.Equal("text/plain; charset=utf-8", response.Single("content-type"));
        Assert.Equal("this pod's app is unavailable; the key is not moved to another pod, retry later\n", response.BodyText);

        // The connection goes on: the next request gets the same answer (by the full path: the app refuses connections).
        await client.SendAsync(Get("/still-down"));
        var again = await client.ReadResponseAsync();
        Assert.Equal(503, again.Status);
        Assert.Equal("this pod's app is unavailable; the key is not moved to another pod, retry later\n", again.BodyText);
        Assert.Equal(1, counters.Handovers(SidecarMetricNames.HandoverConnect));
    }

    [Fact]
    public async Task ClientGoingAway_DuringALongPollWithoutResponseHead_ClosesTheAppConnection()
    {
        var sawClose = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = FakeApp.Start(async (request, connection) =>
        {
            sawClose.TrySetResult(await connection.WaitForCloseAsync(TimeSpan.FromSeconds(20)));
            connection.CloseAfterResponse = true;
        });
        await using var solo = await SoloSidecar.StartAsync(app.Port);
        var client = await RawClient.ConnectAsync(solo.Port);
        await client.SendAsync(Get("/long-poll"));
        await app.NextRequestAsync();
        await Task.Delay(200);

        client.Dispose();
        var closed = await sawClose.Task.WaitAsync(TimeSpan.FromSeconds(25));
        Assert.True(closed, "the app connection stayed open after the client went away");
    }

    [Fact]
    public async Task ClientGoingAway_DuringAStreamingResponse_ClosesTheAppConnectionWithinSeconds()
    {
        var sawClose = new TaskCompletionSource<TimeSpan>(TaskCreationOptions.RunContinuationsAsynchronously);
        var clientGone = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = FakeApp.Start(async (request, connection) =>
        {
            await connection.SendAsync("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n");
            var closed = await connection.WaitForCloseAsync(TimeSpan.FromSeconds(20));
            sawClose.TrySetResult(closed ? System.Diagnostics.Stopwatch.GetElapsedTime(await clientGone.Task) : TimeSpan.MaxValue);
            connection.CloseAfterResponse = true;
        });
        await using var solo = await SoloSidecar.StartAsync(app.Port);
        var client = await RawClient.ConnectAsync(solo.Port);
        await client.SendAsync(Get("/hang"));
        var head = await client.DrainAvailableAsync(TimeSpan.FromMilliseconds(500));
        Assert.StartsWith("HTTP/1.1 200 OK\r\n", head, StringComparison.Ordinal);
        Assert.EndsWith("\r\n\r\n5\r\nfirst\r\n", head, StringComparison.Ordinal);

        clientGone.SetResult(System.Diagnostics.Stopwatch.GetTimestamp());
        client.Dispose();
        var after = await sawClose.Task.WaitAsync(TimeSpan.FromSeconds(25));
        Assert.True(after < Soon, $"the app saw the close {after} after the client went away");
    }
}

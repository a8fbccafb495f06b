using System.Net;
using System.Net.WebSockets;
using System.Text;
using Sharding.Metrics;
using Sharding.Sidecar.Tests.Infrastructure;

namespace Sharding.Sidecar.Tests.FastPath;

/// <summary>
/// Requests the fast path does not take are handed to Kestrel and the full router with their bytes unread: each still gets the
/// full path's exact answer, the handover is counted with its reason, and the rest of the connection is Kestrel's.
/// </summary>
public sealed class FastPathHandoverTests(ClusterFixture fixture) : IClassFixture<ClusterFixture>
{
    private Cluster Cluster => fixture.Cluster;

    private TestSidecar Sidecar => Cluster.Sidecars[0];

    private string KeyOwnedBy(string pod, string prefix = "fp")
    {
        for (var i = 0; i < 10_000; i++)
        {
            var key = $"{prefix}-{pod}-{i}";
            if (Cluster.OwnerOf(key) == pod)
            {
                return key;
            }
        }

        throw new InvalidOperationException("no key found");
    }

    /// <summary>What the echo app answers for a plain request it served (the sidecar added generation and owner).</summary>
    private static string Echo(string pod, string key, string requestLine, int bodyBytes) =>
        $"{pod}|{key}|{requestLine}|{bodyBytes}|x-sharding-generation,x-sharding-owner|HTTP/1.1";

    private static string Get(string target, string key) => $"GET {target} HTTP/1.1\r\nHost: sidecar.test\r\nx-shard-key: {key}\r\n\r\n";

    [Fact]
    public async Task OwnedKey_OnTheEchoApp_IsServedByTheFastPath()
    {
        using var counters = new FastPathCounters(Sidecar);
        var key = KeyOwnedBy("pod-0");
        using var client = await RawClient.ConnectAsync(Sidecar.Port);
        await client.SendAsync(Get("/fast?a=1", key));
        var response = await client.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        Assert.Equal(Echo("pod-0", key, "GET /fast?a=1", 0), response.BodyText);
        Assert.Equal("pod-0", response.Single("x-sharding-owner"));
        Assert.Equal("1", response.Single("x-sharding-generation"));
        await counters.WaitForAsync(static c => c.Served == 1, "1 served");
        Assert.Equal(0, counters.TotalHandovers);
    }

    [Fact]
    public async Task KeyOwnedByAnotherPod_IsAnsweredByItsOwner()
    {
        using var counters = new FastPathCounters(Sidecar);
        var key = KeyOwnedBy("pod-1");
        using var client = await RawClient.ConnectAsync(Sidecar.Port);
        await client.SendAsync(Get("/elsewhere", key));
        var response = await client.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        Assert.Equal(Echo("pod-1", key, "GET /elsewhere", 0), response.BodyText);
        Assert.Equal("pod-1", response.Single("x-sharding-owner"));

        // Forwarded on the fast path itself (Http1FastPathForwards is on by default), so served here, not handed over.
        await counters.WaitForAsync(static c => c.Served == 1, "1 served (forwarded)");
        Assert.Equal(0, counters.TotalHandovers);
    }

    [Fact]
    public async Task ChunkedRequestBody_IsHandedOver_AndArrivesWhole()
    {
        using var counters = new FastPathCounters(Sidecar);
        var key = KeyOwnedBy("pod-0");
        using var client = await RawClient.ConnectAsync(Sidecar.Port);
        await client.SendAsync($"POST /upload HTTP/1.1\r\nHost: sidecar.test\r\nx-shard-key: {key}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
        var response = await client.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        Assert.Equal(Echo("pod-0", key, "POST /upload", 11), response.BodyText);
        Assert.Equal("pod-0", response.Single("x-sharding-owner"));
        Assert.Equal(1, counters.Handovers(SidecarMetricNames.HandoverProtocol));
        Assert.Equal(1, counters.TotalHandovers);
        Assert.Equal(0, counters.Served);

        using var http = new HttpClient();
        var metrics = await http.GetStringAsync($"http://127.0.0.1:{Sidecar.AdminPort}/metrics");
        Assert.Contains("# TYPE sharding_sidecar_fast_path_handovers_total counter", metrics, StringComparison.Ordinal);
        Assert.Matches("(?m)^sharding_sidecar_fast_path_handovers_total\\{reason=\"protocol\"\\} [1-9]\\d*$", metrics);
    }

    [Fact]
    public async Task Expect100Continue_IsHandedOver_KestrelSends100_ThenTheAnswer()
    {
        using var counters = new FastPathCounters(Sidecar);
        var key = KeyOwnedBy("pod-0");
        using var client = await RawClient.ConnectAsync(Sidecar.Port);
        await client.SendAsync($"POST /expect HTTP/1.1\r\nHost: sidecar.test\r\nx-shard-key: {key}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
        var interim = await client.ReadResponseAsync();
        Assert.Equal("HTTP/1.1 100 Continue", interim.StatusLine);
        await client.SendAsync("hello");
        var response = await client.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        Assert.Equal(Echo("pod-0", key, "POST /expect", 5), response.BodyText);
        Assert.Equal(1, counters.Handovers(SidecarMetricNames.HandoverProtocol));
        Assert.Equal(0, counters.Served);
    }

    [Fact]
    public async Task WebSocketUpgrade_IsHandedOver_AndTheEchoWorks()
    {
        using var counters = new FastPathCounters(Sidecar);
        var key = KeyOwnedBy("pod-0");
        using var socket = new ClientWebSocket();
        socket.Options.SetRequestHeader("x-shard-key", key);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        await socket.ConnectAsync(new Uri($"ws://127.0.0.1:{Sidecar.Port}/ws"), timeout.Token);
        await socket.SendAsync(Encoding.UTF8.GetBytes("hi"), WebSocketMessageType.Text, true, timeout.Token);
        var buffer = new byte[256];
        var result = await socket.ReceiveAsync(buffer, timeout.Token);
        Assert.Equal("pod-0:hi", Encoding.UTF8.GetString(buffer, 0, result.Count));
        await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", timeout.Token);
        Assert.Equal(1, counters.Handovers(SidecarMetricNames.HandoverProtocol));
        Assert.Equal(0, counters.Served);
    }

    [Fact]
    public async Task Http2PriorKnowledge_IsHandedOver_AndServedOverHttp2()
    {
        using var counters = new FastPathCounters(Sidecar);
        var key = KeyOwnedBy("pod-0");
        using var client = Cluster.Client(http2: true);
        using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{Sidecar.Port}/h2", http2: true);
        request.Headers.Add("x-shard-key", key);
        using var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(new Version(2, 0), response.Version);
        Assert.Equal(Echo("pod-0", key, "GET /h2", 0), await response.Content.ReadAsStringAsync());
        Assert.Equal(1, counters.Handovers(SidecarMetricNames.HandoverProtocol));
        Assert.Equal(0, counters.Served);
    }

    [Fact]
    public async Task JsonBodyKeyRule_IsHandedOver_AndRoutedByTheBody()
    {
        using var counters = new FastPathCounters(Sidecar);
        var key = KeyOwnedBy("pod-0", "acc");
        var json = $"{{\"account\":{{\"id\":\"{key}\"}}}}";
        using var client = await RawClient.ConnectAsync(Sidecar.Port);
        await client.SendAsync($"POST /orders HTTP/1.1\r\nHost: sidecar.test\r\nContent-Type: application/json\r\nContent-Length: {json.Length}\r\n\r\n{json}");
        var response = await client.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        Assert.Equal(Echo("pod-0", "", "POST /orders", json.Length), response.BodyText);
        Assert.Equal("pod-0", response.Single("x-sharding-owner"));
        Assert.Equal(1, counters.Handovers(SidecarMetricNames.HandoverKey));
        Assert.Equal(0, counters.Served);
    }

    [Fact]
    public async Task NoKey_IsHandedOver_AndGetsTheFullPaths400NamingTheRules()
    {
        using var counters = new FastPathCounters(Sidecar);
        using var client = await RawClient.ConnectAsync(Sidecar.Port);
        await client.SendAsync("GET /nothing-here HTTP/1.1\r\nHost: sidecar.test\r\n\r\n");
        var response = await client.ReadResponseAsync();
        Assert.Equal(400, response.Status);
        Assert.Equal("no shard key: no rule found one (tried header:x-shard-key, path:/docs/{key}, query:tenant, cookie:sid, json:$.account.id)\n", response.BodyText);
        Assert.Equal(1, counters.Handovers(SidecarMetricNames.HandoverKey));
        Assert.Equal(0, counters.Served);
    }

    [Fact]
    public async Task HeadOver16KiB_ArrivingInParts_IsHandedOver_AndKestrelServesIt()
    {
        using var counters = new FastPathCounters(Sidecar);
        var key = KeyOwnedBy("pod-0");
        using var client = await RawClient.ConnectAsync(Sidecar.Port);
        var pad = new string('a', 20 * 1024); // over the fast path's 16 KiB, under Kestrel's 32 KiB
        var head = $"GET /big HTTP/1.1\r\nHost: sidecar.test\r\nx-shard-key: {key}\r\nx-pad: {pad}\r\n\r\n";
        await client.SendAsync(head[..(17 * 1024)]);
        await Task.Delay(300);
        await client.SendAsync(head[(17 * 1024)..]);
        var response = await client.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        Assert.Equal(Echo("pod-0", key, "GET /big", 0), response.BodyText);
        Assert.Equal(1, counters.Handovers(SidecarMetricNames.HandoverHeadSize));
        Assert.Equal(0, counters.Served);

        // Kestrel keeps the connection.
        await client.SendAsync(Get("/after-big", key));
        Assert.Equal(Echo("pod-0", key, "GET /after-big", 0), (await client.ReadResponseAsync()).BodyText);
    }

    [Fact]
    public async Task HeadOver32KiB_InOneWrite_IsAnswered431()
    {
        using var counters = new FastPathCounters(Sidecar);
        var key = KeyOwnedBy("pod-0");
        using var client = await RawClient.ConnectAsync(Sidecar.Port);
        var pad = new string('a', 40 * 1024);
        await client.SendAsync($"GET /huge HTTP/1.1\r\nHost: sidecar.test\r\nx-shard-key: {key}\r\nx-pad: {pad}\r\n\r\n");
        var response = await client.ReadResponseAsync();
        Assert.Equal(431, response.Status);
        Assert.False(response.Has("x-sharding-owner"), response.Head); // Kestrel's answer, not the app's relayed
        Assert.Equal(1, counters.Handovers(SidecarMetricNames.HandoverHeadSize));
        Assert.Equal(0, counters.Served);
    }

    [Theory]
    [InlineData(20)]
    [InlineData(40)]
    public async Task HeadOver16KiB_ArrivingWhole_AfterAPipelinedRequest_IsHandedOver(int kib)
    {
        using var counters = new FastPathCounters(Sidecar);
        var key = KeyOwnedBy("pod-0");
        using var client = await RawClient.ConnectAsync(Sidecar.Port);

        // While the fast path relays the first request, the whole second head lands in the connection's buffer.
        var pad = new string('a', kib * 1024);
        await client.SendAsync(Get("/first", key) + $"GET /whole HTTP/1.1\r\nHost: sidecar.test\r\nx-shard-key: {key}\r\nx-pad: {pad}\r\n\r\n");
        Assert.Equal(Echo("pod-0", key, "GET /first", 0), (await client.ReadResponseAsync()).BodyText);
        var response = await client.ReadResponseAsync();
        if (kib < 32)
        {
            Assert.Equal(Echo("pod-0", key, "GET /whole", 0), response.BodyText);
        }
        else
        {
            Assert.Equal(431, response.Status);
            Assert.False(response.Has("x-sharding-owner"), response.Head); // Kestrel's answer, not the app's relayed
        }

        Assert.True(counters.Handovers(SidecarMetricNames.HandoverHeadSize) == 1, counters.Describe());
        Assert.Equal(1, counters.Served);
    }

    [Fact]
    public async Task HeadArrivingInParts_ThatDoesNotQualify_IsHandedOverFromItsFirstByte()
    {
        using var counters = new FastPathCounters(Sidecar);
        var key = KeyOwnedBy("pod-2");
        using var client = await RawClient.ConnectAsync(Sidecar.Port);
        var request = $"POST /split HTTP/1.1\r\nHost: sidecar.test\r\nx-shard-key: {key}\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n";

        // The fast path sees an incomplete head first (it examined those bytes), then the rest: Kestrel must still get all of it.
        await client.SendAsync(request[..20]);
        await Task.Delay(300);
        await client.SendAsync(request[20..]);
        var response = await client.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        Assert.Equal(Echo("pod-2", key, "POST /split", 4), response.BodyText);
        Assert.Equal("pod-2", response.Single("x-sharding-owner"));
        Assert.Equal(1, counters.Handovers(SidecarMetricNames.HandoverProtocol));
        Assert.Equal(0, counters.Served);
    }

    [Fact]
    public async Task HeadArrivingInParts_ThatQualifies_IsServedByTheFastPath()
    {
        using var counters = new FastPathCounters(Sidecar);
        var key = KeyOwnedBy("pod-0");
        using var client = await RawClient.ConnectAsync(Sidecar.Port);
        var head = Get("/parts", key);
        for (var i = 0; i < head.Length; i += 7)
        {
            await client.SendAsync(head.Substring(i, Math.Min(7, head.Length - i)));
            await Task.Delay(20);
        }

        var response = await client.ReadResponseAsync();
        Assert.Equal(Echo("pod-0", key, "GET /parts", 0), response.BodyText);
        await counters.WaitForAsync(static c => c.Served == 1, "1 served");
        Assert.Equal(0, counters.TotalHandovers);
    }

    [Fact]
    public async Task HandoverMidConnection_KestrelTakesOverFromTheExactByte()
    {
        using var counters = new FastPathCounters(Sidecar);
        var mine = KeyOwnedBy("pod-0");
        var theirs = KeyOwnedBy("pod-1");
        using var client = await RawClient.ConnectAsync(Sidecar.Port);

        // 1: fast path.
        await client.SendAsync(Get("/one", mine));
        Assert.Equal(Echo("pod-0", mine, "GET /one", 0), (await client.ReadResponseAsync()).BodyText);
        await counters.WaitForAsync(static c => c.Served == 1, "1 served");

        // 2 (does not qualify: chunked body), 3 and 4 in the same write: Kestrel must parse 2 from its first byte and go on.
        await client.SendAsync(
            $"POST /two HTTP/1.1\r\nHost: sidecar.test\r\nx-shard-key: {mine}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            + Get("/three", theirs)
            + Get("/four", mine));
        var two = await client.ReadResponseAsync();
        var three = await client.ReadResponseAsync();
        var four = await client.ReadResponseAsync();
        Assert.Equal(Echo("pod-0", mine, "POST /two", 3), two.BodyText);
        Assert.Equal(Echo("pod-1", theirs, "GET /three", 0), three.BodyText);
        Assert.Equal("pod-1", three.Single("x-sharding-owner"));
        Assert.Equal(Echo("pod-0", mine, "GET /four", 0), four.BodyText);

        // 5: later, on its own.
        await client.SendAsync(Get("/five", mine));
        Assert.Equal(Echo("pod-0", mine, "GET /five", 0), (await client.ReadResponseAsync()).BodyText);

        Assert.Equal(1, counters.Served); // the connection is Kestrel's after the handover
        Assert.Equal(1, counters.Handovers(SidecarMetricNames.HandoverProtocol));
        Assert.Equal(1, counters.TotalHandovers);
    }

    [Fact]
    public async Task ClientGoingAway_DuringAnEchoAppResponse_AbortsTheAppsRequest()
    {
        var key = KeyOwnedBy("pod-0");
        var client = await RawClient.ConnectAsync(Sidecar.Port);
        await client.SendAsync(Get("/hang", key));
        var head = await client.ReadResponseHeadOnlyAsync();
        Assert.StartsWith("HTTP/1.1 200 OK\r\n", head, StringComparison.Ordinal);
        Assert.Contains("x-sharding-owner: pod-0\r\n", head, StringComparison.Ordinal);
        client.Dispose();
        await Cluster.Apps[0].HangAborted.Task.WaitAsync(TimeSpan.FromSeconds(10));
    }
}

/// <summary>The option turns the fast path off: the same request is served by the full path and nothing is counted.</summary>
public sealed class FastPathOptionTests
{
    [Fact]
    public async Task Http1FastPathOff_TheFullPathServesEverything()
    {
        await using var app = await EchoApp.StartAsync("pod-0");
        await using var solo = await SoloSidecar.StartAsync(app.Port, new Dictionary<string, string?> { ["Sidecar:Http1FastPath"] = "false" });
        using var counters = new FastPathCounters(solo.Sidecar);
        using var client = await RawClient.ConnectAsync(solo.Port);
        await client.SendAsync("GET /off HTTP/1.1\r\nHost: sidecar.test\r\nx-shard-key: k\r\n\r\n");
        var response = await client.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        Assert.Equal("pod-0|k|GET /off|0|x-sharding-generation,x-sharding-owner|HTTP/1.1", response.BodyText);
        Assert.Equal("pod-0", response.Single("x-sharding-owner"));
        await Task.Delay(200);
        Assert.Equal(0, counters.Served);
        Assert.Equal(0, counters.TotalHandovers);
    }
}

using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;
using Sharding.Sidecar.Hosting;
using Sharding.Sidecar.Tests.FastPath;
using Sharding.Sidecar.Tests.Infrastructure;
using Sharding.Testing;

namespace Sharding.Sidecar.Tests.Forwarding;

/// <summary>
/// The full path's risky corners (HTTP/2 prior knowledge from the client, so the HTTP/1.1 fast path never takes them):
/// JSON-body key extraction at its limits, upstream answers the sidecar cannot pass on as they are.
/// </summary>
public sealed class FullPathEdgeCaseTests
{
    private const string JsonRules = "[\"json:$.id\"]";

    [Theory]
    [InlineData("{\"id\":\"\\ud800\"}")] // an escaped lone surrogate: valid JSON syntax, not a valid string
    [InlineData("{\"id\":\"a\\udc00b\"}")]
    public async Task JsonKeyThatIsNotValidText_Is400_NotAnUnhandledError(string json)
    {
        await using var app = await EchoApp.StartAsync("pod-0");
        await using var solo = await Solo.StartAsync(app.Port, JsonRules);
        using var client = Cluster.Client(http2: true);
        using var response = await client.PostAsync(solo.Url("/orders"), new StringContent(json, Encoding.UTF8, "application/json"));
        var body = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.StartsWith("cannot read the shard key from the JSON body:", body, StringComparison.Ordinal);
    }

    [Fact]
    public async Task JsonKeyWithInvalidUtf8_Is400_NotAnUnhandledError()
    {
        await using var app = await EchoApp.StartAsync("pod-0");
        await using var solo = await Solo.StartAsync(app.Port, JsonRules);
        using var client = Cluster.Client(http2: true);
        byte[] json = [.. "{\"id\":\"a"u8, 0xFF, 0xFE, .. "\"}"u8];
        using var content = new ByteArrayContent(json);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        using var response = await client.PostAsync(solo.Url("/orders"), content);
        var body = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.StartsWith("cannot read the shard key from the JSON body:", body, StringComparison.Ordinal);
    }

    /// <summary>
    /// A member on the key's path twice: the sidecar would route by the first, most parsers (the app's too, likely) keep the
    /// last, so the key is ambiguous: 400, whether the duplicate is in the bytes read for the key or further on in a body
    /// that streams (then the app's request is cut, never whole).
    /// </summary>
    [Theory]
    [InlineData(0)]
    [InlineData(1024 * 1024)]
    public async Task JsonBodyWithTheKeysMemberTwice_Is400_AndTheAppGetsNoWholeRequest(int padding)
    {
        await using var app = FakeApp.Start();
        await using var solo = await Solo.StartAsync(app.Port, "[\"json:$.account.id\"]");
        using var client = Cluster.Client(http2: true);
        var json = "{\"account\":{\"id\":\"a\"},\"pad\":\"" + new string('x', padding) + "\",\"account\":{\"id\":\"b\"}}";
        using var response = await client.PostAsync(solo.Url("/orders"), Json(json, contentLength: true));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("the JSON body has the member $.account more than once, so its shard key is ambiguous\n", await response.Content.ReadAsStringAsync());
        await Task.Delay(200);
        Assert.False(app.Requests.Reader.TryRead(out var received), $"the app got a whole request: {received?.RequestLine}");

        // The same body without the duplicate goes through whole.
        var single = "{\"account\":{\"id\":\"a\"},\"pad\":\"" + new string('x', padding) + "\"}";
        using var ok = await client.PostAsync(solo.Url("/orders"), Json(single, contentLength: true));
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        Assert.Equal(Encoding.UTF8.GetByteCount(single), (await app.NextRequestAsync()).Body.Length);
    }

    /// <summary>
    /// JSON body rules read JSON bodies only (or one of no stated type): a multipart upload, a form, text or bytes under a
    /// <c>json:</c> rule is never parsed. With <c>serveLocally</c> it reaches the app whole, where it used to get a 400 "not
    /// valid JSON"; with <c>reject</c> the 400 is the no-key one and says why the body was not read. A <c>+json</c> type is read.
    /// </summary>
    [Theory]
    [InlineData("multipart/form-data; boundary=b")]
    [InlineData("application/x-www-form-urlencoded")]
    [InlineData("text/plain; charset=utf-8")]
    [InlineData("application/octet-stream")]
    public async Task NonJsonBodyUnderAJsonRule_IsNotRead_TheNoKeyPolicyApplies(string contentType)
    {
        var upload = "--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.bin\"\r\n\r\n{\"id\": not json\r\n--b--\r\n";
        await using (var app = FakeApp.Start())
        await using (var solo = await Solo.StartAsync(app.Port, JsonRules, "  noKey: serveLocally\n"))
        {
            using var client = Cluster.Client(http2: true);
            using var content = new StringContent(upload);
            content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
            using var response = await client.PostAsync(solo.Url("/upload"), content);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var seen = await app.NextRequestAsync();
            Assert.Equal(upload, Encoding.UTF8.GetString(seen.Body));
            Assert.Equal(contentType, seen.Header("content-type"));
        }

        await using (var app = FakeApp.Start())
        await using (var solo = await Solo.StartAsync(app.Port, JsonRules))
        {
            using var client = Cluster.Client(http2: true);
            using var content = new StringContent(upload);
            content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
            using var response = await client.PostAsync(solo.Url("/upload"), content);
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Equal(
                $"no shard key: no rule found one (tried json:$.id; json: rules read JSON bodies only, and this body is {contentType})\n",
                await response.Content.ReadAsStringAsync());
            Assert.False(app.Requests.Reader.TryRead(out _));
        }
    }

    [Theory]
    [InlineData("application/json")]
    [InlineData("Application/JSON; charset=utf-8")]
    [InlineData("application/merge-patch+json")]
    [InlineData("text/json")]
    [InlineData(null)] // no type stated: read, so a malformed body says what is wrong with it
    public async Task JsonBodyTypes_AreRead(string? contentType)
    {
        await using var app = await EchoApp.StartAsync("pod-0");
        await using var solo = await Solo.StartAsync(app.Port, JsonRules);
        using var client = Cluster.Client(http2: true);
        using var content = new ByteArrayContent("{\"id\": tru"u8.ToArray());
        content.Headers.ContentType = contentType is null ? null : MediaTypeHeaderValue.Parse(contentType);
        using var response = await client.PostAsync(solo.Url("/orders"), content);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.StartsWith("cannot read the shard key from the JSON body: the body is not valid JSON:", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    /// <summary>
    /// A whole body of exactly <c>maxBodyBytes</c> was read whole: a key it lacks is a missing key (the no-key policy), not
    /// a key beyond the limit (413). One byte more is over the limit. Both with and without Content-Length.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task JsonBodyExactlyAtTheLimit_IsReadWhole_OneByteMoreIs413(bool contentLength)
    {
        await using var app = await EchoApp.StartAsync("pod-0");
        await using var solo = await Solo.StartAsync(app.Port, JsonRules, "  maxBodyBytes: 64\n");
        using var client = Cluster.Client(http2: true);

        var atLimit = Padded("{\"other\":\"", "\"}", 64);
        using (var response = await client.PostAsync(solo.Url("/orders"), Json(atLimit, contentLength)))
        {
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Equal("no shard key: no rule found one (tried json:$.id)\n", await response.Content.ReadAsStringAsync());
        }

        var keyLast = Padded("{\"other\":\"", "\",\"id\":\"k1\"}", 64);
        using (var response = await client.PostAsync(solo.Url("/orders"), Json(keyLast, contentLength)))
        {
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.OK, body);
            Assert.Equal("64", body.Split('|')[3]); // the app got the whole body
        }

        var overLimit = Padded("{\"other\":\"", "\"}", 65);
        using (var response = await client.PostAsync(solo.Url("/orders"), Json(overLimit, contentLength)))
        {
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
            Assert.Equal(
                "the JSON body's shard key was not found in its first 64 bytes (keys.maxBodyBytes); put the key field first or raise the limit\n",
                await response.Content.ReadAsStringAsync());
        }
    }

    /// <summary>The limit is 1024 characters, as for a header key: escapes and multi-byte UTF-8 do not count their bytes.</summary>
    [Fact]
    public async Task JsonStringKeyOf1024CharactersWrittenInMoreBytes_IsAKey()
    {
        await using var app = await EchoApp.StartAsync("pod-0");
        await using var solo = await Solo.StartAsync(app.Port, JsonRules);
        using var client = Cluster.Client(http2: true);
        foreach (var value in new[] { string.Concat(Enumerable.Repeat("\\u0041", 1024)), new string('é', 1024) })
        {
            using var response = await client.PostAsync(solo.Url("/orders"), Json($"{{\"id\":\"{value}\"}}", contentLength: true));
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.OK, body);
        }

        using var tooLong = await client.PostAsync(solo.Url("/orders"), Json($"{{\"id\":\"{string.Concat(Enumerable.Repeat("\\u0041", 1025))}\"}}", contentLength: true));
        Assert.Equal(HttpStatusCode.BadRequest, tooLong.StatusCode);
        Assert.Equal("the shard key is longer than 1024 characters\n", await tooLong.Content.ReadAsStringAsync());
    }

    /// <summary>
    /// Header and trailer values with bytes above 0x7F (obs-text: UTF-8 text, Latin-1) reach the client byte for byte, as on
    /// the fast path and through nginx or Envoy: read as Latin-1, written as Latin-1.
    /// </summary>
    [Fact]
    public async Task AppResponseHeaderAndTrailerBytesAbove0x7F_PassAsSent()
    {
        // "caf\u00c3\u00a9" goes out as the bytes of UTF-8 "café"; "caf\u00e9" as Latin-1 "café" (FakeApp writes Latin-1).
        await using var app = FakeApp.Start((_, connection) => connection.SendAsync(
            "HTTP/1.1 200 OK\r\nx-note: caf\u00c3\u00a9\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-t: caf\u00e9\r\n\r\n"));
        await using var solo = await Solo.StartAsync(app.Port, Solo.KeyHeaderRule);
        using var client = new HttpClient(new SocketsHttpHandler { UseProxy = false, ResponseHeaderEncodingSelector = static (_, _) => Encoding.Latin1 });
        using var request = solo.KeyedGet("/a");
        request.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        using var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("ok", await response.Content.ReadAsStringAsync());
        Assert.Equal("caf\u00c3\u00a9", response.Headers.GetValues("x-note").Single());
        Assert.Equal("caf\u00e9", response.TrailingHeaders.GetValues("x-t").Single());
    }

    /// <summary>A UTF-8 request header value (Kestrel reads request headers as UTF-8) reaches the app as the same bytes.</summary>
    [Fact]
    public async Task ClientRequestHeaderInUtf8_ReachesTheAppAsTheSameBytes()
    {
        await using var app = FakeApp.Start();
        await using var solo = await Solo.StartAsync(app.Port, Solo.KeyHeaderRule);
        using var client = new HttpClient(new SocketsHttpHandler { UseProxy = false, RequestHeaderEncodingSelector = static (_, _) => Encoding.UTF8 });
        using var request = solo.KeyedGet("/a");
        request.Headers.Add("x-note", "café ☕");
        using var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var received = await app.NextRequestAsync();
        Assert.Equal(Encoding.Latin1.GetString(Encoding.UTF8.GetBytes("café ☕")), received.Header("x-note")); // FakeApp reads Latin-1
    }

    /// <summary>A response header value Kestrel will not send (a control character) is a 502, not an unhandled 500.</summary>
    [Fact]
    public async Task AppResponseHeaderWithAControlCharacter_Is502_NotA500()
    {
        await using var app = FakeApp.Start((_, connection) => connection.SendAsync(
            "HTTP/1.1 200 OK\r\nx-note: a\u0001b\r\nContent-Length: 2\r\n\r\nok"));
        await using var solo = await Solo.StartAsync(app.Port, Solo.KeyHeaderRule);
        using var client = Cluster.Client(http2: true);
        using var request = solo.KeyedGet("/a");
        using var response = await client.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        Assert.StartsWith("forwarding to this pod's app failed:", body, StringComparison.Ordinal);
        Assert.False(response.Headers.Contains("x-note"));
    }

    /// <summary>
    /// A trailer value Kestrel will not send (a control character), after the body went out: the stream is reset (the client
    /// must not take it for a whole response with its trailers), quietly, not as an unhandled exception.
    /// </summary>
    [Fact]
    public async Task AppTrailerWithAControlCharacter_ResetsTheStream_WithoutAnUnhandledError()
    {
        await using var app = FakeApp.Start((_, connection) => connection.SendAsync(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-t: a\u0001b\r\n\r\n"));
        var logs = new CollectingLoggerProvider();
        await using var solo = await Solo.StartAsync(app.Port, Solo.KeyHeaderRule, logs: logs);
        using var client = Cluster.Client(http2: true);
        using var request = solo.KeyedGet("/a");
        request.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        await Assert.ThrowsAnyAsync<Exception>(() => response.Content.ReadAsByteArrayAsync().WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.DoesNotContain(logs.Entries, e => e.Level >= LogLevel.Error);
    }

    /// <summary>The app's Connection header makes the fields it names hop-by-hop: they stay on the app's connection.</summary>
    [Fact]
    public async Task AppResponseHeadersItsConnectionHeaderNames_DoNotReachTheClient()
    {
        await using var app = FakeApp.Start((_, connection) => connection.SendAsync(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, x-secret\r\nx-secret: v\r\nx-kept: k\r\nContent-Length: 2\r\n\r\nok"));
        await using var solo = await Solo.StartAsync(app.Port, Solo.KeyHeaderRule);
        using var client = Cluster.Client(http2: true);
        using var request = solo.KeyedGet("/a");
        using var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("ok", await response.Content.ReadAsStringAsync());
        Assert.False(response.Headers.Contains("x-secret"));
        Assert.Equal("k", response.Headers.GetValues("x-kept").Single());
    }

    /// <summary>Trailers follow the response headers' rules: the app cannot claim x-sharding-* or send hop-by-hop fields.</summary>
    [Fact]
    public async Task AppTrailers_PassOn_ExceptSidecarAndHopByHopFields()
    {
        await using var app = FakeApp.Start((_, connection) => connection.SendAsync(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-sharding-owner: evil\r\nkeep-alive: timeout=5\r\nx-checksum: 42\r\n\r\n"));
        await using var solo = await Solo.StartAsync(app.Port, Solo.KeyHeaderRule);
        using var client = Cluster.Client(http2: true);
        using var request = solo.KeyedGet("/a");
        request.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        using var response = await client.SendAsync(request);
        Assert.Equal("ok", await response.Content.ReadAsStringAsync());
        Assert.Equal("42", response.TrailingHeaders.GetValues("x-checksum").Single());
        Assert.False(response.TrailingHeaders.Contains("x-sharding-owner"));
        Assert.False(response.TrailingHeaders.Contains("keep-alive"));
        Assert.Equal("pod-0", response.Headers.GetValues("x-sharding-owner").Single());
    }

    /// <summary>
    /// A plain CONNECT asks the sidecar to tunnel to the authority it names: refused with 501 and the reason, on the map's
    /// headers, and the app never sees it; the connection then serves the next request.
    /// </summary>
    [Fact]
    public async Task PlainConnect_Is501_AndNeverReachesTheApp()
    {
        await using var app = FakeApp.Start();
        await using var solo = await Solo.StartAsync(app.Port, Solo.KeyHeaderRule);
        using var client = await RawClient.ConnectAsync(solo.Sidecar.Port);
        await client.SendAsync("CONNECT internal.example:443 HTTP/1.1\r\nHost: internal.example:443\r\nx-shard-key: k1\r\n\r\n");
        var refused = await client.ReadResponseAsync();
        Assert.Equal(501, refused.Status);
        Assert.Contains("CONNECT is not forwarded: the sidecar opens no tunnels", refused.BodyText);
        Assert.Equal("pod-0", refused.Single("x-sharding-owner"));
        Assert.Equal("1", refused.Single("x-sharding-generation"));

        await client.SendAsync("GET /after HTTP/1.1\r\nHost: app.test\r\nx-shard-key: k1\r\n\r\n");
        Assert.Equal(200, (await client.ReadResponseAsync()).Status);
        var seen = await app.NextRequestAsync();
        Assert.Equal("GET", seen.Method); // the first request the app saw is the one after the CONNECT
        Assert.Equal("/after", seen.Target);
    }

    /// <summary>A client's Connection header naming Content-Length does not turn its upload into a chunked one.</summary>
    [Fact]
    public async Task ConnectionHeaderNamingContentLength_TheAppStillGetsTheLength()
    {
        await using var app = FakeApp.Start();
        await using var solo = await Solo.StartAsync(app.Port, Solo.KeyHeaderRule, settings: new Dictionary<string, string?> { ["Sidecar:Http1FastPath"] = "false" });
        using var client = await RawClient.ConnectAsync(solo.Sidecar.Port);
        await client.SendAsync("POST /upload HTTP/1.1\r\nHost: app.test\r\nx-shard-key: k1\r\nConnection: keep-alive, Content-Length\r\nContent-Length: 5\r\n\r\nhello");
        var response = await client.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        var seen = await app.NextRequestAsync();
        Assert.Equal("5", seen.Header("content-length"));
        Assert.False(seen.Has("transfer-encoding"));
        Assert.Equal("hello", Encoding.ASCII.GetString(seen.Body));
    }

    /// <summary>HEAD and 304 answers carry the representation's Content-Length without a body: passed on as they are.</summary>
    [Theory]
    [InlineData("HEAD", "200 OK", true)]
    [InlineData("GET", "304 Not Modified", true)]
    [InlineData("GET", "204 No Content", true)]
    [InlineData("HEAD", "200 OK", false)]
    [InlineData("GET", "304 Not Modified", false)]
    public async Task BodylessAnswersWithContentLength_PassThrough(string method, string status, bool http2)
    {
        var head = status.StartsWith("204", StringComparison.Ordinal) ? $"HTTP/1.1 {status}\r\nETag: \"v1\"\r\n\r\n"
            : $"HTTP/1.1 {status}\r\nETag: \"v1\"\r\nContent-Length: 100\r\n\r\n";
        await using var app = FakeApp.Start((_, connection) => connection.SendAsync(head));
        await using var solo = await Solo.StartAsync(app.Port, Solo.KeyHeaderRule, settings: new Dictionary<string, string?> { ["Sidecar:Http1FastPath"] = "false" });
        using var client = Cluster.Client(http2);
        for (var i = 0; i < 2; i++)
        {
            using var request = Cluster.Request(new HttpMethod(method), solo.Url("/a"), http2);
            request.Headers.Add("x-shard-key", "k1");
            using var response = await client.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(int.Parse(status[..3], System.Globalization.CultureInfo.InvariantCulture), (int)response.StatusCode);
            Assert.Equal("\"v1\"", response.Headers.ETag?.Tag);
            Assert.Empty(await response.Content.ReadAsByteArrayAsync());
            if (!status.StartsWith("204", StringComparison.Ordinal))
            {
                Assert.Equal(100, response.Content.Headers.ContentLength);
            }
        }
    }

    /// <summary>
    /// The bytes read for the JSON key go ahead of the rest: a 3 MB body reaches the owner's app byte for byte through two
    /// sidecars, with or without Content-Length, over HTTP/2 and over HTTP/1.1 with Expect: 100-continue.
    /// </summary>
    [Theory]
    [InlineData(true, true, false)]
    [InlineData(true, false, false)]
    [InlineData(false, true, true)]
    [InlineData(false, false, true)]
    public async Task JsonKeyedBody_ReachesTheOwnerByteForByte(bool http2, bool contentLength, bool expectContinue)
    {
        await using var pair = await Pair.StartAsync(JsonRules);
        var key = pair.KeyOwnedBy("pod-1");
        var body = new byte[3_000_000];
        new Random(7).NextBytes(body);
        var prefix = Encoding.UTF8.GetBytes($"{{\"id\":\"{key}\",\"blob\":\"");
        for (var i = 0; i < body.Length; i++)
        {
            body[i] = (byte)('a' + (body[i] % 26));
        }

        prefix.CopyTo(body, 0);
        "\"}"u8.CopyTo(body.AsSpan(body.Length - 2));
        using var client = Cluster.Client(http2);
        using var request = Cluster.Request(HttpMethod.Post, $"http://127.0.0.1:{pair.Sidecars[0].Port}/sha256", http2);
        request.Content = contentLength ? new ByteArrayContent(body) : new StreamContent(new UnknownLengthStream(body));
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        request.Headers.ExpectContinue = expectContinue;
        using var response = await client.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(30));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        Assert.Equal("pod-1", response.Headers.GetValues("x-sharding-owner").Single());
        Assert.Equal($"pod-1|{body.Length}|{Convert.ToHexStringLower(SHA256.HashData(body))}", text);
    }

    /// <summary>
    /// Maps that disagree across three pods: pod-0 names pod-1, pod-1 names pod-2. With pod-2 naming itself the request
    /// takes its second hop and is served there; with pod-2 naming pod-0 a third hop would be needed: 503 + Retry-After.
    /// </summary>
    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public async Task SecondHopToAThirdPod_IsTaken_AThirdHopIsNot(bool pod2OwnsTheKey, bool http2)
    {
        var directory = Directory.CreateTempSubdirectory("sharding-hops-").FullName;
        await using var app0 = await EchoApp.StartAsync("pod-0");
        await using var app1 = await EchoApp.StartAsync("pod-1");
        await using var app2 = await EchoApp.StartAsync("pod-2");
        int[] ports = [TestSidecar.FreePort(), TestSidecar.FreePort(), TestSidecar.FreePort()];
        const string Rules = Solo.KeyHeaderRule;
        string[] maps = [Path.Combine(directory, "map0.yaml"), Path.Combine(directory, "map1.yaml"), Path.Combine(directory, "map2.yaml")];
        await File.WriteAllTextAsync(maps[0], Cluster.MapYaml([ports[1]], Rules, names: ["pod-1"]));
        await File.WriteAllTextAsync(maps[1], Cluster.MapYaml([ports[2]], Rules, names: ["pod-2"]));
        await File.WriteAllTextAsync(maps[2], pod2OwnsTheKey
            ? Cluster.MapYaml([ports[2]], Rules, names: ["pod-2"])
            : Cluster.MapYaml([ports[0]], Rules, names: ["pod-0"]));
        var logs = new CollectingLoggerProvider();
        await using var sidecar0 = await TestSidecar.StartAsync("pod-0", ports[0], app0.Port, maps[0]);
        await using var sidecar1 = await TestSidecar.StartAsync("pod-1", ports[1], app1.Port, maps[1]);
        await using var sidecar2 = await TestSidecar.StartAsync("pod-2", ports[2], app2.Port, maps[2], logs: logs);

        using var client = Cluster.Client(http2);
        using var request = Cluster.Request(HttpMethod.Post, $"http://127.0.0.1:{ports[0]}/x", http2);
        request.Headers.Add("x-shard-key", "k");
        request.Content = new StringContent("hello");
        using var response = await client.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(15));
        var body = await response.Content.ReadAsStringAsync();
        if (pod2OwnsTheKey)
        {
            Assert.True(response.StatusCode == HttpStatusCode.OK, body);
            Assert.Equal("pod-2|k|POST /x|5|x-sharding-generation,x-sharding-owner", body[..body.LastIndexOf('|')]);
            Assert.Equal("pod-2", response.Headers.GetValues("x-sharding-owner").Single());
        }
        else
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
            Assert.NotNull(response.Headers.RetryAfter);
            Assert.Equal("the shard maps disagree: after 2 hops this pod's map (generation 1) names pod-0 as owner; not forwarding again\n", body);
            Assert.Contains(logs.Entries, e => e.Id.Id == 501);
        }
    }

    /// <summary>
    /// A client that walks away mid-upload or mid-download ends the app's request too, and the sidecar logs it as the
    /// client's doing (no warnings or errors: a flaky client network must not look like a broken sidecar).
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ClientGoneMidUpload_EndsTheAppRequest_Quietly(bool http2)
    {
        var appSawEnd = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        ListenOptions? bound = null;
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l =>
        {
            l.UseHttp1AndHttp2PriorKnowledge();
            bound = l;
        }));
        await using var app = builder.Build();
        app.Run(async context =>
        {
            try
            {
                var buffer = new byte[1024];
                while (await context.Request.Body.ReadAsync(buffer, context.RequestAborted) > 0)
                {
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or IOException or Microsoft.AspNetCore.Http.BadHttpRequestException)
            {
            }

            appSawEnd.TrySetResult();
        });
        await app.StartAsync();
        var logs = new CollectingLoggerProvider();
        await using var solo = await Solo.StartAsync(bound!.IPEndPoint!.Port, Solo.KeyHeaderRule,
            settings: new Dictionary<string, string?> { ["Sidecar:Http1FastPath"] = "false" }, logs: logs);
        using var client = Cluster.Client(http2);
        var sending = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var cancel = new CancellationTokenSource();
        using var request = Cluster.Request(HttpMethod.Post, solo.Url("/upload"), http2);
        request.Headers.Add("x-shard-key", "k1");
        request.Content = new SlowContent(sending);
        var send = client.SendAsync(request, cancel.Token);
        await sending.Task.WaitAsync(TimeSpan.FromSeconds(10));
        await Task.Delay(200);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => send);
        await appSawEnd.Task.WaitAsync(TimeSpan.FromSeconds(10));
        await Task.Delay(200);
        Assert.DoesNotContain(logs.Entries, e => e.Level >= LogLevel.Warning);
    }

    /// <summary>
    /// The app closes a kept-alive connection (its idle timeout, or at once after an answer that did not say so): over
    /// HTTP/2 (the full path's HTTP/1.1 client) the next request still succeeds, on a new connection, with a body or without.
    /// </summary>
    [Theory]
    [InlineData(200, false)]
    [InlineData(200, true)]
    [InlineData(0, false)] // reused unchecked, found closed, sent again on a new connection
    [InlineData(0, true)] // a body cannot be sent twice: its connection is checked before it is reused
    public async Task AppClosingAKeptAliveConnection_TheNextHttp2RequestSucceeds(int closeAfterMs, bool withBody)
    {
        await using var app = FakeApp.Start(async (request, connection) =>
        {
            await FakeApp.EchoAsync(request, connection);
            _ = connection.CloseGracefullyAfterAsync(TimeSpan.FromMilliseconds(closeAfterMs));
        });
        await using var solo = await Solo.StartAsync(app.Port, Solo.KeyHeaderRule);
        using var client = Cluster.Client(http2: true);
        using (var first = await client.SendAsync(solo.KeyedGet("/first")))
        {
            Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        }

        await Task.Delay(closeAfterMs == 0 ? 20 : 700); // the app has closed its side by now
        using var second = solo.KeyedGet("/second");
        if (withBody)
        {
            second.Method = HttpMethod.Post;
            second.Content = new StringContent("hello");
        }

        using var response = await client.SendAsync(second);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.StartsWith(withBody ? "POST /second 5 " : "GET /second 0 ", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Equal(2, app.Connections);
    }

    /// <summary>
    /// A response with Transfer-Encoding and Content-Length is framed by the coding (RFC 9112 §6.3): the client gets the
    /// decoded body and no Content-Length, on both paths (a length beside it would make the client wait or cut the body).
    /// </summary>
    [Theory]
    [InlineData(false)] // the HTTP/1.1 fast path
    [InlineData(true)] // HTTP/2: the full path's HTTP/1.1 client
    public async Task AppResponseWithTransferEncodingAndContentLength_IsFramedByTheCoding(bool http2)
    {
        await using var app = FakeApp.Start((_, connection) =>
            connection.SendAsync("HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"));
        await using var solo = await Solo.StartAsync(app.Port, Solo.KeyHeaderRule);
        using var client = Cluster.Client(http2);
        using var request = solo.KeyedGet("/both", http2);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.False(response.Content.Headers.NonValidated.Contains("content-length"));
        Assert.Equal("ok", await response.Content.ReadAsStringAsync(timeout.Token));
    }

    /// <summary>A response head with hundreds of fields passes whole on both paths (the head's size is the only limit).</summary>
    [Theory]
    [InlineData(false)] // the HTTP/1.1 fast path
    [InlineData(true)] // HTTP/2: the full path's HTTP/1.1 client
    public async Task AppResponseWith500HeaderFields_PassesWhole(bool http2)
    {
        var fields = string.Concat(Enumerable.Range(0, 500).Select(static i => $"x-field-{i}: value-{i}\r\n"));
        await using var app = FakeApp.Start((_, connection) => connection.SendAsync($"HTTP/1.1 200 OK\r\n{fields}Content-Length: 2\r\n\r\nok"));
        await using var solo = await Solo.StartAsync(app.Port, Solo.KeyHeaderRule);
        using var client = Cluster.Client(http2);
        using var request = solo.KeyedGet("/many", http2);
        using var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("ok", await response.Content.ReadAsStringAsync());
        for (var i = 0; i < 500; i++)
        {
            Assert.Equal($"value-{i}", response.Headers.GetValues($"x-field-{i}").Single());
        }
    }

    /// <summary>
    /// An app that refuses an upload from its head without reading the body, then keeps its connection open or closes it:
    /// over HTTP/2 (the full path, to an HTTP/1.1 app) its answer reaches the client as soon as the app sent it, not a 504
    /// once the response-headers timeout is over (nor a 502 when the body's send fails on the closed connection); the app's
    /// connection is cut, since its request never ended.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AppAnsweringEarly_ToAnHttp2Upload_ItsAnswerReachesTheClientAtOnce(bool appCloses)
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(8);
        var appTask = Task.Run(async () =>
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(40));
            using var socket = await listener.AcceptAsync(timeout.Token);
            var input = new ReceiveBuffer(socket);
            await input.ReadHeadAsync(timeout.Token);
            var close = appCloses ? "Connection: close\r\n" : string.Empty;
            await socket.SendAsync(Encoding.ASCII.GetBytes($"HTTP/1.1 413 Content Too Large\r\n{close}Content-Length: 5\r\n\r\nno!\r\n"), SocketFlags.None, timeout.Token);
            if (appCloses)
            {
                return; // closed with the body unread: a reset
            }

            // Reads nothing more for a while, then until the sidecar gives up on the request.
            var buffer = new byte[64 * 1024];
            await Task.Delay(1000, timeout.Token);
            try
            {
                while (await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token) > 0)
                {
                }
            }
            catch (SocketException)
            {
            }
        });
        await using var solo = await Solo.StartAsync(((IPEndPoint)listener.LocalEndPoint!).Port, Solo.KeyHeaderRule);
        using var client = Cluster.Client(http2: true);
        using var request = Cluster.Request(HttpMethod.Put, solo.Url("/upload"), http2: true);
        request.Headers.Add("x-shard-key", "k1");
        request.Content = new DuplexTests.DuplexContent(new byte[64 * 1024 * 1024]);
        var watch = System.Diagnostics.Stopwatch.StartNew();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Equal("no!\r\n", await response.Content.ReadAsStringAsync(timeout.Token));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(4), $"the answer took {watch.Elapsed}");
        Assert.Equal("pod-0", response.Headers.GetValues("x-sharding-owner").Single());
        await appTask.WaitAsync(TimeSpan.FromSeconds(10)); // the app's connection was closed
    }

    /// <summary>
    /// A proof whose time is so far from now that the difference overflows a long: expired (403) like any other old
    /// proof, not an unhandled OverflowException (a 500 and an error line that anyone could cause without the secret).
    /// </summary>
    [Fact]
    public async Task ProofTimeThatOverflowsTheDifference_Is403Expired()
    {
        await using var app = await EchoApp.StartAsync("pod-0");
        var logs = new CollectingLoggerProvider();
        await using var solo = await Solo.StartAsync(app.Port, Solo.KeyHeaderRule, logs: logs);
        using var client = Cluster.Client(http2: true);
        var mac = new string('A', 43);
        var now = TimeProvider.System.GetUtcNow().ToUnixTimeSeconds();
        for (var offset = -2; offset <= 3; offset++)
        {
            // now - seconds == 2^63 exactly (the long's minimum after the wrap), for the receiver's current second.
            var seconds = unchecked(now + offset - long.MinValue);
            using var request = Cluster.Request(HttpMethod.Get, solo.Url("/a"), http2: true);
            request.Headers.Add("x-sharding-hop", "1");
            request.Headers.Add("x-sharding-generation", "1");
            request.Headers.Add("x-sharding-key", "k1");
            request.Headers.Add("x-sharding-proof", string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{seconds}.{mac}"));
            using var response = await client.SendAsync(request);
            Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
            Assert.Equal("forwarded request rejected: the forwarding proof (x-sharding-proof) is expired\n", await response.Content.ReadAsStringAsync());
        }

        Assert.DoesNotContain(logs.Entries, e => e.Level >= LogLevel.Error);
    }

    private static string Padded(string head, string tail, int length) =>
        string.Concat(head, new string('x', length - head.Length - tail.Length), tail);

    private static HttpContent Json(string json, bool contentLength)
    {
        var bytes = Encoding.UTF8.GetBytes(json);
        HttpContent content = contentLength ? new ByteArrayContent(bytes) : new StreamContent(new UnknownLengthStream(bytes));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        return content;
    }

    /// <summary>A body whose length HttpClient cannot know (HTTP/2 without content-length, HTTP/1.1 chunked).</summary>
    private sealed class UnknownLengthStream(byte[] bytes) : MemoryStream(bytes)
    {
        public override bool CanSeek => false;
    }

    /// <summary>One sidecar (pod-0, the only member) with its own key rules, in front of an app.</summary>
    private sealed class Solo : IAsyncDisposable
    {
        public const string KeyHeaderRule = "[\"header:x-shard-key\"]";

        private readonly string _directory;

        private Solo(string directory, TestSidecar sidecar)
        {
            _directory = directory;
            Sidecar = sidecar;
        }

        public TestSidecar Sidecar { get; }

        public static async Task<Solo> StartAsync(
            int appPort, string rules, string extraKeys = "", IDictionary<string, string?>? settings = null, CollectingLoggerProvider? logs = null)
        {
            var directory = Directory.CreateTempSubdirectory("sharding-fullpath-").FullName;
            var port = TestSidecar.FreePort();
            var map = Path.Combine(directory, "map.yaml");
            await File.WriteAllTextAsync(map, Cluster.MapYaml([port], rules, extraKeys));
            return new Solo(directory, await TestSidecar.StartAsync("pod-0", port, appPort, map, settings, logs));
        }

        public string Url(string target) => $"http://127.0.0.1:{Sidecar.Port}{target}";

        /// <summary>A GET of <paramref name="target"/> (HTTP/2 unless said otherwise) carrying the key <c>k1</c> (for
        /// <see cref="KeyHeaderRule"/>).</summary>
        public HttpRequestMessage KeyedGet(string target, bool http2 = true)
        {
            var request = Cluster.Request(HttpMethod.Get, Url(target), http2);
            request.Headers.Add("x-shard-key", "k1");
            return request;
        }

        public async ValueTask DisposeAsync()
        {
            await Sidecar.DisposeAsync();
            try
            {
                Directory.Delete(_directory, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    /// <summary>Two sidecars (pod-0, pod-1) in front of <see cref="EchoApp"/>s, on one map.</summary>
    private sealed class Pair : IAsyncDisposable
    {
        private readonly string _directory;
        private readonly List<EchoApp> _apps;

        private Pair(string directory, List<EchoApp> apps, List<TestSidecar> sidecars)
        {
            _directory = directory;
            _apps = apps;
            Sidecars = sidecars;
        }

        public List<TestSidecar> Sidecars { get; }

        public static async Task<Pair> StartAsync(string rules, IDictionary<string, string?>? settings = null)
        {
            var directory = Directory.CreateTempSubdirectory("sharding-fullpath-").FullName;
            int[] ports = [TestSidecar.FreePort(), TestSidecar.FreePort()];
            var map = Path.Combine(directory, "map.yaml");
            await File.WriteAllTextAsync(map, Cluster.MapYaml(ports, rules));
            var apps = new List<EchoApp>();
            var sidecars = new List<TestSidecar>();
            for (var i = 0; i < 2; i++)
            {
                apps.Add(await EchoApp.StartAsync($"pod-{i}"));
                sidecars.Add(await TestSidecar.StartAsync($"pod-{i}", ports[i], apps[i].Port, map, settings));
            }

            return new Pair(directory, apps, sidecars);
        }

        public string KeyOwnedBy(string owner)
        {
            var map = Sidecars[0].Store.Current!;
            for (var i = 0; i < 10_000; i++)
            {
                var key = $"key-{i}";
                if (map.OwnerOf(key.AsSpan())!.Name == owner)
                {
                    return key;
                }
            }

            throw new InvalidOperationException($"no key for {owner} in 10,000 tries");
        }

        public async ValueTask DisposeAsync()
        {
            foreach (var sidecar in Sidecars)
            {
                await sidecar.DisposeAsync();
            }

            foreach (var app in _apps)
            {
                await app.DisposeAsync();
            }

            try
            {
                Directory.Delete(_directory, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    /// <summary>A body that sends a few bytes, then waits (until the client's request is cancelled).</summary>
    private sealed class SlowContent(TaskCompletionSource sending) : HttpContent
    {
        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
            SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        {
            await stream.WriteAsync("{\"a\":"u8.ToArray(), cancellationToken);
            await stream.FlushAsync(cancellationToken);
            sending.TrySetResult();
            await Task.Delay(TimeSpan.FromSeconds(30), cancellationToken);
        }

        protected override bool TryComputeLength(out long length)
        {
            length = -1;
            return false;
        }
    }
}

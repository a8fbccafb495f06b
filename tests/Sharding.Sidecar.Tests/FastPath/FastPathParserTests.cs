using System.Text;
using Sharding.Sidecar.FastPath;

namespace Sharding.Sidecar.Tests.FastPath;

/// <summary>The fast path's parsers without sockets: what qualifies as a plain HTTP/1.1 request head, how the app's response
/// head is framed (RFC 9112 §6.3) and rewritten for the client, and how a chunked body is followed.</summary>
public sealed class RequestHeadTests
{
    private sealed record Parsed(string Method, string Target, int HeaderCount, long ContentLength, RequestTraits Traits, int HostIndex, int ConnectionIndex, int ForwardedForIndex, string[] Values);

    private static Parsed? Parse(string text)
    {
        var headers = new HeaderLine[RequestHead.MaxHeaders];
        if (!RequestHead.TryParse(text, headers, out var head))
        {
            return null;
        }

        var values = new string[head.HeaderCount];
        for (var i = 0; i < head.HeaderCount; i++)
        {
            values[i] = $"{head.Name(headers[i])}={head.Value(headers[i])}";
            Assert.Equal(text[headers[i].LineStart..headers[i].LineEnd], text.Substring(headers[i].LineStart, headers[i].LineEnd - headers[i].LineStart));
            Assert.EndsWith("\r\n", text[headers[i].LineStart..headers[i].LineEnd], StringComparison.Ordinal);
        }

        return new Parsed(head.Method.ToString(), head.Target.ToString(), head.HeaderCount, head.ContentLength, head.Traits, head.HostIndex, head.ConnectionIndex, head.ForwardedForIndex, values);
    }

    [Fact]
    public void PlainGet_Parses()
    {
        var parsed = Parse("GET /items/7?x=1 HTTP/1.1\r\nHost: a.test\r\nUser-Agent: t\r\n\r\n");
        Assert.NotNull(parsed);
        Assert.Equal("GET", parsed.Method);
        Assert.Equal("/items/7?x=1", parsed.Target);
        Assert.Equal(2, parsed.HeaderCount);
        Assert.Equal(-1, parsed.ContentLength);
        Assert.Equal(RequestTraits.HasHost, parsed.Traits);
        Assert.Equal(0, parsed.HostIndex);
        Assert.Equal(-1, parsed.ConnectionIndex);
        Assert.Equal(["Host=a.test", "User-Agent=t"], parsed.Values);
    }

    [Fact]
    public void HeadersTheFastPathActsOn_AreNoted()
    {
        var parsed = Parse(
            "POST /x HTTP/1.1\r\nHost:   a.test \t\r\nContent-Length: 12\r\nConnection: close, X-Hop\r\nTE: deflate, trailers;q=0.5\r\n"
            + "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: h\r\nX-Obs: caf\u00e9\tok\r\n\r\n");
        Assert.NotNull(parsed);
        Assert.Equal(12, parsed.ContentLength);
        Assert.Equal(
            RequestTraits.HasHost | RequestTraits.Close | RequestTraits.ConnectionTokens | RequestTraits.TeTrailers | RequestTraits.HasForwardedProto | RequestTraits.HasForwardedHost,
            parsed.Traits);
        Assert.Equal(2, parsed.ConnectionIndex);
        Assert.Equal(4, parsed.ForwardedForIndex);
        Assert.Equal("Host=a.test", parsed.Values[0]); // surrounding whitespace is not part of the value
        Assert.Equal("X-Obs=caf\u00e9\tok", parsed.Values[7]); // obs-text and inner tabs are field content
    }

    [Theory]
    [InlineData("Connection: keep-alive", "HasHost")]
    [InlineData("Connection: Keep-Alive, X-A", "HasHost, ConnectionTokens")]
    [InlineData("TE: gzip", "HasHost")]
    [InlineData("Content-Length: 0", "HasHost")]
    [InlineData("Accept: text/html", "HasHost")]
    [InlineData("Content-Type: application/json", "HasHost")]
    public void OrdinaryHeaders_Qualify(string header, string traits)
    {
        var parsed = Parse($"GET / HTTP/1.1\r\nHost: a\r\n{header}\r\n\r\n");
        Assert.NotNull(parsed);
        Assert.Equal(Enum.Parse<RequestTraits>(traits), parsed.Traits);
    }

    [Theory]
    [InlineData("GET / HTTP/1.0\r\nHost: a\r\n\r\n")] // HTTP/1.0
    [InlineData("GET / http/1.1\r\nHost: a\r\n\r\n")]
    [InlineData("GET / HTTP/2.0\r\nHost: a\r\n\r\n")]
    [InlineData("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")] // the HTTP/2 preface
    [InlineData("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")] // absolute-form
    [InlineData("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")] // asterisk-form
    [InlineData("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n")] // authority-form
    [InlineData("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n")]
    [InlineData("GET /caf\u00e9 HTTP/1.1\r\nHost: a\r\n\r\n")] // not visible ASCII in the target
    [InlineData("G(T / HTTP/1.1\r\nHost: a\r\n\r\n")] // not a token
    [InlineData(" GET / HTTP/1.1\r\nHost: a\r\n\r\n")]
    [InlineData("GET  / HTTP/1.1\r\nHost: a\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n folded\r\n\r\n")] // obs-fold
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n\tX-A: b\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\nHost: a\r\n\r\n")] // bare LF after the request line
    [InlineData("GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n")] // bare LF between fields
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\u0001c\r\n\r\n")] // control character
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\u007fc\r\n\r\n")] // DEL
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n")] // NUL
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n")] // bare CR
    [InlineData("GET / HTTP/1.1\r\nHost : a\r\n\r\n")] // whitespace before the colon
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n")] // empty name
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")] // duplicate Host
    [InlineData("GET / HTTP/1.1\r\nX-A: b\r\n\r\n")] // missing Host
    [InlineData("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")]
    [InlineData("POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: identity\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, upgrade\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n")]
    [InlineData("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")]
    [InlineData("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1a\r\n\r\n")]
    [InlineData("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n")]
    [InlineData("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n")]
    [InlineData("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\n")]
    [InlineData("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n")]
    [InlineData("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1234567890123456789\r\n\r\n")] // 19 digits
    [InlineData("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")] // duplicated
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: close\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nx-sharding-hop: 1\r\nx-sharding-hop: 1\r\n\r\n")] // a repeated internal header
    [InlineData("POST /svc/M HTTP/1.1\r\nHost: a\r\nContent-Type: application/grpc\r\n\r\n")]
    [InlineData("POST /svc/M HTTP/1.1\r\nHost: a\r\ncontent-type: Application/GRPC+proto\r\n\r\n")]
    [InlineData("GET /events HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n\r\n")]
    [InlineData("GET /events HTTP/1.1\r\nHost: a\r\nAccept: text/html, TEXT/EVENT-STREAM;q=0.9\r\n\r\n")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n")] // no end of head
    [InlineData("GET / HTTP/1.1")]
    public void UnusualHeads_AreRefused(string text) => Assert.Null(Parse(text));

    [Fact]
    public void MoreHeadersThanTheTable_AreRefused()
    {
        var head = new StringBuilder("GET / HTTP/1.1\r\nHost: a\r\n");
        for (var i = 0; i < RequestHead.MaxHeaders; i++)
        {
            head.Append(System.Globalization.CultureInfo.InvariantCulture, $"X-{i}: v\r\n");
        }

        Assert.Null(Parse(head.Append("\r\n").ToString()));
        Assert.NotNull(Parse(string.Concat("GET / HTTP/1.1\r\nHost: a\r\n", string.Concat(Enumerable.Range(0, RequestHead.MaxHeaders - 1).Select(static i => $"X-{i}: v\r\n")), "\r\n")));
    }
}

public sealed class ResponseHeadTests
{
    [Fact]
    public void WriteTrailersForClient_KeepsFieldLines_DropsInternalHopByHopAndFoldedLines()
    {
        var section = "grpc-status: 0\r\n\tx-sharding-owner: pod-9\r\n x: folded\r\nx-sharding-owner: pod-9\r\nconnection: close\r\nbad name: v\r\nx-app: 1\r\n\r\n"u8;
        var output = new System.Buffers.ArrayBufferWriter<byte>();
        ResponseHead.WriteTrailersForClient(section, fromPeer: false, output);
        Assert.Equal("grpc-status: 0\r\nx-app: 1\r\n\r\n", Encoding.Latin1.GetString(output.WrittenSpan));
    }

    private static ResponseHead? Parse(string text, bool head = false) =>
        ResponseHead.TryParse(Encoding.Latin1.GetBytes(text), head, out var response) ? response : null;

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false, 200, "Length", 5L, false)]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", false, 200, "Length", 5L, false)]
    [InlineData("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", false, 200, "Length", 0L, false)] // no reason phrase
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, 200, "Chunked", -1L, false)]
    [InlineData("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, CHUNKED\r\n\r\n", false, 200, "Chunked", -1L, false)]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", false, 200, "Chunked", -1L, true)] // TE wins; never reused
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", false, 200, "Chunked", -1L, true)]
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", false, 200, "UntilClose", -1L, true)] // not chunked last
    [InlineData("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", false, 200, "UntilClose", -1L, true)]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n", false, 200, "Length", 5L, true)]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: x-a, Close\r\n\r\n", false, 200, "Length", 5L, true)]
    [InlineData("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", false, 200, "Length", 5L, true)] // 1.0 without keep-alive
    [InlineData("HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n", false, 200, "Length", 5L, false)]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, 200, "None", 5L, false)] // a HEAD's answer
    [InlineData("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, 200, "None", -1L, false)]
    [InlineData("HTTP/1.1 204 No Content\r\n\r\n", false, 204, "None", -1L, false)]
    [InlineData("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false, 304, "None", 10L, false)]
    [InlineData("HTTP/1.1 100 Continue\r\n\r\n", false, 100, "None", -1L, false)]
    [InlineData("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", false, 103, "None", -1L, false)]
    [InlineData("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false, 404, "Length", 0L, false)]
    public void Framing_FollowsRfc9112(string text, bool headRequest, int status, string framing, long length, bool upstreamClose)
    {
        var parsed = Parse(text, headRequest);
        Assert.NotNull(parsed);
        Assert.Equal(status, parsed.Value.StatusCode);
        Assert.Equal(Enum.Parse<BodyFraming>(framing), parsed.Value.Framing);
        Assert.Equal(length, parsed.Value.ContentLength);
        Assert.Equal(upstreamClose, parsed.Value.UpstreamClose);
        Assert.False(parsed.Value.IsEventStream);
    }

    [Theory]
    [InlineData("Content-Type: text/event-stream", true)]
    [InlineData("content-type: TEXT/EVENT-STREAM; charset=utf-8", true)]
    [InlineData("Content-Type: text/plain", false)]
    public void EventStreams_AreRecognised(string header, bool expected) =>
        Assert.Equal(expected, Parse($"HTTP/1.1 200 OK\r\n{header}\r\n\r\n")!.Value.IsEventStream);

    [Theory]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5a\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456789\r\n\r\n")]
    [InlineData("HTTP/2 200\r\n\r\n")]
    [InlineData("HTTP/1.2 200 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 20 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 2000 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 2x0 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 200OK\r\n\r\n")]
    [InlineData("HTTP/1.1  200 OK\r\n\r\n")]
    [InlineData("ICY 200 OK\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nNoColon\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\n: empty\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello")] // whitespace before the colon (RFC 9112 §5.1)
    [InlineData("HTTP/1.1 200 OK\r\n X-Folded: 1\r\n\r\n")]
    [InlineData("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n")] // no end of head
    public void InvalidHeads_AreRefused(string text) => Assert.Null(Parse(text));

    [Fact]
    public void ManyHeaders_AreAccepted_TheHeadsSizeIsTheOnlyLimit()
    {
        Assert.NotNull(Parse("HTTP/1.1 200 OK\r\n" + string.Concat(Enumerable.Range(0, 2000).Select(static i => $"X-{i}: v\r\n")) + "\r\n"));
    }

    private static string Write(string head, string extra, bool close, bool fromPeer = false, int room = 4096)
    {
        var destination = new byte[room];
        var written = ResponseHead.WriteForClient(Encoding.Latin1.GetBytes(head), Encoding.Latin1.GetBytes(extra), close, fromPeer, destination);
        return written < 0 ? "(too small)" : Encoding.Latin1.GetString(destination, 0, written);
    }

    private const string Extra = "x-sharding-owner: pod-0\r\nx-sharding-generation: 7\r\n";

    [Fact]
    public void WriteForClient_DropsHopByHopAndInternalHeaders_AndAddsTheSidecars()
    {
        var head = "HTTP/1.1 200 OK\r\n"
            + "Content-Type: text/plain\r\n"
            + "Connection: keep-alive, X-App-Hop, transfer-encoding\r\n"
            + "X-App-Hop: 1\r\n"
            + "x-app-hop: 2\r\n"
            + "Keep-Alive: timeout=5\r\n"
            + "Proxy-Connection: keep-alive\r\n"
            + "Proxy-Authenticate: Basic\r\n"
            + "Upgrade: h2c\r\n"
            + "X-Sharding-Owner: pod-evil\r\n"
            + "x-sharding-anything: 1\r\n"
            + "Transfer-Encoding: chunked\r\n"
            + "Trailer: x-sum\r\n"
            + "X-App: yes\r\n"
            + "\r\n";
        Assert.Equal(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\nX-App: yes\r\n" + Extra + "\r\n",
            Write(head, Extra, close: false));
    }

    [Fact]
    public void WriteForClient_ClosingAndHttp10()
    {
        Assert.Equal(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + Extra + "connection: close\r\n\r\n",
            Write("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n", Extra, close: true));
        Assert.Equal("HTTP/1.1 204 No Content\r\n\r\n", Write("HTTP/1.1 204 No Content\r\n\r\n", "", close: false));
    }

    [Fact]
    public void WriteForClient_FromAPeerSidecar_KeepsItsInternalHeaders()
    {
        Assert.Equal(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nx-sharding-owner: pod-2\r\nx-sharding-generation: 7\r\n\r\n",
            Write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nx-sharding-owner: pod-2\r\nx-sharding-generation: 7\r\n\r\n", "", close: false, fromPeer: true));
    }

    [Fact]
    public void WriteForClient_SeveralConnectionHeaders_DropEveryNamedHeader()
    {
        Assert.Equal(
            "HTTP/1.1 200 OK\r\nX-Keep: 1\r\n\r\n",
            Write("HTTP/1.1 200 OK\r\nConnection: X-A\r\nConnection: X-B\r\nX-A: 1\r\nX-B: 2\r\nX-Keep: 1\r\n\r\n", "", close: false));
    }

    [Fact]
    public void WriteForClient_TransferEncodingAndContentLength_ForwardsNoContentLength()
    {
        // RFC 9112 §6.3: an intermediary forwarding such a message MUST first remove the received Content-Length.
        Assert.Equal(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", "", close: false));
    }

    [Fact]
    public void WriteForClient_TooSmallADestination_IsMinusOne()
    {
        var head = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
        var exact = Write(head, Extra, close: true);
        Assert.Equal(exact, Write(head, Extra, close: true, room: exact.Length));
        Assert.Equal("(too small)", Write(head, Extra, close: true, room: exact.Length - 1));
        Assert.Equal("(too small)", Write(head, Extra, close: false, room: 10));
    }
}

public sealed class ChunkedScannerTests
{
    private static readonly string[] Chunks = ["5\r\nhello\r\n", "6;ext=\"v\"\r\n world\r\n", "A ; a=b\r\n0123456789\r\n"];

    private static readonly string Body = string.Concat(Chunks) + "0\r\nx-checksum: abc\r\nx-count: 3\r\n\r\n";

    /// <summary>Offsets at which the bytes so far end exactly after a whole chunk (0, 10, 29, 50).</summary>
    private static readonly int[] Boundaries = [0, .. Enumerable.Range(1, Chunks.Length).Select(static n => Chunks.Take(n).Sum(static c => c.Length))];

    private static byte[] Bytes(string text) => Encoding.Latin1.GetBytes(text);

    [Fact]
    public void WholeBody_EndsWhereTheBodyEnds()
    {
        var scanner = default(ChunkedScanner);
        Assert.True(scanner.AtBoundary);
        Assert.Equal(Body.Length, scanner.Scan(Bytes(Body + "HTTP/1.1 200 OK\r\n")));
        Assert.True(scanner.IsDone);
        Assert.False(scanner.AtBoundary);
        Assert.Equal(0, scanner.Scan(Bytes("more")));
    }

    [Fact]
    public void SplitAtEveryPosition_GivesTheSameEnd()
    {
        var bytes = Bytes(Body + "NEXT");
        for (var split = 0; split <= bytes.Length; split++)
        {
            var scanner = default(ChunkedScanner);
            var first = scanner.Scan(bytes.AsSpan(0, split));
            Assert.Equal(Math.Min(split, Body.Length), first);
            Assert.Equal(split >= Body.Length, scanner.IsDone);
            Assert.Equal(Boundaries.Contains(split), scanner.AtBoundary);
            var second = scanner.Scan(bytes.AsSpan(first));
            Assert.True(scanner.IsDone, $"split at {split}");
            Assert.Equal(Body.Length, first + second);
        }
    }

    [Fact]
    public void ByteByByte_AtBoundaryOnlyBetweenChunks()
    {
        var scanner = default(ChunkedScanner);
        var bytes = Bytes(Body);
        for (var i = 0; i < bytes.Length; i++)
        {
            Assert.Equal(Boundaries.Contains(i), scanner.AtBoundary);
            Assert.Equal(1, scanner.Scan(bytes.AsSpan(i, 1)));
        }

        Assert.True(scanner.IsDone);
    }

    [Fact]
    public void TrailersAt_MarksWhereTheTrailerSectionStarts_InTheScanThatReachesIt()
    {
        var bytes = Bytes(Body);
        var trailers = Body.IndexOf("x-checksum", StringComparison.Ordinal);
        var whole = default(ChunkedScanner);
        whole.Scan(bytes);
        Assert.Equal(trailers, whole.TrailersAt);

        var split = default(ChunkedScanner);
        split.Scan(bytes.AsSpan(0, 10));
        Assert.Equal(-1, split.TrailersAt); // no trailer bytes in this read
        split.Scan(bytes.AsSpan(10, trailers - 10 + 3));
        Assert.Equal(trailers - 10, split.TrailersAt);
        split.Scan(bytes.AsSpan(trailers + 3));
        Assert.Equal(0, split.TrailersAt); // this read began inside the section
        Assert.True(split.IsDone);
    }

    [Theory]
    [InlineData("0\r\n\r\n", true)]
    [InlineData("1\r\nx\r\n0\r\n\r\n", true)]
    [InlineData("ff\r\n", false)]
    [InlineData("FF\r\n", false)]
    [InlineData("0;last\r\n\r\n", true)]
    public void ValidFramings(string text, bool done)
    {
        var scanner = default(ChunkedScanner);
        Assert.Equal(text.Length, scanner.Scan(Bytes(text)));
        Assert.Equal(done, scanner.IsDone);
    }

    [Theory]
    [InlineData("\r\n")] // no size
    [InlineData(" 5\r\nhello\r\n")] // leading whitespace
    [InlineData("g\r\n")]
    [InlineData("5\nhello\r\n")] // bare LF after the size
    [InlineData("5\rXhello\r\n")]
    [InlineData("5\r\nhelloX\r\n")] // no CRLF after the data
    [InlineData("5\r\nhello\rX")]
    [InlineData("0\r\nx: y\rX")] // a trailer line without LF
    [InlineData("0\r\n\rX")]
    [InlineData("1000000000000000\r\n")] // 16 hex digits
    [InlineData("-1\r\n")]
    [InlineData("5;a\nb\r\nhello\r\n")] // a bare LF inside an extension
    [InlineData("0\r\nx: y\nz: w\r\n\r\n")] // a bare LF inside a trailer line
    [InlineData("0\r\n\n")] // a bare LF for the final CRLF
    public void InvalidFramings_AreMinusOne(string text)
    {
        var scanner = default(ChunkedScanner);
        Assert.Equal(-1, scanner.Scan(Bytes(text)));
    }
}

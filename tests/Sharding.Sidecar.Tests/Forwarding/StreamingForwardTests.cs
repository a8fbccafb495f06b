using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.WebSockets;
using System.Text;
using Sharding.Sidecar.Tests.Infrastructure;
using Sharding.Sidecar.Tests.Routing;

namespace Sharding.Sidecar.Tests.Forwarding;

/// <summary>Streams through a forward: the request enters at a sidecar that does not own the key.</summary>
[Collection(ClusterGroup.Name)]
public sealed class StreamingForwardTests(ClusterFixture fixture)
{
    private Cluster Cluster => fixture.Cluster;

    private (string Key, TestSidecar Entry, EchoApp OwnerApp) Forwarded(string owner = "pod-2")
    {
        for (var i = 0; ; i++)
        {
            var key = $"stream-{i}";
            if (Cluster.OwnerOf(key) == owner)
            {
                return (key, Cluster.Sidecars[0], Cluster.Apps.Single(a => a.Name == owner));
            }
        }
    }

    [Fact]
    public async Task ServerSentEvents_FlushEachEventThroughTwoSidecars()
    {
        var (key, entry, app) = Forwarded();
        using var client = Cluster.Client(http2: false);
        using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{entry.Port}/sse");
        request.Headers.Add("x-shard-key", key);
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("pod-2", response.Headers.GetValues("x-sharding-owner").Single());
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());

        // The app holds event 2 until event 1 reached us: only per-event flushing gets past this.
        Assert.Equal("data: pod-2 1", await reader.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(10)));
        app.SseGate.TrySetResult();
        Assert.Equal(string.Empty, await reader.ReadLineAsync());
        Assert.Equal("data: pod-2 2", await reader.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task WebSocket_EchoesThroughTwoSidecars()
    {
        var (key, entry, _) = Forwarded();
        using var socket = new ClientWebSocket();
        socket.Options.SetRequestHeader("x-shard-key", key);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        await socket.ConnectAsync(new Uri($"ws://127.0.0.1:{entry.Port}/ws"), timeout.Token);
        await EchoThreeTimesThenCloseAsync(socket, "pod-2", timeout.Token);
    }

    /// <summary>RFC 8441: a WebSocket over HTTP/2 (extended CONNECT) reaches the owner's app as an HTTP/1.1 upgrade.</summary>
    [Theory]
    [InlineData("pod-0")]
    [InlineData("pod-2")]
    public async Task WebSocketOverHttp2_EchoesLocallyAndThroughTwoSidecars(string owner)
    {
        var (key, entry, _) = Forwarded(owner);
        using var socket = new ClientWebSocket();
        socket.Options.HttpVersion = HttpVersion.Version20;
        socket.Options.HttpVersionPolicy = HttpVersionPolicy.RequestVersionExact;
        socket.Options.CollectHttpResponseDetails = true;
        socket.Options.SetRequestHeader("x-shard-key", key);
        using var invoker = new HttpMessageInvoker(new SocketsHttpHandler());
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        await socket.ConnectAsync(new Uri($"ws://127.0.0.1:{entry.Port}/ws"), invoker, timeout.Token);
        Assert.Equal(HttpStatusCode.OK, socket.HttpStatusCode);
        Assert.Equal(owner, socket.HttpResponseHeaders!["x-sharding-owner"].Single());
        await EchoThreeTimesThenCloseAsync(socket, owner, timeout.Token);
    }

    /// <summary>The app echoes each message as <c>owner:message</c> and answers a close with "bye".</summary>
    private static async Task EchoThreeTimesThenCloseAsync(ClientWebSocket socket, string owner, CancellationToken cancellationToken)
    {
        var buffer = new byte[1024];
        for (var i = 0; i < 3; i++)
        {
            await socket.SendAsync(Encoding.UTF8.GetBytes($"hello {i}"), WebSocketMessageType.Text, true, cancellationToken);
            var result = await socket.ReceiveAsync(buffer, cancellationToken);
            Assert.Equal($"{owner}:hello {i}", Encoding.UTF8.GetString(buffer, 0, result.Count));
        }

        await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", cancellationToken);
        Assert.Equal(WebSocketCloseStatus.NormalClosure, socket.CloseStatus);
        Assert.Equal("bye", socket.CloseStatusDescription);
    }

    [Fact]
    public async Task ExtendedConnectForAnotherProtocol_Is501WithTheReason()
    {
        var (key, entry, _) = Forwarded();
        using var client = Cluster.Client(http2: true);
        using var request = Cluster.Request(HttpMethod.Connect, $"http://127.0.0.1:{entry.Port}/tunnel", http2: true);
        request.Headers.Protocol = "connect-udp";
        request.Headers.Add("x-shard-key", key);
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.NotImplemented, response.StatusCode);
        Assert.Contains("extended CONNECT for protocol 'connect-udp' is not forwarded", await response.Content.ReadAsStringAsync());
    }

    [Theory]
    [InlineData("Unary", 1)]
    [InlineData("Stream", 5)]
    public async Task Grpc_UnaryAndServerStreaming_WithTrailers(string method, int expected)
    {
        var (key, entry, _) = Forwarded();
        using var client = Cluster.Client(http2: true);
        using var request = Cluster.Request(HttpMethod.Post, $"http://127.0.0.1:{entry.Port}/grpc/echo.Echo/{method}", http2: true);
        request.Headers.Add("x-shard-key", key);
        request.Headers.TryAddWithoutValidation("te", "trailers");
        var payload = Encoding.UTF8.GetBytes("ping");
        var frame = new byte[5 + payload.Length];
        BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(1), payload.Length);
        payload.CopyTo(frame, 5);
        request.Content = new ByteArrayContent(frame);
        request.Content.Headers.ContentType = new("application/grpc");
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var stream = await response.Content.ReadAsStreamAsync();
        var messages = new List<string>();
        var header = new byte[5];
        while (await ReadExactlyOrEndAsync(stream, header))
        {
            var body = new byte[BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(1))];
            await stream.ReadExactlyAsync(body);
            messages.Add(Encoding.UTF8.GetString(body));
        }

        Assert.Equal(Enumerable.Range(0, expected).Select(i => $"pod-2:ping:{i}"), messages);
        Assert.Equal("0", response.TrailingHeaders.GetValues("grpc-status").Single());
        Assert.Equal("ok", response.TrailingHeaders.GetValues("grpc-message").Single());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ClientAbort_CancelsTheAppRequestThroughTwoSidecars(bool http2)
    {
        var (key, entry, app) = Forwarded("pod-1");
        using var client = Cluster.Client(http2);
        using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{entry.Port}/hang", http2);
        request.Headers.Add("x-shard-key", key);
        var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        response.Dispose(); // walk away mid-body

        await app.HangAborted.Task.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task ChunkedUpload_ArrivesWhole()
    {
        var (key, entry, _) = Forwarded();
        using var client = Cluster.Client(http2: false);
        using var request = Cluster.Request(HttpMethod.Post, $"http://127.0.0.1:{entry.Port}/upload");
        request.Headers.Add("x-shard-key", key);
        request.Content = new GeneratedContent(3_000_000, knownLength: false);
        using var response = await client.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.True(request.Headers.TransferEncodingChunked ?? true);
        Assert.Equal("3000000", body.Split('|')[3]);
    }

    private static async Task<bool> ReadExactlyOrEndAsync(Stream stream, byte[] buffer)
    {
        var read = await stream.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false);
        return read == buffer.Length;
    }

    /// <summary>A body of <c>size</c> bytes produced on the fly (never held in memory).</summary>
    internal sealed class GeneratedContent(long size, bool knownLength = true) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            var chunk = new byte[64 * 1024];
            for (long sent = 0; sent < size; sent += chunk.Length)
            {
                await stream.WriteAsync(chunk.AsMemory(0, (int)Math.Min(chunk.Length, size - sent)));
            }
        }

        protected override bool TryComputeLength(out long length)
        {
            length = size;
            return knownLength;
        }
    }
}

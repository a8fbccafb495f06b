using System.Net;
using System.Security.Cryptography;
using Sharding.Sidecar.Tests.FastPath;
using Sharding.Sidecar.Tests.Infrastructure;
using Sharding.Sidecar.Tests.Routing;

namespace Sharding.Sidecar.Tests.Forwarding;

/// <summary>
/// An app that answers while the request body is still coming (an echo that streams the body back as it reads it): the
/// sidecar must relay the response while it sends the body, or both ends wait on each other once the socket buffers fill.
/// </summary>
[Collection(ClusterGroup.Name)]
public sealed class DuplexTests(ClusterFixture fixture)
{
    // Far more than loopback's socket buffers hold (a few MiB each way), so a relay that sends the whole body before it reads
    // the response stalls.
    private const int Length = 32 * 1024 * 1024;

    private Cluster Cluster => fixture.Cluster;

    private static string KeyOwnedBy(Cluster cluster, string owner)
    {
        for (var i = 0; ; i++)
        {
            var key = $"duplex-{i}";
            if (cluster.OwnerOf(key) == owner)
            {
                return key;
            }
        }
    }

    private static byte[] Body()
    {
        var body = new byte[Length];
        new Random(42).NextBytes(body);
        return body;
    }

    [Theory]
    [InlineData("pod-0")] // owned: the fast path to the app
    [InlineData("pod-2")] // forwarded: both sidecars' fast paths
    public async Task Http11EchoOfA32MiBBody_StreamsBackWhileItIsSent(string owner)
    {
        var key = KeyOwnedBy(Cluster, owner);
        var body = Body();
        using var client = await RawClient.ConnectAsync(Cluster.Sidecars[0].Port);
        await client.SendAsync($"POST /echo HTTP/1.1\r\nHost: app.test\r\nx-shard-key: {key}\r\nContent-Length: {Length}\r\n\r\n");
        var upload = Task.Run(async () =>
        {
            for (var sent = 0; sent < Length; sent += 256 * 1024)
            {
                await client.SendAsync(body.AsMemory(sent, Math.Min(256 * 1024, Length - sent)));
            }
        });

        var response = await client.ReadResponseAsync(timeout: TimeSpan.FromSeconds(60));
        await upload.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(200, response.Status);
        Assert.Equal(owner, response.Single("x-sharding-owner"));
        Assert.Equal(Length, response.Body.Length);
        Assert.Equal(SHA256.HashData(body), SHA256.HashData(response.Body));

        // The exchange ended cleanly: the connection serves the next request.
        await client.SendAsync($"GET /next HTTP/1.1\r\nHost: app.test\r\nx-shard-key: {key}\r\n\r\n");
        var next = await client.ReadResponseAsync();
        Assert.Equal(200, next.Status);
        Assert.StartsWith($"{owner}|{key}|GET /next|0|", next.BodyText, StringComparison.Ordinal);
    }

    /// <summary>
    /// Over HTTP/2 the full path carries the request: to an HTTP/1.1 app (the default) through the sidecar's own duplex
    /// client, to an h2c app (<c>AppProtocol: Auto</c>) over HTTP/2.
    /// </summary>
    [Theory]
    [InlineData("pod-0", false)]
    [InlineData("pod-2", false)]
    [InlineData("pod-0", true)]
    [InlineData("pod-2", true)]
    public async Task Http2EchoOfA32MiBBody_StreamsBackWhileItIsSent(string owner, bool http2ToTheApp)
    {
        await using var own = http2ToTheApp
            ? await Cluster.StartAsync(sidecarSettings: new Dictionary<string, string?> { ["Sidecar:AppProtocol"] = "Auto" })
            : null;
        var cluster = own ?? Cluster;
        var key = KeyOwnedBy(cluster, owner);
        var body = Body();
        using var client = Cluster.Client(http2: true);
        using var request = Cluster.Request(HttpMethod.Post, $"http://127.0.0.1:{cluster.Sidecars[0].Port}/echo", http2: true);
        request.Headers.Add("x-shard-key", key);
        request.Content = new DuplexContent(body);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(owner, response.Headers.GetValues("x-sharding-owner").Single());
        var echoed = await response.Content.ReadAsByteArrayAsync(timeout.Token);
        Assert.Equal(Length, echoed.Length);
        Assert.Equal(SHA256.HashData(body), SHA256.HashData(echoed));
    }

    /// <summary>A chunked upload is the full path's (the fast path takes Content-Length bodies): duplex to an HTTP/1.1 app too.</summary>
    [Theory]
    [InlineData("pod-0")]
    [InlineData("pod-2")]
    public async Task Http11ChunkedEchoOfA32MiBBody_StreamsBackWhileItIsSent(string owner)
    {
        var key = KeyOwnedBy(Cluster, owner);
        var body = Body();
        using var client = await RawClient.ConnectAsync(Cluster.Sidecars[0].Port);
        await client.SendAsync($"POST /echo HTTP/1.1\r\nHost: app.test\r\nx-shard-key: {key}\r\nTransfer-Encoding: chunked\r\n\r\n");
        var upload = Task.Run(async () =>
        {
            const int Piece = 256 * 1024;
            for (var sent = 0; sent < Length; sent += Piece)
            {
                await client.SendAsync($"{Piece:x}\r\n");
                await client.SendAsync(body.AsMemory(sent, Piece));
                await client.SendAsync("\r\n");
            }

            await client.SendAsync("0\r\n\r\n");
        });

        var response = await client.ReadResponseAsync(timeout: TimeSpan.FromSeconds(60));
        await upload.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(200, response.Status);
        Assert.Equal(owner, response.Single("x-sharding-owner"));
        Assert.Equal(SHA256.HashData(body), SHA256.HashData(response.Body));
    }

    /// <summary>A body the client may still be sending when the response arrives (StreamContent is not duplex in HttpClient).</summary>
    internal sealed class DuplexContent(byte[] body) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            for (var sent = 0; sent < body.Length; sent += 256 * 1024)
            {
                await stream.WriteAsync(body.AsMemory(sent, Math.Min(256 * 1024, body.Length - sent)));
            }
        }

        protected override bool TryComputeLength(out long length)
        {
            length = body.Length;
            return true;
        }
    }
}

using System.Net;
using Sharding.Sidecar.Tests.Infrastructure;

namespace Sharding.Sidecar.Tests.Forwarding;

/// <summary>
/// <c>ResponseHeadersTimeout</c> is how long the upstream may take to answer, not a cap on the upload: an upload that is still
/// flowing (a large file from a slow client, a gRPC client-streaming call) is not cut with a 504; the wait is counted from the
/// last body bytes sent.
/// </summary>
public sealed class ResponseHeadersTimeoutTests
{
    [Theory]
    [InlineData(false, true)]
    [InlineData(true, true)]
    [InlineData(false, false)]
    [InlineData(true, false)]
    public async Task UploadStillFlowing_PastTheHeadersTimeout_IsNotCut(bool forwarded, bool http2)
    {
        await using var cluster = await Cluster.StartAsync(size: 2, sidecarSettings: new Dictionary<string, string?>
        {
            ["Sidecar:ResponseHeadersTimeout"] = "00:00:02",
        });
        var owner = forwarded ? "pod-1" : "pod-0";
        var key = Enumerable.Range(0, 1000).Select(i => $"k{i}").First(k => cluster.OwnerOf(k) == owner);
        using var client = Cluster.Client(http2);
        using var request = Cluster.Request(HttpMethod.Post, $"http://127.0.0.1:{cluster.Sidecars[0].Port}/sha256", http2);
        request.Headers.Add("x-shard-key", key);
        request.Content = new SlowContent(pieces: 9, every: TimeSpan.FromMilliseconds(400), length: http2 ? null : 9216); // 3.6 s of upload, 2 s timeout
        using var response = await client.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode} {body}");
        Assert.StartsWith($"{owner}|9216|", body, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UpstreamSilentAfterTheUpload_Is504()
    {
        await using var cluster = await Cluster.StartAsync(size: 1, sidecarSettings: new Dictionary<string, string?>
        {
            ["Sidecar:ResponseHeadersTimeout"] = "00:00:01",
        });
        using var client = Cluster.Client(http2: true);
        using var request = Cluster.Request(HttpMethod.Post, $"http://127.0.0.1:{cluster.Sidecars[0].Port}/long-poll", http2: true);
        request.Headers.Add("x-shard-key", "k");
        request.Content = new SlowContent(pieces: 2, every: TimeSpan.FromMilliseconds(300), length: null);
        var started = System.Diagnostics.Stopwatch.StartNew();
        using var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
        Assert.InRange(started.Elapsed, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(10));
    }

    /// <summary>1 KiB every <c>every</c>, <c>pieces</c> times, with a Content-Length (HTTP/1.1: the fast path) or none.</summary>
    private sealed class SlowContent(int pieces, TimeSpan every, long? length) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            var piece = new byte[1024];
            for (var i = 0; i < pieces; i++)
            {
                await Task.Delay(every);
                await stream.WriteAsync(piece);
                await stream.FlushAsync();
            }
        }

        protected override bool TryComputeLength(out long computed)
        {
            computed = length ?? -1;
            return length is not null;
        }
    }
}

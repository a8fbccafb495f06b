using System.Diagnostics;
using System.Net;
using Sharding.Testing;
using Sharding.Sidecar.Tests.Infrastructure;

namespace Sharding.Sidecar.Tests.Routing;

/// <summary>
/// The sidecar's own answers to a gRPC call are gRPC: HTTP 200, <c>application/grpc</c> and a trailers-only
/// <c>grpc-status</c> with the reason in <c>grpc-message</c> (a bare 400/503 text body reaches a gRPC client as
/// "Bad gRPC response" with the reason lost), still with <c>x-sharding-owner</c>, <c>x-sharding-generation</c> and Retry-After.
/// </summary>
public sealed class GrpcErrorTests
{
    private static HttpRequestMessage GrpcCall(int port, string? key)
    {
        var request = Cluster.Request(HttpMethod.Post, $"http://127.0.0.1:{port}/echo.Echo/Unary", http2: true);
        if (key is not null)
        {
            request.Headers.Add("x-shard-key", key);
        }

        request.Headers.TryAddWithoutValidation("te", "trailers");
        request.Content = new ByteArrayContent([0, 0, 0, 0, 2, (byte)'h', (byte)'i']);
        request.Content.Headers.ContentType = new("application/grpc");
        return request;
    }

    private static void AssertGrpcStatus(HttpResponseMessage response, string status, string message)
    {
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("application/grpc", response.Content.Headers.ContentType?.MediaType);
        Assert.True(response.Headers.TryGetValues("grpc-status", out var statuses), "no grpc-status in the trailers-only answer");
        Assert.Equal(status, statuses.Single());
        Assert.Equal(message, Uri.UnescapeDataString(response.Headers.GetValues("grpc-message").Single()));
        Assert.Single(response.Headers.GetValues("x-sharding-owner"));
        Assert.Single(response.Headers.GetValues("x-sharding-generation"));
    }

    [Fact]
    public async Task NoKey_IsInvalidArgument_NamingTheRules()
    {
        await using var cluster = await Cluster.StartAsync(size: 1, rules: "[\"header:x-shard-key\", \"path:/docs/{key}\"]");
        using var client = Cluster.Client(http2: true);
        using var request = GrpcCall(cluster.Sidecars[0].Port, key: null);
        using var response = await client.SendAsync(request);
        await response.Content.ReadAsByteArrayAsync();
        AssertGrpcStatus(response, "3", "no shard key: no rule found one (tried header:x-shard-key, path:/docs/{key})");
    }

    [Fact]
    public async Task OwnerDown_IsUnavailable_WithRetryAfter()
    {
        var directory = Directory.CreateTempSubdirectory("sharding-grpc-down-").FullName;
        await using var app0 = await EchoApp.StartAsync("pod-0");
        int[] ports = [TestSidecar.FreePort(), TestSidecar.FreePort()]; // nobody listens on ports[1]
        var map = Path.Combine(directory, "map.yaml");
        await File.WriteAllTextAsync(map, Cluster.MapYaml(ports, "[\"header:x-shard-key\"]"));
        await using var sidecar = await TestSidecar.StartAsync("pod-0", ports[0], app0.Port, map, new Dictionary<string, string?> { ["Sidecar:ConnectRetries"] = "0" });
        var key = Enumerable.Range(0, 1000).Select(i => $"k{i}").First(k => sidecar.Store.Current!.OwnerOf(k.AsSpan())!.Name == "pod-1");

        using var client = Cluster.Client(http2: true);
        using var request = GrpcCall(ports[0], key);
        using var response = await client.SendAsync(request);
        await response.Content.ReadAsByteArrayAsync();
        AssertGrpcStatus(response, "14", $"owner pod-1 (127.0.0.1:{ports[1]}) is unavailable; the key is not moved to another pod, retry later");
        Assert.NotNull(response.Headers.RetryAfter);
        Assert.Equal("pod-1", response.Headers.GetValues("x-sharding-owner").Single());
    }

    [Fact]
    public async Task BadProof_IsPermissionDenied()
    {
        await using var cluster = await Cluster.StartAsync(size: 1);
        using var client = Cluster.Client(http2: true);
        using var request = GrpcCall(cluster.Sidecars[0].Port, key: "k");
        request.Headers.Add("x-sharding-hop", "1");
        request.Headers.Add("x-sharding-generation", "1");
        request.Headers.Add("x-sharding-key", "k");
        request.Headers.Add("x-sharding-proof", "1.AAAA");
        using var response = await client.SendAsync(request);
        await response.Content.ReadAsByteArrayAsync();
        AssertGrpcStatus(response, "7", "forwarded request rejected: the forwarding proof (x-sharding-proof) is malformed");
    }

    [Fact]
    public void GrpcMessage_IsPercentEncoded()
    {
        Assert.Equal("plain text", Sharding.Protocol.GrpcProtocol.EncodeMessage("plain text"));
        Assert.Equal("100%25 caf%C3%A9%0A", Sharding.Protocol.GrpcProtocol.EncodeMessage("100% café\n"));
        Assert.Equal("%F0%9F%98%80", Sharding.Protocol.GrpcProtocol.EncodeMessage("\U0001F600"));
    }

    /// <summary>A gRPC body is length-prefixed protobuf, never a JSON document: the JSON body rules do not read it, so a call
    /// without a key takes the no-key policy instead of a 'body is not valid JSON' error.</summary>
    [Fact]
    public async Task JsonBodyRules_DoNotReadAGrpcBody()
    {
        await using var cluster = await Cluster.StartAsync(size: 2, extraKeys: "  noKey: serveLocally\n");
        using var client = Cluster.Client(http2: true);
        foreach (var sidecar in cluster.Sidecars)
        {
            using var request = GrpcCall(sidecar.Port, key: null);
            using var response = await client.SendAsync(request);
            var body = await response.Content.ReadAsByteArrayAsync();
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.False(response.Headers.Contains("grpc-status"), response.Headers.TryGetValues("grpc-message", out var m) ? m.Single() : "");
            Assert.Equal("0", response.TrailingHeaders.GetValues("grpc-status").Single());
            Assert.Equal(sidecar.PodName, response.Headers.GetValues("x-sharding-owner").Single());
            Assert.StartsWith($"{sidecar.PodName}:hi:0", System.Text.Encoding.UTF8.GetString(body, 5, body.Length - 5), StringComparison.Ordinal);
        }
    }

    /// <summary>
    /// An app's trailers-only answer (grpc-status in the one HEADERS frame, END_STREAM, no content-length: grpc-go's early
    /// errors) stays trailers-only. Sent as response headers and then an empty end of stream, clients that read grpc-status
    /// only at END_STREAM (grpc-go: "server closed the stream without sending trailers") lost the app's status.
    /// </summary>
    [RequiresToolFact("nghttp", "nghttp2-client")]
    public async Task TrailersOnlyAnswer_StaysTrailersOnly()
    {
        var directory = Directory.CreateTempSubdirectory("sharding-grpc-trailers-only-").FullName;
        await using var app = new TrailersOnlyGrpcApp("5", "no such item");
        int[] ports = [TestSidecar.FreePort()];
        var map = Path.Combine(directory, "map.yaml");
        await File.WriteAllTextAsync(map, Cluster.MapYaml(ports, "[\"header:x-shard-key\"]"));
        await using var sidecar = await TestSidecar.StartAsync("pod-0", ports[0], app.Port, map);

        var body = Path.Combine(directory, "body.bin");
        await File.WriteAllBytesAsync(body, [0, 0, 0, 0, 2, (byte)'h', (byte)'i']);
        using var nghttp = Process.Start(new ProcessStartInfo("nghttp",
            ["-v", "-H", "content-type: application/grpc", "-H", "te: trailers", "-H", "x-shard-key: k", "-d", body,
                $"http://127.0.0.1:{ports[0]}/echo.Echo/Unary"])
        {
            RedirectStandardOutput = true,
            UseShellExecute = false,
        })!;
        var output = await nghttp.StandardOutput.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(20));
        await nghttp.WaitForExitAsync();

        // nghttp logs a frame's fields before the frame line: the status is in the response's only HEADERS frame, which
        // ends the stream; no DATA frame follows.
        Assert.True(output.Contains("recv (stream_id=13) grpc-status: 5", StringComparison.Ordinal), output);
        var headers = output.IndexOf("recv HEADERS frame", StringComparison.Ordinal);
        Assert.True(headers >= 0, output);
        var frame = output[headers..];
        Assert.True(frame[..frame.IndexOf('\n', frame.IndexOf('\n') + 1)].Contains("END_STREAM", StringComparison.Ordinal), output);
        Assert.False(output.Contains("recv DATA frame", StringComparison.Ordinal), output);
        Assert.Equal(1, output.Split("recv HEADERS frame").Length - 1);
    }
}

using System.Net;
using Sharding.Sidecar.Tests.Infrastructure;
using Sharding.Sidecar.Tests.Routing;
using Sharding.Testing;

namespace Sharding.Sidecar.Tests.Hosting;

[Collection(ClusterGroup.Name)]
public sealed class AdminAndProtocolTests(ClusterFixture fixture)
{
    private Cluster Cluster => fixture.Cluster;

    [Fact]
    public async Task AdminPort_ServesHealthReadinessMapAndMetrics()
    {
        using var client = Cluster.Client(http2: false);
        var sidecar = Cluster.Sidecars[1];
        using var warm = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{sidecar.Port}/a");
        warm.Headers.Add("x-shard-key", "warm");
        (await client.SendAsync(warm)).Dispose();

        Assert.Equal("ok\n", await client.GetStringAsync($"http://127.0.0.1:{sidecar.AdminPort}/healthz"));
        Assert.StartsWith("ok: service echo generation 1", await client.GetStringAsync($"http://127.0.0.1:{sidecar.AdminPort}/readyz"), StringComparison.Ordinal);
        var map = await client.GetStringAsync($"http://127.0.0.1:{sidecar.AdminPort}/v1/map");
        Assert.Contains("\"self\": \"pod-1\"", map, StringComparison.Ordinal);
        Assert.Contains("\"json:$.account.id\"", map, StringComparison.Ordinal);
        using var metrics = await client.GetAsync($"http://127.0.0.1:{sidecar.AdminPort}/metrics");
        Assert.Equal("text/plain; version=0.0.4; charset=utf-8", metrics.Content.Headers.ContentType?.ToString());
        var text = await metrics.Content.ReadAsStringAsync();
        Assert.Contains("sharding_sidecar_requests_total{outcome=", text, StringComparison.Ordinal);
        Assert.Contains("sharding_sidecar_forward_duration_seconds_bucket", text, StringComparison.Ordinal);
        Assert.Contains("sharding_sidecar_map_generation", text, StringComparison.Ordinal);

        // The data port does not serve admin paths: they are ordinary keyed requests there.
        using var data = await client.GetAsync($"http://127.0.0.1:{sidecar.Port}/metrics");
        Assert.Equal(HttpStatusCode.BadRequest, data.StatusCode);
    }

    [Fact]
    public async Task AdminPort_Metrics_AreTheOnesTheDocsAndDashboardsName()
    {
        using var client = Cluster.Client(http2: false);
        var exposition = await client.GetStringAsync($"http://127.0.0.1:{Cluster.Sidecars[0].AdminPort}/metrics");
        var problems = MetricsCatalogue.Problems("sharding_sidecar_", MetricsCatalogue.Exposed(exposition), MetricsCatalogue.Documented("Sidecar"));
        Assert.True(problems.Count == 0, string.Join('\n', problems));
    }

    [RequiresToolFact("curl", "curl")]
    public async Task Curl_Http2PriorKnowledge_AndHttp11_OnTheSamePort()
    {
        var port = Cluster.Sidecars[0].Port;
        var h2 = await ProcessRunner.RunAsync("curl", ["-sS", "--http2-prior-knowledge", "-H", "x-shard-key: curl-key", "-w", "\n%{http_version}", $"http://127.0.0.1:{port}/c"]);
        Assert.Equal(0, h2.ExitCode);
        Assert.EndsWith("\n2", h2.StandardOutput, StringComparison.Ordinal);
        Assert.StartsWith(Cluster.OwnerOf("curl-key") + "|curl-key|", h2.StandardOutput, StringComparison.Ordinal);
        var h1 = await ProcessRunner.RunAsync("curl", ["-sS", "--http1.1", "-H", "x-shard-key: curl-key", "-w", "\n%{http_version}", $"http://127.0.0.1:{port}/c"]);
        Assert.Equal(0, h1.ExitCode);
        Assert.EndsWith("\n1.1", h1.StandardOutput, StringComparison.Ordinal);
    }

    [RequiresToolFact("nghttp", "nghttp2-client")]
    public async Task Nghttp_PriorKnowledge_SeesHttp2FramesAndTheOwnerHeader()
    {
        var port = Cluster.Sidecars[0].Port;
        var result = await ProcessRunner.RunAsync("nghttp", ["-v", "-H", "x-shard-key: nghttp-key", $"http://127.0.0.1:{port}/n"], timeout: TimeSpan.FromSeconds(30));
        Assert.Equal(0, result.ExitCode);
        Assert.Contains("recv SETTINGS frame", result.StandardOutput, StringComparison.Ordinal);
        Assert.Contains($"x-sharding-owner: {Cluster.OwnerOf("nghttp-key")}", result.StandardOutput, StringComparison.Ordinal);
        Assert.Contains($"{Cluster.OwnerOf("nghttp-key")}|nghttp-key|GET /n|0|x-sharding-generation,x-sharding-owner|HTTP/", result.StandardOutput, StringComparison.Ordinal);
    }
}

[Collection(ClusterGroup.Name)]
public sealed class PythonGrpcTests(ClusterFixture fixture)
{
    [RequiresPythonFact("python3-grpcio", "grpc")]
    public async Task PythonGrpcio_UnaryAndServerStreaming_ThroughAForward()
    {
        var cluster = fixture.Cluster;
        var key = Enumerable.Range(0, 1000).Select(i => $"py-{i}").First(k => cluster.OwnerOf(k) == "pod-1");
        var script = $$"""
            import grpc
            ident = lambda b: b
            with grpc.insecure_channel("127.0.0.1:{{cluster.Sidecars[0].Port}}") as channel:
                md = (("x-shard-key", "{{key}}"),)
                unary = channel.unary_unary("/echo.Echo/Unary", request_serializer=ident, response_deserializer=ident)
                print(unary(b"hi", metadata=md, timeout=20).decode())
                stream = channel.unary_stream("/echo.Echo/Stream", request_serializer=ident, response_deserializer=ident)
                print(",".join(m.decode() for m in stream(b"s", metadata=md, timeout=20)))
            """;
        var direct = await ProcessRunner.RunAsync(ExternalTool.Python, ["-c", script.Replace($"127.0.0.1:{cluster.Sidecars[0].Port}", $"127.0.0.1:{cluster.Apps[1].Port}", StringComparison.Ordinal)], timeout: TimeSpan.FromSeconds(60));
        Assert.True(direct.ExitCode == 0, "DIRECT " + direct.StandardError);
        var owner = await ProcessRunner.RunAsync(ExternalTool.Python, ["-c", script.Replace($"127.0.0.1:{cluster.Sidecars[0].Port}", $"127.0.0.1:{cluster.Sidecars[1].Port}", StringComparison.Ordinal)], timeout: TimeSpan.FromSeconds(60));
        Assert.True(owner.ExitCode == 0, "OWNER " + owner.StandardError);
        var result = await ProcessRunner.RunAsync(ExternalTool.Python, ["-c", script], timeout: TimeSpan.FromSeconds(60));
        Assert.True(result.ExitCode == 0, result.StandardError);
        var lines = result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("pod-1:hi:0", lines[0]);
        Assert.Equal("pod-1:s:0,pod-1:s:1,pod-1:s:2,pod-1:s:3,pod-1:s:4", lines[1]);
    }
}

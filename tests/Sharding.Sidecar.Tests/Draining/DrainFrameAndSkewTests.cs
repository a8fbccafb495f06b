using System.Diagnostics;
using System.Globalization;
using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Sharding.Sidecar.Routing;
using Sharding.Sidecar.Tests.Infrastructure;
using Sharding.Testing;

namespace Sharding.Sidecar.Tests.Draining;

/// <summary>GOAWAY on the wire (nghttp), version skew, and the ownership API's edges.</summary>
[Collection(DrainGroup.Name)]
public sealed class DrainFrameAndSkewTests
{
    [RequiresToolFact("nghttp", "nghttp2-client")]
    public async Task MovedStream_GetsGracefulGoAway_ThenEnds()
    {
        await using var cluster = await DrainCluster.StartAsync();
        var before = cluster.Expected;

        // A key that pod-0 owns now and pod-3 will own: entered at pod-0, so pod-0 serves it locally and drains it.
        var key = Enumerable.Range(0, 10_000).Select(i => $"frame-{i}")
            .First(k => before.OwnerOf(k.AsSpan())!.Name == "pod-0"
                        && Sharding.Mapping.ShardMap.Create("x", 1, before.Members.Add(new Sharding.Mapping.ShardMember("pod-3", "127.0.0.1:1"))).OwnerOf(k.AsSpan())!.Name == "pod-3");
        using var nghttp = NghttpSseStream.Open(cluster.Sidecars[0].Port, key);
        await nghttp.FirstData.WaitAsync(TimeSpan.FromSeconds(10));
        var changedAt = await cluster.ChangeMembersAsync(4, 20);
        await nghttp.Process.WaitForExitAsync().WaitAsync(DrainCluster.Grace + TimeSpan.FromSeconds(3));
        var elapsed = Stopwatch.GetElapsedTime(changedAt);
        Assert.True(elapsed < DrainCluster.Grace + TimeSpan.FromSeconds(1), $"the stream ended {elapsed} after the change");

        var text = nghttp.Output();

        // The graceful first GOAWAY: NO_ERROR with last-stream-id 2^31-1 (new streams go to a new connection).
        var goaway = text.IndexOf("recv GOAWAY frame", StringComparison.Ordinal);
        Assert.True(goaway >= 0, text);
        var frame = text.Substring(goaway, Math.Min(300, text.Length - goaway));
        Assert.Contains("last_stream_id=2147483647", frame, StringComparison.Ordinal);
        Assert.Contains("NO_ERROR", frame, StringComparison.Ordinal);

        // The stream then ended normally (END_STREAM), after the GOAWAY.
        Assert.True(text.LastIndexOf("END_STREAM", StringComparison.Ordinal) > goaway, text);
    }

    [Fact]
    public async Task ForwardedRequestWithNewerGeneration_WaitsThenDecides_AndIsCounted()
    {
        await using var cluster = await DrainCluster.StartAsync(size: 3, members: 3, new Dictionary<string, string?> { ["Sidecar:SkewWait"] = "00:00:03" });
        var receiver = cluster.Sidecars[1];
        var proof = receiver.Services.GetRequiredService<ForwardingProof>();
        var key = Enumerable.Range(0, 1000).Select(i => $"skew-{i}").First(k => cluster.OwnerOf(k) == "pod-1");
        using var client = Cluster.Client(http2: true);

        async Task<(HttpStatusCode Status, TimeSpan Elapsed, string Owner)> SendAsync(long generation)
        {
            using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{receiver.Port}/skew", http2: true);
            request.Headers.Add("x-sharding-hop", "1");
            request.Headers.Add("x-sharding-generation", generation.ToString(CultureInfo.InvariantCulture));
            request.Headers.Add("x-sharding-key", KeyHeader.Encode(key));
            request.Headers.Add("x-sharding-proof", proof.Create(key, generation, 1));
            var start = Stopwatch.GetTimestamp();
            using var response = await client.SendAsync(request);
            return (response.StatusCode, Stopwatch.GetElapsedTime(start), response.Headers.GetValues("x-sharding-owner").Single());
        }

        // Behind and the newer map never comes: waits the whole SkewWait, then serves on its own map.
        var timedOut = await SendAsync(15);
        Assert.Equal(HttpStatusCode.OK, timedOut.Status);
        Assert.True(timedOut.Elapsed >= TimeSpan.FromMilliseconds(2900), $"answered after {timedOut.Elapsed}");
        Assert.Equal("pod-1", timedOut.Owner);

        // Behind and the newer map arrives during the wait: decided on it at once. (SkewWait is long so that a busy
        // 2-core CI machine stalling the request for most of a second still tells "released" from "timed out".)
        var pending = SendAsync(11);
        await Task.Delay(50);
        receiver.Store.TryPublish(receiver.Store.Current!.WithGeneration(11));
        var caughtUp = await pending;
        Assert.Equal(HttpStatusCode.OK, caughtUp.Status);
        Assert.True(caughtUp.Elapsed < TimeSpan.FromSeconds(2), $"answered after {caughtUp.Elapsed}");

        using var adminClient = new HttpClient();
        var metrics = await adminClient.GetStringAsync($"http://127.0.0.1:{receiver.AdminPort}/metrics");
        Assert.Contains("sharding_sidecar_skew_waits_total{result=\"timed_out\"} 1", metrics, StringComparison.Ordinal);
        Assert.Contains("sharding_sidecar_skew_waits_total{result=\"caught_up\"} 1", metrics, StringComparison.Ordinal);
    }

    [Fact]
    public async Task OwnershipApi_AnswersOneKey_Checks_Watches_AndRejectsBadInput()
    {
        await using var cluster = await DrainCluster.StartAsync(size: 4, members: 3);
        var sidecar = cluster.Sidecars[0];
        var admin = $"http://127.0.0.1:{sidecar.AdminPort}";
        using var client = new HttpClient();

        var one = await client.GetStringAsync($"{admin}/v1/ownership?key=acct-7");
        var owner = cluster.OwnerOf("acct-7");
        Assert.Equal($"{{\"key\":\"acct-7\",\"owned\":{(owner == "pod-0" ? "true" : "false")},\"owner\":\"{owner}\",\"generation\":10}}", one);

        using (var wrapped = await client.PostAsync($"{admin}/v1/ownership/check", new StringContent("{\"keys\":[\"a\",\"b\"]}")))
        {
            Assert.Equal(HttpStatusCode.OK, wrapped.StatusCode);
        }

        using (var malformed = await client.PostAsync($"{admin}/v1/ownership/check", new StringContent("[1,2]")))
        {
            Assert.Equal(HttpStatusCode.BadRequest, malformed.StatusCode);
        }

        var tooMany = "[" + string.Join(',', Enumerable.Range(0, 10_001).Select(i => $"\"k{i}\"")) + "]";
        using (var large = await client.PostAsync($"{admin}/v1/ownership/check", new StringContent(tooMany)))
        {
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, large.StatusCode);
        }

        // NDJSON: the current generation now, the next one when it comes.
        using var watch = await client.GetAsync($"{admin}/v1/ownership/watch", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("application/x-ndjson", watch.Content.Headers.ContentType?.MediaType);
        using var reader = new StreamReader(await watch.Content.ReadAsStreamAsync());
        Assert.Equal("{\"generation\":10,\"self\":\"pod-0\",\"member\":true,\"members\":[\"pod-0\",\"pod-1\",\"pod-2\"]}", await reader.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(5)));
        await cluster.ChangeMembersAsync(4, 20);
        Assert.Equal("{\"generation\":20,\"self\":\"pod-0\",\"member\":true,\"members\":[\"pod-0\",\"pod-1\",\"pod-2\",\"pod-3\"]}", await reader.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task Shutdown_EndsStreamsWithinTheGrace()
    {
        await using var cluster = await DrainCluster.StartAsync(size: 3, members: 3);
        var sidecar = cluster.Sidecars[0];
        var key = Enumerable.Range(0, 1000).Select(i => $"bye-{i}").First(k => cluster.OwnerOf(k) == "pod-0");
        using var client = WatchClients.CreateClient();
        var sse = new Watch(1, "sse", key, sidecar.Port);
        var ws = new Watch(2, "ws", key, sidecar.Port);
        var tasks = new[] { WatchClients.RunAsync(sse, client, http2: true, CancellationToken.None), WatchClients.RunAsync(ws, client, http2: false, CancellationToken.None) };
        await sse.FirstPod.WaitAsync(TimeSpan.FromSeconds(10));
        await ws.FirstPod.WaitAsync(TimeSpan.FromSeconds(10));

        var start = Stopwatch.GetTimestamp();
        await sidecar.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal("eof", sse.EndStatus);
        Assert.Equal("close 1012", ws.EndStatus);
        var elapsed = Stopwatch.GetElapsedTime(start, Math.Max(sse.EndedAt, ws.EndedAt));
        Assert.True(elapsed < DrainCluster.Grace + TimeSpan.FromSeconds(1), $"streams ended {elapsed} after shutdown began");
    }
}

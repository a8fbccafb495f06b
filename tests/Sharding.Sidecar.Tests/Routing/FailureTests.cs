using System.Net;
using Sharding.Sidecar.Tests.FastPath;
using Sharding.Sidecar.Tests.Infrastructure;
using Sharding.Testing;

namespace Sharding.Sidecar.Tests.Routing;

/// <summary>Conflicting maps, dead owners, open circuits: each ends in a clear 503, never a loop or a silent re-route.</summary>
public sealed class FailureTests
{
    [Fact]
    public async Task ConflictingMaps_EndIn503AfterTwoHops()
    {
        // pod-0 and pod-1 each believe the other owns every key: A -> B (hop 1) -> A (hop 2) -> 503.
        var directory = Directory.CreateTempSubdirectory("sharding-loop-").FullName;
        await using var app0 = await EchoApp.StartAsync("pod-0");
        await using var app1 = await EchoApp.StartAsync("pod-1");
        int[] ports = [TestSidecar.FreePort(), TestSidecar.FreePort()];
        var map0 = Path.Combine(directory, "map0.yaml");
        var map1 = Path.Combine(directory, "map1.yaml");
        await File.WriteAllTextAsync(map0, Cluster.MapYaml([ports[1]], "[\"header:x-shard-key\"]", names: ["pod-1"]));
        await File.WriteAllTextAsync(map1, Cluster.MapYaml([ports[0]], "[\"header:x-shard-key\"]", names: ["pod-0"]));
        var logs = new CollectingLoggerProvider();
        await using var sidecar0 = await TestSidecar.StartAsync("pod-0", ports[0], app0.Port, map0, logs: logs);
        await using var sidecar1 = await TestSidecar.StartAsync("pod-1", ports[1], app1.Port, map1);

        using var client = Cluster.Client(http2: false);
        using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{ports[0]}/x");
        request.Headers.Add("x-shard-key", "k");
        using var response = await client.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal("1", response.Headers.RetryAfter?.Delta?.TotalSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal("the shard maps disagree: after 2 hops this pod's map (generation 1) names pod-1 as owner; not forwarding again\n", body);
        Assert.Equal("pod-1", response.Headers.GetValues("x-sharding-owner").Single());
        var loop = Assert.Single(logs.Entries, e => e.Id.Id == 501);
        Assert.Equal("LoopPrevented", loop.Id.Name);
        Assert.Equal("Not forwarding to pod-1 again: the request already took 2 hops (sender generation 1, ours 1)", loop.Message);
        Assert.Contains(logs.Entries, e => e.Id.Id == 700 && e.Message.Contains("generation 1 is current", StringComparison.Ordinal));
    }

    [Fact]
    public async Task OwnerDown_Is503WithRetryAfter_ThenTheCircuitOpens()
    {
        var directory = Directory.CreateTempSubdirectory("sharding-down-").FullName;
        await using var app0 = await EchoApp.StartAsync("pod-0");
        int[] ports = [TestSidecar.FreePort(), TestSidecar.FreePort()]; // nobody listens on ports[1]
        var map = Path.Combine(directory, "map.yaml");
        await File.WriteAllTextAsync(map, Cluster.MapYaml(ports, "[\"header:x-shard-key\"]"));
        await using var sidecar = await TestSidecar.StartAsync("pod-0", ports[0], app0.Port, map, new Dictionary<string, string?>
        {
            ["Sidecar:BreakerMinimumThroughput"] = "2",
            ["Sidecar:BreakerDuration"] = "00:00:30",
            ["Sidecar:ConnectRetries"] = "1",
        });
        var key = Enumerable.Range(0, 1000).Select(i => $"k{i}").First(k => sidecar.Store.Current!.OwnerOf(k.AsSpan())!.Name == "pod-1");

        using var client = Cluster.Client(http2: false);
        using var first = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{ports[0]}/x");
        first.Headers.Add("x-shard-key", key);
        using var response = await client.SendAsync(first);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.NotNull(response.Headers.RetryAfter);
        Assert.Equal($"owner pod-1 (127.0.0.1:{ports[1]}) is unavailable; the key is not moved to another pod, retry later\n", await response.Content.ReadAsStringAsync());

        // The attempts so far (first try + retry) reach the breaker's minimum: the circuit is open now and sheds at once.
        using var second = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{ports[0]}/x");
        second.Headers.Add("x-shard-key", key);
        using var shed = await client.SendAsync(second);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, shed.StatusCode);
        Assert.InRange(shed.Headers.RetryAfter!.Delta!.Value.TotalSeconds, 1, 30);

        // Keys this pod owns are unaffected.
        var local = Enumerable.Range(0, 1000).Select(i => $"k{i}").First(k => sidecar.Store.Current!.OwnerOf(k.AsSpan())!.Name == "pod-0");
        using var third = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{ports[0]}/x");
        third.Headers.Add("x-shard-key", local);
        using var ok = await client.SendAsync(third);
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);

        using var admin = await client.GetAsync($"http://127.0.0.1:{sidecar.AdminPort}/v1/map");
        var view = await admin.Content.ReadAsStringAsync();
        Assert.Contains("\"circuit\": \"open\"", view, StringComparison.Ordinal);
    }
    /// <summary>
    /// Forwards served by the HTTP/1.1 fast path count as attempts: after 40 of them, six failures against a dead owner are a
    /// ratio of 13 %, under the breaker's 50 %, so the circuit stays closed (it opened at the fifth failure when only the full
    /// path's attempts were counted).
    /// </summary>
    [Fact]
    public async Task FastPathForwards_CountInTheBreakersFailureRatio()
    {
        var directory = Directory.CreateTempSubdirectory("sharding-ratio-").FullName;
        await using var app0 = await EchoApp.StartAsync("pod-0");
        await using var app1 = await EchoApp.StartAsync("pod-1");
        int[] ports = [TestSidecar.FreePort(), TestSidecar.FreePort()];
        var map = Path.Combine(directory, "map.yaml");
        await File.WriteAllTextAsync(map, Cluster.MapYaml(ports, "[\"header:x-shard-key\"]"));
        var settings = new Dictionary<string, string?>
        {
            ["Sidecar:BreakerSamplingDuration"] = "00:01:00",
            ["Sidecar:BreakerDuration"] = "00:00:30",
            ["Sidecar:ConnectRetries"] = "0",
        };
        await using var entry = await TestSidecar.StartAsync("pod-0", ports[0], app0.Port, map, settings);
        var owner = await TestSidecar.StartAsync("pod-1", ports[1], app1.Port, map, settings);
        var key = Enumerable.Range(0, 1000).Select(i => $"k{i}").First(k => entry.Store.Current!.OwnerOf(k.AsSpan())!.Name == "pod-1");
        using var counters = new FastPathCounters(entry);
        using var client = Cluster.Client(http2: false);
        for (var i = 0; i < 40; i++)
        {
            using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{ports[0]}/x");
            request.Headers.Add("x-shard-key", key);
            using var response = await client.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        await counters.WaitForAsync(static c => c.Served == 40, "40 forwards served"); // counted once the response is out
        await owner.DisposeAsync();
        for (var i = 0; i < 6; i++)
        {
            using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{ports[0]}/x");
            request.Headers.Add("x-shard-key", key);
            using var response = await client.SendAsync(request);
            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
            Assert.StartsWith("owner pod-1 (127.0.0.1:", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        using var admin = await client.GetAsync($"http://127.0.0.1:{entry.AdminPort}/v1/map");
        var view = await admin.Content.ReadAsStringAsync();
        Assert.DoesNotContain("\"circuit\": \"open\"", view, StringComparison.Ordinal);
    }
}

using System.Diagnostics;
using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Sharding.Mapping;
using Sharding.Sidecar.Draining;
using Sharding.Sidecar.Tests.Infrastructure;

namespace Sharding.Sidecar.Tests.Draining;

/// <summary>
/// The check at the end of the grace uses the map current then: a key that moved away and came back within the grace keeps
/// its stream; a key that moved on again is ended naming its owner now, not the one of the first move.
/// </summary>
[Collection(DrainGroup.Name)]
public sealed class DrainRecheckTests
{
    private static readonly TimeSpan Grace = TimeSpan.FromSeconds(3);

    [Fact]
    public async Task KeyMovedAwayAndBackWithinTheGrace_StreamStaysOpen()
    {
        await using var cluster = await DrainCluster.StartAsync(size: 4, members: 3, settings: new Dictionary<string, string?> { ["Sidecar:DrainGrace"] = "00:00:03" });
        var before = cluster.Expected;
        var grown = ShardMap.Create("x", 1, before.Members.Add(new ShardMember("pod-3", "127.0.0.1:1")));
        var key = Enumerable.Range(0, 10_000).Select(i => $"back-{i}")
            .First(k => before.OwnerOf(k.AsSpan())!.Name == "pod-0" && grown.OwnerOf(k.AsSpan())!.Name == "pod-3");
        var sidecar = cluster.Sidecars[0];
        var registry = sidecar.Services.GetRequiredService<StreamRegistry>();
        using var client = WatchClients.CreateClient();
        using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{sidecar.Port}/long-poll", http2: true);
        request.Headers.Add("x-shard-key", key);
        var pending = client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        await WaitTrackedAsync(registry, pending);

        var movedAt = Stopwatch.GetTimestamp();
        await cluster.ChangeMembersAsync(4, 20);
        await cluster.ChangeMembersAsync(3, 30);
        Assert.True(Stopwatch.GetElapsedTime(movedAt) < Grace, "the key came back after the grace: the test proves nothing");

        // Past the first move's grace (and a sweep), the stream is still open and tracked.
        await Task.Delay(Grace + TimeSpan.FromSeconds(1) - Stopwatch.GetElapsedTime(movedAt));
        Assert.False(pending.IsCompleted, "the stream whose key came back was ended");
        Assert.Equal(1, registry.TrackedCount);
    }

    [Fact]
    public async Task KeyMovedOnAgainWithinTheGrace_IsEndedNamingTheCurrentOwner()
    {
        await using var cluster = await DrainCluster.StartAsync(size: 5, members: 3, settings: new Dictionary<string, string?> { ["Sidecar:DrainGrace"] = "00:00:03" });
        var three = cluster.Expected;
        var four = ShardMap.Create("x", 1, three.Members.Add(new ShardMember("pod-3", "127.0.0.1:1")));
        var five = ShardMap.Create("x", 1, four.Members.Add(new ShardMember("pod-4", "127.0.0.1:2")));
        var key = Enumerable.Range(0, 100_000).Select(i => $"on-{i}")
            .First(k => three.OwnerOf(k.AsSpan())!.Name == "pod-0" && four.OwnerOf(k.AsSpan())!.Name == "pod-3" && five.OwnerOf(k.AsSpan())!.Name == "pod-4");
        var sidecar = cluster.Sidecars[0];
        var registry = sidecar.Services.GetRequiredService<StreamRegistry>();
        using var client = WatchClients.CreateClient();
        using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{sidecar.Port}/long-poll", http2: true);
        request.Headers.Add("x-shard-key", key);
        var pending = client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        await WaitTrackedAsync(registry, pending);

        await cluster.ChangeMembersAsync(4, 20);
        await cluster.ChangeMembersAsync(5, 30);
        using var response = await pending.WaitAsync(Grace + TimeSpan.FromSeconds(3));
        var body = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal("pod-4", response.Headers.GetValues("x-sharding-owner").Single());
        Assert.Equal("shard moved to pod-4 at generation 30\n", body);
    }

    private static async Task WaitTrackedAsync(StreamRegistry registry, Task<HttpResponseMessage> pending)
    {
        var deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency * 5;
        while (registry.TrackedCount == 0)
        {
            Assert.True(Stopwatch.GetTimestamp() < deadline, "the long poll was never tracked");
            Assert.False(pending.IsCompleted, "the long poll was answered before any drain");
            await Task.Delay(50);
        }
    }
}

using System.Net;
using Sharding.Keys;
using Sharding.Mapping;
using Sharding.Sidecar.Tests.Infrastructure;

namespace Sharding.Sidecar.Tests.Routing;

/// <summary>The no-key fallbacks other than the default 400, through real sidecars, over HTTP/1.1 (fast path) and HTTP/2.</summary>
public sealed class NoKeyPolicyTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ServeLocally_EachSidecarServesAKeylessRequestWithItsOwnApp(bool http2)
    {
        await using var cluster = await Cluster.StartAsync(extraKeys: "  noKey: serveLocally\n");
        using var client = Cluster.Client(http2);
        foreach (var sidecar in cluster.Sidecars)
        {
            using var response = await client.SendAsync(Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{sidecar.Port}/nothing-here", http2));
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.OK, body);
            Assert.Equal(sidecar.PodName, body.Split('|')[0]); // the app that served it
            Assert.Equal(sidecar.PodName, response.Headers.GetValues("x-sharding-owner").Single());
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task FixedMember_EverySidecarSendsAKeylessRequestToTheFallbackMember(bool http2)
    {
        await using var cluster = await Cluster.StartAsync(extraKeys: "  noKey: fixedMember\n  fallbackMember: pod-2\n");
        using var client = Cluster.Client(http2);
        foreach (var sidecar in cluster.Sidecars)
        {
            using var response = await client.SendAsync(Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{sidecar.Port}/nothing-here", http2));
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.OK, body);
            Assert.Equal("pod-2", body.Split('|')[0]);
            Assert.Equal("pod-2", response.Headers.GetValues("x-sharding-owner").Single());
        }
    }

    [Fact]
    public async Task FixedMember_NotInTheMap_Is503WithRetryAfter_NotA400()
    {
        await using var cluster = await Cluster.StartAsync(extraKeys: "  noKey: fixedMember\n  fallbackMember: pod-2\n");

        // What the control plane publishes when the pod named by sharding.dev/fallback-member is not Ready: the map lacks it.
        var current = cluster.Map;
        var map = ShardMap.Create(current.Service, current.Generation + 1, current.Members.Where(m => m.Name != "pod-2").ToArray(), keyPolicy: current.KeyPolicy);
        Assert.Equal(NoKeyAction.FixedMember, map.KeyPolicy.NoKey);
        Assert.True(cluster.Sidecars[0].Store.TryPublish(map));

        using var client = Cluster.Client(http2: false);
        using var response = await client.GetAsync($"http://127.0.0.1:{cluster.Sidecars[0].Port}/nothing-here");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.NotNull(response.Headers.RetryAfter);
        Assert.Equal(
            $"no shard key, and pod-2, the member that serves requests without one, is not in shard map generation {map.Generation}\n",
            await response.Content.ReadAsStringAsync());
    }
}

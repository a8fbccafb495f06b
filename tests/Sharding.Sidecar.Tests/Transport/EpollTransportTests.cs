using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Sharding.Sidecar.Tests.Infrastructure;
using Sharding.Sidecar.Transport;

namespace Sharding.Sidecar.Tests.Transport;

/// <summary>
/// The sidecar on its own epoll transport (the default) and on the runtime's sockets: both route every request to its owner
/// over HTTP/1.1 (the fast path, owned and forwarded) and HTTP/2 prior knowledge, and the default really runs on the loops.
/// </summary>
public sealed class EpollTransportTests
{
    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 2)]
    [InlineData(3, 2)]
    [InlineData(4, 2)]
    [InlineData(6, 3)]
    [InlineData(8, 4)]
    [InlineData(64, 4)]
    public void By_default_a_sidecar_runs_half_its_processors_in_loops_from_two_to_four(int processors, int loops) =>
        Assert.Equal(loops, EpollLoops.DefaultCount(processors));

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Requests_reach_their_owner_over_either_transport(bool epoll)
    {
        await using var cluster = await Cluster.StartAsync(
            size: 2, sidecarSettings: new Dictionary<string, string?> { ["Sidecar:EpollTransport"] = epoll ? "true" : "false" });
        var loops = cluster.Sidecars[0].Services.GetRequiredService<EpollLoops>();
        Assert.Equal(epoll, loops.Enabled);

        foreach (var http2 in new[] { false, true })
        {
            using var client = Cluster.Client(http2);
            for (var i = 0; i < 40; i++)
            {
                var key = $"transport-{http2}-{i}";
                using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{cluster.Sidecars[i % 2].Port}/t", http2);
                request.Headers.Add("x-shard-key", key);
                using var response = await client.SendAsync(request);
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                Assert.StartsWith(cluster.OwnerOf(key) + "|" + key + "|", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            }

            // The client's kept-alive connections (and the fast path's to the app and the other sidecar) sit on the loops.
            Assert.Equal(epoll, loops.Sockets > 0);
        }
    }
}

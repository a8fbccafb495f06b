using System.Net;
using System.Net.Sockets;

namespace Sharding.ControlPlane.Tests.Hosting;

/// <summary>
/// The manifests bind the control plane's listeners to <c>[::]</c>: sidecars in an IPv6-only cluster reach it through its
/// IPv6 pod IP, and IPv4 clients still reach it (dual-stack), without a second setting.
/// </summary>
public sealed class DualStackListenTests
{
    [Fact]
    public async Task BracketedAnyAddress_ServesIPv4AndIPv6Clients()
    {
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(3));
        await using var replica = await ControlPlaneReplica.StartAsync(
            cluster.Directory, "dual", extra: ["--ControlPlane:HttpUrl=http://[::]:0", "--ControlPlane:GrpcUrl=http://[::]:0"]);

        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        if (!Socket.OSSupportsIPv6)
        {
            // No IPv6 in this kernel: [::] cannot be bound, so the listener fell back to 0.0.0.0 rather than failing to start.
            Assert.Equal("0.0.0.0", replica.HttpUrl.Host);
            Assert.Equal("ok\n", await http.GetStringAsync($"http://127.0.0.1:{replica.HttpUrl.Port}/healthz"));
            return;
        }

        Assert.Equal("[::]", replica.HttpUrl.Host);
        Assert.Equal("[::]", replica.GrpcUrl.Host);
        Assert.Equal("ok\n", await http.GetStringAsync($"http://127.0.0.1:{replica.HttpUrl.Port}/healthz"));
        Assert.Equal("ok\n", await http.GetStringAsync($"http://[::1]:{replica.HttpUrl.Port}/healthz"));

        // The gRPC listener (HTTP/2 only) answers over both families too.
        foreach (var host in new[] { "127.0.0.1", "[::1]" })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, $"http://{host}:{replica.GrpcUrl.Port}/healthz")
            {
                Version = HttpVersion.Version20,
                VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            };
            using var response = await http.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
    }
}

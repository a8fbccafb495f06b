using System.Net;
using System.Net.Sockets;
using Sharding.ControlPlane.Tests.Hosting;
using Sharding.Protocol;
using Sharding.Protocol.V1;
using Sharding.Testing;

namespace Sharding.ControlPlane.Tests.Distribution;

/// <summary>
/// A follower that cannot hear the leader it relays (a partition; the leader still leads) must not keep serving its last maps
/// as if they were current: after <c>RelayCutOffAfter</c> it is not ready and ends its Watch streams with UNAVAILABLE and
/// GOAWAY, so subscribers reconnect (over a new connection) to a replica that hears the leader. Once it hears it again, it is
/// ready and serves again.
/// </summary>
public sealed class RelayCutOffTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task FollowerCutOffFromALiveLeader_IsNotReady_EndsItsStreams_AndRecovers()
    {
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(3));
        await using var partition = new TcpForwarder();
        await using var leader = await ControlPlaneReplica.StartAsync(
            cluster.Directory, "a", extra: $"--ControlPlane:AdvertisedGrpcUrl=http://127.0.0.1:{partition.Port}");
        partition.TargetPort = leader.GrpcUrl.Port;
        Assert.True(await leader.WaitAsync(static r => r.Elector.Current.IsLeader && r.Registry.IsSynced, Wait));
        await using var follower = await ControlPlaneReplica.StartAsync(
            cluster.Directory, "b", extra: ["--ControlPlane:RelayIdleTimeout=00:00:01", "--ControlPlane:RelayCutOffAfter=00:00:02"]);
        Assert.True(await follower.WaitAsync(static r => r.Registry.IsSynced && !r.Elector.Current.IsLeader, Wait));

        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var connects = 0;
        using var grpc = new HttpMessageInvoker(new SocketsHttpHandler
        {
            ConnectCallback = async (context, token) =>
            {
                Interlocked.Increment(ref connects);
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                await socket.ConnectAsync(context.DnsEndPoint, token);
                return new NetworkStream(socket, ownsSocket: true);
            },
        });
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync(new Uri(follower.HttpUrl, "/readyz"))).StatusCode);
        var stream = await GrpcClient.StartServerStreamingAsync(
            grpc, follower.GrpcUrl, GrpcProtocol.WatchPath, new WatchRequest { Service = "sharded-svc" }, ShardMapUpdate.Parser, null, 1 << 20, CancellationToken.None);
        Assert.Equal(UpdateKind.Snapshot, (await stream.ReadAsync(CancellationToken.None))!.Kind);

        partition.Cut();

        // The stream ends with UNAVAILABLE once the follower counts itself cut off; until then it only pings.
        var ended = await Assert.ThrowsAsync<GrpcCallException>(async () =>
        {
            using var timeout = new CancellationTokenSource(Wait);
            while (await stream.ReadAsync(timeout.Token) is not null)
            {
            }
        });
        await stream.DisposeAsync();
        Assert.Equal(GrpcStatusCode.Unavailable, ended.StatusCode);
        Assert.StartsWith($"control plane replica cut off from the leader (no word from the leader at http://127.0.0.1:{partition.Port}", ended.Detail, StringComparison.Ordinal);
        Assert.EndsWith("); reconnect to another replica", ended.Detail, StringComparison.Ordinal);

        using (var ready = await http.GetAsync(new Uri(follower.HttpUrl, "/readyz")))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
            Assert.StartsWith("not ready: cut off from the leader (no word from the leader at ", await ready.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync(new Uri(leader.HttpUrl, "/readyz"))).StatusCode);
        Assert.Contains("\nsharding_controlplane_cut_off 1\n", await http.GetStringAsync(new Uri(follower.HttpUrl, "/metrics")), StringComparison.Ordinal);
        Assert.Contains("\nsharding_controlplane_cut_off 0\n", await http.GetStringAsync(new Uri(leader.HttpUrl, "/metrics")), StringComparison.Ordinal);
        using (var lookup = await http.GetAsync(new Uri(follower.HttpUrl, "/v1/lookup?service=sharded-svc&key=k")))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, lookup.StatusCode);
            Assert.Equal("1", lookup.Headers.RetryAfter?.ToString());
            Assert.Contains("this control plane replica is cut off from the leader (no word from the leader at ", await lookup.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        // A new Watch is refused the same way, over a new connection: the first one was closed with GOAWAY.
        var refused = await Assert.ThrowsAsync<GrpcCallException>(async () =>
        {
            await using var again = await GrpcClient.StartServerStreamingAsync(
                grpc, follower.GrpcUrl, GrpcProtocol.WatchPath, new WatchRequest { Service = "sharded-svc" }, ShardMapUpdate.Parser, null, 1 << 20, CancellationToken.None);
            await again.ReadAsync(CancellationToken.None);
        });
        Assert.Equal(GrpcStatusCode.Unavailable, refused.StatusCode);
        Assert.Equal(2, Volatile.Read(ref connects));

        // Heard again: ready, and a Watch gets the current map.
        partition.Restore();
        Assert.True(await follower.WaitAsync(static r => r.Registry.CutOff is null, Wait));
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync(new Uri(follower.HttpUrl, "/readyz"))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync(new Uri(follower.HttpUrl, "/v1/lookup?service=sharded-svc&key=k"))).StatusCode);
        Assert.Contains("\nsharding_controlplane_cut_off 0\n", await http.GetStringAsync(new Uri(follower.HttpUrl, "/metrics")), StringComparison.Ordinal);
        await using var resumed = await GrpcClient.StartServerStreamingAsync(
            grpc, follower.GrpcUrl, GrpcProtocol.WatchPath, new WatchRequest { Service = "sharded-svc" }, ShardMapUpdate.Parser, null, 1 << 20, CancellationToken.None);
        Assert.Equal(UpdateKind.Snapshot, (await resumed.ReadAsync(CancellationToken.None))!.Kind);
    }

    /// <summary>The leader itself, and a follower that hears it, are never cut off, however long nothing changes.</summary>
    [Fact]
    public async Task QuietButConnected_IsNeverCutOff()
    {
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(3));
        await using var leader = await ControlPlaneReplica.StartAsync(cluster.Directory, "a");
        Assert.True(await leader.WaitAsync(static r => r.Elector.Current.IsLeader && r.Registry.IsSynced, Wait));
        await using var follower = await ControlPlaneReplica.StartAsync(
            cluster.Directory, "b", extra: ["--ControlPlane:RelayIdleTimeout=00:00:01", "--ControlPlane:RelayCutOffAfter=00:00:02"]);
        Assert.True(await follower.WaitAsync(static r => r.Registry.IsSynced, Wait));

        await Task.Delay(TimeSpan.FromSeconds(3)); // beyond RelayCutOffAfter without a new generation: keep-alives count
        Assert.Null(follower.Registry.CutOff);
        Assert.Null(leader.Registry.CutOff);
    }
}

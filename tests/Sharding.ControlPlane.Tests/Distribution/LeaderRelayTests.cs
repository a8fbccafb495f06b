using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Sharding.ControlPlane.Distribution;
using Sharding.ControlPlane.Hosting;
using Sharding.ControlPlane.Leadership;
using Sharding.ControlPlane.Tests.Hosting;

namespace Sharding.ControlPlane.Tests.Distribution;

/// <summary>A follower's <see cref="LeaderRelay"/> against a real leader replica (local mode), with the follower's election scripted.</summary>
public sealed class LeaderRelayTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task LockFileDeleted_AnotherReplicaLocksTheNewFile_TheOldLeaderStepsDown()
    {
        // The lock lives on the file's inode: once the path is deleted (a cleanup of the folder), the next replica creates a new
        // file and locks it while the old leader still holds the lock on the unlinked one. Two leaders, unless it notices.
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(3));
        await using var a = await ControlPlaneReplica.StartAsync(cluster.Directory, "a");
        Assert.True(await a.WaitAsync(r => r.Elector.Current.IsLeader && r.Registry.IsSynced, Wait));
        await using var b = await ControlPlaneReplica.StartAsync(cluster.Directory, "b");
        Assert.True(await b.WaitAsync(r => r.Registry.IsSynced && !r.Elector.Current.IsLeader, Wait));

        File.Delete(Path.Combine(cluster.Directory, "leader.lock"));
        Assert.True(await b.WaitAsync(r => r.Elector.Current.IsLeader || a.Elector.Current.LeaderId != "a", Wait));
        Assert.True(
            await a.WaitAsync(r => !(r.Elector.Current.IsLeader && b.Elector.Current.IsLeader), TimeSpan.FromSeconds(3)),
            "both replicas lead after the lock file was deleted");
        Assert.True(await a.WaitAsync(r => r.Elector.Current.IsLeader ^ b.Elector.Current.IsLeader, Wait));
    }

    [Fact]
    public async Task EpochFileNotWritableAtFirst_ReplicaKeepsCompetingAndLeadsOnceItIs()
    {
        // A write error while taking the lock (here the epoch file's path is a folder) must not end the election loop for good.
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(3));
        var blocker = Path.Combine(cluster.Directory, "leader.lock.epoch");
        Directory.CreateDirectory(blocker);
        await using var a = await ControlPlaneReplica.StartAsync(cluster.Directory, "a");
        await Task.Delay(TimeSpan.FromSeconds(0.5));
        Assert.False(a.Elector.Current.IsLeader);

        Directory.Delete(blocker);
        Assert.True(await a.WaitAsync(r => r.Elector.Current.IsLeader && r.Registry.IsSynced, TimeSpan.FromSeconds(5)), "the replica stopped competing");
        Assert.Equal("1", File.ReadAllText(blocker).Trim());
    }

    [Fact]
    public async Task LeaderWithoutMembershipYet_ItsKeepAlivePingsDoNotMarkTheFollowerInSync()
    {
        // No membership file yet: the leader has computed nothing, so it is not in sync and neither may its followers be.
        using var cluster = new TempCluster();
        await using var leader = await ControlPlaneReplica.StartAsync(cluster.Directory, "a");
        Assert.True(await leader.WaitAsync(r => r.Elector.Current.IsLeader, Wait));
        await using var follower = await ControlPlaneReplica.StartAsync(cluster.Directory, "b");
        Assert.True(await follower.WaitAsync(r => r.Elector.Current.LeaderAddress is not null && !r.Elector.Current.IsLeader, Wait));

        // Several ping intervals (0.5 s) of the relay stream.
        await Task.Delay(TimeSpan.FromSeconds(1.5));
        Assert.False(leader.Registry.IsSynced);
        Assert.False(follower.Registry.IsSynced, "a keep-alive PING of an unsynced leader was taken for the in-sync marker");
        using var http = new HttpClient();
        using var ready = await http.GetAsync(new Uri(follower.HttpUrl, "/readyz"));
        Assert.Equal(System.Net.HttpStatusCode.ServiceUnavailable, ready.StatusCode);

        // Once the leader computes, the follower catches up and is ready.
        cluster.Write(TempCluster.Yaml(3));
        Assert.True(await follower.WaitAsync(r => r.Registry.IsSynced && r.Registry.TryGet("sharded-svc", out _), Wait));
    }

    [Fact]
    public async Task ClaimNotedWhileNoLeaderIsKnown_ReachesTheLeaderOnceTheFollowerLearnsIt_WhichRaisesItsEpochAboveIt()
    {
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(3));
        await using var leader = await ControlPlaneReplica.StartAsync(cluster.Directory, "a");
        Assert.True(await leader.WaitAsync(r => r.Registry.IsSynced && r.Registry.All.Any(), Wait));
        var epoch = leader.Elector.Current.Epoch;

        // The follower during a re-election: it knows no leader when a sidecar tells it what it holds, a generation of an epoch
        // this installation never reached (its Lease was deleted and restarted from 0).
        var elector = new ScriptedElector();
        var registry = new ShardMapRegistry();
        var endpoints = new ControlPlaneEndpoints();
        endpoints.SetBound(new Uri("http://127.0.0.1:1"), new Uri("http://127.0.0.1:2"), new Uri("http://127.0.0.1:2"));
        using var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var metrics = new ControlPlaneMetrics(services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>(), registry, elector);
        using var relay = new LeaderRelay(
            elector, registry, endpoints, metrics, Options.Create(new ControlPlaneOptions { ReplicaId = "b" }), TimeProvider.System, NullLoggerFactory.Instance);
        await relay.StartAsync(CancellationToken.None);
        try
        {
            var claimed = ((epoch + 5) << 32) | 3;
            Assert.True(registry.NoteHeld("sharded-svc", claimed, checksum: 42));
            Assert.Equal([("sharded-svc", claimed, 42UL)], registry.UnsettledClaims());
            await Task.Delay(300);
            Assert.Equal(0, leader.Registry.HeldAbove("sharded-svc")); // nobody to tell yet

            // The election settles: the follower now knows the leader and starts relaying it; the claim goes along.
            elector.Set(new LeadershipState(false, epoch, "a", leader.GrpcUrl.ToString()));
            Assert.True(
                await leader.WaitAsync(r => r.Registry.All.Single().Map.Generation > claimed, Wait),
                $"the leader still publishes generation {leader.Registry.All.Single().Map.Generation} (epoch {leader.Registry.All.Single().Map.Generation >> 32})");

            // The follower relays the leader's new epoch, which settles the claim.
            for (var i = 0; i < 200 && registry.UnsettledClaims().Count > 0; i++)
            {
                await Task.Delay(50);
            }

            Assert.Empty(registry.UnsettledClaims());
            Assert.True(registry.All.Single().Map.Generation > claimed);
        }
        finally
        {
            await relay.StopAsync(CancellationToken.None);
        }
    }

    private sealed class ScriptedElector : ILeaderElector
    {
        public LeadershipState Current { get; private set; } = LeadershipState.Unknown;

        public event Action<LeadershipState>? Changed;

        public void Set(LeadershipState state)
        {
            Current = state;
            Changed?.Invoke(state);
        }

        public Task RunAsync(CancellationToken cancellationToken) => Task.Delay(Timeout.Infinite, cancellationToken);

        public bool RaiseEpochAbove(long epoch) => false;
    }
}

using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Sharding.ControlPlane.Tests.Hosting;
using Sharding.Mapping;
using Sharding.Protocol;
using Sharding.Protocol.V1;

namespace Sharding.ControlPlane.Tests.Distribution;

/// <summary>Real Kestrel replicas on loopback, in local mode, with the real subscription client.</summary>
public sealed class AssignmentStreamingTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);

    private static AssignmentsWatcher Watcher(params Uri[] urls) => new(new AssignmentsWatcherOptions
    {
        ControlPlaneUrls = urls,
        Service = "sharded-svc",
        SubscriberName = "test-sidecar",
        PingInterval = TimeSpan.FromMilliseconds(300),
        IdleTimeout = TimeSpan.FromSeconds(2),
        MinReconnectDelay = TimeSpan.FromMilliseconds(50),
        MaxReconnectDelay = TimeSpan.FromMilliseconds(300),
        ConnectTimeout = TimeSpan.FromSeconds(2),
    });

    [Fact]
    public async Task Watch_MembershipFileEdited_SnapshotThenOneDeltaPerDebounceWindow()
    {
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(3));
        await using var replica = await ControlPlaneReplica.StartAsync(cluster.Directory, "a");
        await using var watcher = Watcher(replica.GrpcUrl);
        var applied = new List<ShardMapApplied>();
        watcher.MapApplied += a => { lock (applied) { applied.Add(a); } };
        watcher.Start();
        Assert.True(await watcher.Store.WaitForGenerationAsync(1, Wait, CancellationToken.None));
        var first = watcher.Store.Current!;
        Assert.Equal(3, first.Members.Length);
        Assert.Equal(1, first.Generation & 0xFFFFFFFF);

        // Three edits inside one debounce window (100 ms) → exactly one new generation, carried as a delta.
        cluster.Write(TempCluster.Yaml(4));
        cluster.Write(TempCluster.Yaml(5));
        cluster.Write(TempCluster.Yaml(6));
        Assert.True(await watcher.Store.WaitForGenerationAsync(first.Generation + 1, Wait, CancellationToken.None));
        await Task.Delay(400);
        lock (applied)
        {
            Assert.Equal(2, applied.Count);
            Assert.Equal(UpdateKind.Snapshot, applied[0].Kind);
            Assert.Equal(UpdateKind.Delta, applied[1].Kind);
            Assert.Equal(6, applied[1].Map.Members.Length);
            Assert.Equal(first.Generation + 1, applied[1].Map.Generation);
        }

        Assert.Equal(replica.Registry.All.Single().Map.Checksum, watcher.Store.Current!.Checksum);
        Assert.True(watcher.Status.Connected);
    }

    [Fact]
    public async Task Watch_BadEditThenGoodEdit_KeepsLastGoodThenPublishes()
    {
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(3));
        await using var replica = await ControlPlaneReplica.StartAsync(cluster.Directory, "a");
        Assert.True(await replica.WaitAsync(r => r.Registry.IsSynced, Wait));
        var generation = replica.Registry.All.Single().Map.Generation;
        cluster.Write("services:\n  sharded-svc:\n    tableSize: 100\n    members: []\n");
        await Task.Delay(600);
        Assert.Equal(generation, replica.Registry.All.Single().Map.Generation);
        cluster.Write(TempCluster.Yaml(2));
        Assert.True(await replica.WaitAsync(r => r.Registry.All.Single().Map.Members.Length == 2, Wait));
    }

    [Fact]
    public async Task TwoReplicas_LeaderStops_FollowerTakesOverAndSubscribersFollow()
    {
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(3));
        var leader = await ControlPlaneReplica.StartAsync(cluster.Directory, "a");
        Assert.True(await leader.WaitAsync(r => r.Elector.Current.IsLeader && r.Registry.IsSynced, Wait));
        await using var follower = await ControlPlaneReplica.StartAsync(cluster.Directory, "b");
        Assert.True(await follower.WaitAsync(r => r.Registry.IsSynced && !r.Elector.Current.IsLeader, Wait));

        // A sidecar connected to the follower receives the leader's generations.
        await using var watcher = Watcher(follower.GrpcUrl, leader.GrpcUrl);
        watcher.Start();
        var leaderGeneration = leader.Registry.All.Single().Map.Generation;
        Assert.True(await watcher.Store.WaitForGenerationAsync(leaderGeneration, Wait, CancellationToken.None));
        cluster.Write(TempCluster.Yaml(4));
        Assert.True(await watcher.Store.WaitForGenerationAsync(leaderGeneration + 1, Wait, CancellationToken.None));
        Assert.Equal(leader.Registry.All.Single().Map.Checksum, watcher.Store.Current!.Checksum);
        Assert.Equal(follower.GrpcUrl, watcher.Status.ControlPlane);

        // The leader goes away: the follower takes over with a higher epoch, generations keep growing.
        var epoch = leader.Elector.Current.Epoch;
        var before = watcher.Store.Current!.Generation;
        await leader.DisposeAsync();
        Assert.True(await follower.WaitAsync(r => r.Elector.Current.IsLeader, Wait));
        Assert.True(follower.Elector.Current.Epoch > epoch);
        cluster.Write(TempCluster.Yaml(5));
        Assert.True(await watcher.Store.WaitForGenerationAsync(before + 1, Wait, CancellationToken.None));
        Assert.Equal(5, watcher.Store.Current!.Members.Length);
        Assert.True(watcher.Store.Current.Generation >> 32 == follower.Elector.Current.Epoch);
    }

    [Fact]
    public async Task Watch_AllReplicasGone_KeepsLastMapAndCatchesUpOnReconnect()
    {
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(3));
        var replica = await ControlPlaneReplica.StartAsync(cluster.Directory, "a");
        var url = replica.GrpcUrl;
        await using var watcher = Watcher(url);
        watcher.Start();
        Assert.True(await watcher.Store.WaitForGenerationAsync(1, Wait, CancellationToken.None));
        var held = watcher.Store.Current!;
        await replica.DisposeAsync();
        Assert.True(await WaitUntil(() => !watcher.Status.Connected, Wait));
        Assert.Same(held, watcher.Store.Current);
        Assert.NotNull(watcher.Store.Current!.OwnerOf("some-key"));

        cluster.Write(TempCluster.Yaml(4));
        await using var back = await ControlPlaneReplica.StartAsync(cluster.Directory, "b", extra: $"--ControlPlane:GrpcUrl={url}");
        Assert.True(await watcher.Store.WaitForGenerationAsync(held.Generation + 1, TimeSpan.FromSeconds(15), CancellationToken.None));
        Assert.Equal(4, watcher.Store.Current!.Members.Length);
        Assert.True(watcher.Status.Reconnects >= 1);
    }

    [Fact]
    public async Task Watch_EpochFileLostThenOtherMembers_SameGenerationOtherContent_LeaderMovesToANewEpoch()
    {
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(3));
        var replica = await ControlPlaneReplica.StartAsync(cluster.Directory, "a");
        var url = replica.GrpcUrl;
        await using var watcher = Watcher(url);
        watcher.Start();
        Assert.True(await watcher.Store.WaitForGenerationAsync(1, Wait, CancellationToken.None));
        var held = watcher.Store.Current!;
        await replica.DisposeAsync();

        // The lease folder is wiped (a new volume) and the membership changes meanwhile. The next leader starts from epoch 1 again
        // and publishes generation (1 << 32) | 1 once more, with other content: the watcher holds that number, so it would never
        // take it. Told the checksum it holds, the leader moves to epoch 2.
        foreach (var file in Directory.GetFiles(cluster.Directory, "leader.lock*"))
        {
            File.Delete(file);
        }

        cluster.Write(TempCluster.Yaml(4));
        await using var back = await ControlPlaneReplica.StartAsync(cluster.Directory, "b", extra: $"--ControlPlane:GrpcUrl={url}");
        Assert.True(await back.WaitAsync(r => r.Elector.Current.IsLeader, Wait));
        Assert.True(await watcher.Store.WaitForGenerationAsync(held.Generation + 1, TimeSpan.FromSeconds(15), CancellationToken.None),
            $"the watcher still holds generation {watcher.Store.Current!.Generation} with {watcher.Store.Current.Members.Length} members");
        Assert.Equal(4, watcher.Store.Current!.Members.Length);
        Assert.Equal(1, held.Generation >> 32);
        Assert.Equal(2, back.Elector.Current.Epoch);
        Assert.Equal(2, watcher.Store.Current.Generation >> 32);
        Assert.Equal("2", File.ReadAllText(Path.Combine(cluster.Directory, "leader.lock.epoch")).Trim());
    }

    [Fact]
    public async Task Directory_LookupMapAndServices_JsonAndErrors()
    {
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(3, tableSize: 251));
        await using var replica = await ControlPlaneReplica.StartAsync(cluster.Directory, "a");
        Assert.True(await replica.WaitAsync(r => r.Registry.IsSynced, Wait));
        using var http = new HttpClient { BaseAddress = replica.HttpUrl };
        var map = replica.Registry.All.Single().Map;

        var lookup = await http.GetFromJsonAsync<JsonElement>("/v1/lookup?service=sharded-svc&key=user-42");
        Assert.Equal(map.OwnerOf("user-42")!.Name, lookup.GetProperty("owner").GetString());
        Assert.Equal(map.OwnerOf("user-42")!.Address, lookup.GetProperty("address").GetString());
        Assert.Equal(map.Generation, lookup.GetProperty("generation").GetInt64());

        var view = await http.GetFromJsonAsync<JsonElement>("/v1/services/sharded-svc/map");
        Assert.Equal(251, view.GetProperty("table").GetArrayLength());
        Assert.Equal(3, view.GetProperty("members").GetArrayLength());
        var services = await http.GetFromJsonAsync<JsonElement>("/v1/services");
        Assert.Equal("sharded-svc", services.GetProperty("services")[0].GetProperty("name").GetString());

        using var unknown = await http.GetAsync(new Uri("/v1/lookup?service=nope&key=k", UriKind.Relative));
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
        Assert.Contains("unknown service 'nope'", await unknown.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        using var noKey = await http.GetAsync(new Uri("/v1/lookup?service=sharded-svc", UriKind.Relative));
        Assert.Equal(HttpStatusCode.BadRequest, noKey.StatusCode);
        Assert.Contains("'key' is required", await noKey.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        using var badTable = await http.GetAsync(new Uri("/v1/services/sharded-svc/map?table=maybe", UriKind.Relative));
        Assert.Equal(HttpStatusCode.BadRequest, badTable.StatusCode);
        Assert.Contains("query parameter 'table' must be true or false, not 'maybe'", await badTable.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.False((await http.GetFromJsonAsync<JsonElement>("/v1/services/sharded-svc/map?table=False")).TryGetProperty("table", out var none) && none.ValueKind != JsonValueKind.Null);

        var metrics = await http.GetStringAsync(new Uri("/metrics", UriKind.Relative));
        Assert.Contains("sharding_controlplane_leader 1", metrics, StringComparison.Ordinal);
        Assert.Contains("sharding_controlplane_service_members{service=\"sharded-svc\"} 3", metrics, StringComparison.Ordinal);
        Assert.Equal("ok\n", await http.GetStringAsync(new Uri("/healthz", UriKind.Relative)));
    }

    [Fact]
    public async Task Watch_UnknownServiceAndDeadline_GrpcStatuses()
    {
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(2, tableSize: 251));
        await using var replica = await ControlPlaneReplica.StartAsync(cluster.Directory, "a");
        Assert.True(await replica.WaitAsync(r => r.Registry.IsSynced, Wait));
        using var client = new HttpClient();
        var ex = await Assert.ThrowsAsync<GrpcCallException>(() => GrpcClient.StartServerStreamingAsync(
            client, replica.GrpcUrl, GrpcProtocol.WatchPath, new WatchRequest { Service = "nope" }, ShardMapUpdate.Parser, null, 1 << 20, CancellationToken.None));
        Assert.Equal(GrpcStatusCode.NotFound, ex.StatusCode);
        Assert.Contains("sharded-svc", ex.Detail, StringComparison.Ordinal);

        await using var call = await GrpcClient.StartServerStreamingAsync(
            client, replica.GrpcUrl, GrpcProtocol.WatchPath, new WatchRequest { Service = "sharded-svc" }, ShardMapUpdate.Parser, TimeSpan.FromMilliseconds(300), 1 << 20, CancellationToken.None);
        Assert.Equal(UpdateKind.Snapshot, (await call.ReadAsync(CancellationToken.None))!.Kind);
        var deadline = await Assert.ThrowsAsync<GrpcCallException>(async () =>
        {
            for (var i = 0; i < 100 && await call.ReadAsync(CancellationToken.None) is not null; i++)
            {
            }
        });
        Assert.Equal(GrpcStatusCode.DeadlineExceeded, deadline.StatusCode);

        var tooSmall = await Assert.ThrowsAsync<GrpcCallException>(async () =>
        {
            await using var small = await GrpcClient.StartServerStreamingAsync(
                client, replica.GrpcUrl, GrpcProtocol.WatchPath, new WatchRequest { Service = "sharded-svc" }, ShardMapUpdate.Parser, null, 64, CancellationToken.None);
            await small.ReadAsync(CancellationToken.None);
        });
        Assert.Equal(GrpcStatusCode.ResourceExhausted, tooSmall.StatusCode);
    }

    private static async Task<bool> WaitUntil(Func<bool> condition, TimeSpan timeout)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (clock.Elapsed < timeout && !condition())
        {
            await Task.Delay(20);
        }

        return condition();
    }
}

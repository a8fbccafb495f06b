using System.Threading.Channels;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Sharding.ControlPlane.Membership;
using Sharding.Hashing;
using Sharding.Keys;
using Sharding.Kubernetes;
using Sharding.Mapping;
using Sharding.Testing;
using Sharding.Testing.Kubernetes;

namespace Sharding.ControlPlane.Tests.Membership;

public sealed class PodMembershipSourceTests : IAsyncLifetime
{
    private const string Ns = "shop";
    private readonly ManualTimeProvider _time = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Channel<MembershipSnapshot> _snapshots = Channel.CreateUnbounded<MembershipSnapshot>();
    private FakeKubernetesApiServer _server = null!;
    private KubernetesClient _client = null!;
    private Task _pump = Task.CompletedTask;
    private MembershipSnapshot? _latest;

    private static Dictionary<string, string> Labels(string service = "sharded-svc") => new() { ["app"] = service, [PodMembershipOptions.ServiceLabel] = service };

    public async Task InitializeAsync()
    {
        _server = await FakeKubernetesApiServer.StartAsync(_time);
        _client = _server.CreateClient();
    }

    public async Task DisposeAsync()
    {
        await _stop.CancelAsync();
        await _pump.WaitAsync(TimeSpan.FromSeconds(10)).ContinueWith(static _ => { }, TaskScheduler.Default);
        _client.Dispose();
        await _server.DisposeAsync();
    }

    [Fact]
    public async Task WatchAsync_PodsAppearAndTurnReady_JoinUnderPodNameAtSidecarAddress()
    {
        _server.AddPod(Ns, "sharded-svc-0", Labels(), ready: true, podIP: "10.0.0.10");
        _server.AddPod(Ns, "sharded-svc-1", Labels());
        Start();

        var first = await WaitForAsync(s => s.Services.ContainsKey("sharded-svc"));
        Assert.Equal([new ShardMember("sharded-svc-0", "10.0.0.10:15100")], first.Services["sharded-svc"].Members.ToArray());

        _server.SetPodReady(Ns, "sharded-svc-1", ready: true, podIP: "10.0.0.11");
        var second = await WaitForAsync(s => s.Services["sharded-svc"].Members.Length == 2);
        Assert.Equal(["sharded-svc-0", "sharded-svc-1"], second.Services["sharded-svc"].Members.Select(m => m.Name));

        _server.AddPod(Ns, "unrelated", new Dictionary<string, string> { ["app"] = "other" }, ready: true, podIP: "10.0.0.99");
        _server.AddPod(Ns, "sharded-svc-2", Labels(), ready: true, podIP: "10.0.0.12");
        var third = await WaitForAsync(s => s.Services["sharded-svc"].Members.Length == 3);
        Assert.Single(third.Services);
    }

    [Fact]
    public async Task WatchAsync_ReadinessFlapsWithinGracePeriod_MemberKeepsItsKeys()
    {
        _server.AddPod(Ns, "sharded-svc-0", Labels(), ready: true, podIP: "10.0.0.10");
        _server.AddPod(Ns, "sharded-svc-1", Labels(), ready: true, podIP: "10.0.0.11");
        Start();
        await WaitForAsync(s => s.Services.TryGetValue("sharded-svc", out var svc) && svc.Members.Length == 2);

        _server.SetPodReady(Ns, "sharded-svc-1", ready: false);
        await SettleAsync();
        _time.Advance(TimeSpan.FromSeconds(20));
        _server.SetPodReady(Ns, "sharded-svc-1", ready: true);
        await SettleAsync();
        _time.Advance(TimeSpan.FromSeconds(20));
        await SettleAsync();
        Assert.Equal(2, _latest!.Services["sharded-svc"].Members.Length);

        // Not Ready for the whole grace period: dropped when it runs out, not before.
        _server.SetPodReady(Ns, "sharded-svc-1", ready: false);
        await SettleAsync();
        _time.Advance(TimeSpan.FromSeconds(29));
        await SettleAsync();
        Assert.Equal(2, _latest!.Services["sharded-svc"].Members.Length);
        _time.Advance(TimeSpan.FromSeconds(1));
        var dropped = await WaitForAsync(s => s.Services["sharded-svc"].Members.Length == 1);
        Assert.Equal("sharded-svc-0", dropped.Services["sharded-svc"].Members[0].Name);
    }

    [Fact]
    public async Task WatchAsync_NeverReadyPod_DoesNotJoin()
    {
        _server.AddPod(Ns, "sharded-svc-0", Labels(), ready: true, podIP: "10.0.0.10");
        _server.AddPod(Ns, "sharded-svc-1", Labels(), ready: false, podIP: "10.0.0.11");
        Start();
        await WaitForAsync(s => s.Services.ContainsKey("sharded-svc"));
        _time.Advance(TimeSpan.FromSeconds(5));
        await SettleAsync();
        Assert.Single(_latest!.Services["sharded-svc"].Members);
    }

    [Fact]
    public async Task WatchAsync_TerminatingPod_LeavesAtOnceThenDeleteChangesNothing()
    {
        _server.AddPod(Ns, "sharded-svc-0", Labels(), ready: true, podIP: "10.0.0.10");
        _server.AddPod(Ns, "sharded-svc-1", Labels(), ready: true, podIP: "10.0.0.11");
        Start();
        await WaitForAsync(s => s.Services.TryGetValue("sharded-svc", out var svc) && svc.Members.Length == 2);

        _server.BeginPodDeletion(Ns, "sharded-svc-1");
        await WaitForAsync(s => s.Services["sharded-svc"].Members.Length == 1);
        _server.Delete("pods", Ns, "sharded-svc-1");
        _server.Delete("pods", Ns, "sharded-svc-0");
        await WaitForAsync(s => !s.Services.ContainsKey("sharded-svc"));
    }

    [Fact]
    public async Task WatchAsync_WatchDropped_ResumesFromLastVersionWithoutLosingEvents()
    {
        _server.AddPod(Ns, "sharded-svc-0", Labels(), ready: true, podIP: "10.0.0.10");
        Start();
        await WaitForAsync(s => s.Services.ContainsKey("sharded-svc"));

        for (var round = 1; round <= 3; round++)
        {
            _server.DropWatches(abort: round % 2 == 1);
            _server.AddPod(Ns, $"sharded-svc-{round}", Labels(), ready: true, podIP: $"10.0.0.{10 + round}");
            await AdvanceUntilAsync(s => s.Services["sharded-svc"].Members.Length == round + 1);
        }

        // Resumed watches carry a resourceVersion; only one list happened.
        Assert.Single(_server.Requests, r => r.StartsWith("GET /api/v1/namespaces/shop/pods?labelSelector", StringComparison.Ordinal) && !r.Contains("watch=1", StringComparison.Ordinal));
        Assert.All(_server.Requests.Where(r => r.Contains("watch=1", StringComparison.Ordinal)), r => Assert.Contains("resourceVersion=", r, StringComparison.Ordinal));
    }

    [Fact]
    public async Task WatchAsync_HistoryExpiredDuringOutage_RelistsAndEmitsDeletesForVanishedPods()
    {
        _server.AddPod(Ns, "sharded-svc-0", Labels(), ready: true, podIP: "10.0.0.10");
        _server.AddPod(Ns, "sharded-svc-1", Labels(), ready: true, podIP: "10.0.0.11");
        Start();
        await WaitForAsync(s => s.Services.TryGetValue("sharded-svc", out var svc) && svc.Members.Length == 2);

        // The list alone satisfies the wait above; the first watch may still be on its way. Dropping "the watch" before it
        // is open would let it start after the changes below and deliver them live (no outage, no relist).
        for (var waited = 0; _server.ActiveWatchCount == 0; waited += 10)
        {
            Assert.True(waited < 10_000, "the informer never opened its watch");
            await Task.Delay(10);
        }

        // While the watch is down: one pod vanishes, one appears, and the server forgets the history (410 on resume).
        _server.FailNextRequests(1, 500, pathContains: "/pods");
        _server.DropWatches(abort: true);
        _server.Delete("pods", Ns, "sharded-svc-1");
        _server.AddPod(Ns, "sharded-svc-2", Labels(), ready: true, podIP: "10.0.0.12");
        _server.ExpireHistory();

        var after = await AdvanceUntilAsync(s => s.Services["sharded-svc"].Members.Select(m => m.Name).SequenceEqual(["sharded-svc-0", "sharded-svc-2"]));
        Assert.Equal(2, after.Services["sharded-svc"].Members.Length);
        // The first list, then the relist after 410. Whether the injected 500 hits the resumed watch or that relist is a race
        // with the dropped connection; when it hits the relist, the relist is retried (three list requests, two answered).
        Assert.InRange(_server.Requests.Count(r => r.Contains("pods?labelSelector", StringComparison.Ordinal) && !r.Contains("watch=1", StringComparison.Ordinal)), 2, 3);
    }

    [Fact]
    public async Task WatchAsync_ListOutlivesTheRequestTimeout_RetriesInsteadOfStoppingForGood()
    {
        // An overloaded API server answers the first list after the client's request timeout (a TaskCanceledException that
        // is not our shutdown). The informer must retry like after any failure, not end the membership stream for good.
        UseClient(requestTimeout: TimeSpan.FromMilliseconds(300));
        _server.AddPod(Ns, "sharded-svc-0", Labels(), ready: true, podIP: "10.0.0.10");
        var slow = 1;
        _server.BeforeRequest = async request =>
        {
            if (!request.QueryString.Value!.Contains("watch=1", StringComparison.Ordinal) && Interlocked.Exchange(ref slow, 0) == 1)
            {
                await Task.WhenAny(Task.Delay(TimeSpan.FromSeconds(3), request.HttpContext.RequestAborted));
            }
        };
        Start();

        await Task.Delay(TimeSpan.FromSeconds(1));
        var snapshot = await AdvanceUntilAsync(s => s.Services.ContainsKey("sharded-svc"));
        Assert.Single(snapshot.Services["sharded-svc"].Members);
        Assert.False(_pump.IsCompleted, "the membership stream ended");
    }

    [Fact]
    public async Task WatchAsync_WatchConnectionGoesSilent_GivesUpAfterItsTimeoutAndResumes()
    {
        // A watch whose connection died without a FIN or RST (node gone, a load balancer dropped it): nothing ever arrives.
        // The server ends every watch at timeoutSeconds, so one still silent well after that is dead and must be replaced.
        UseClient(requestTimeout: TimeSpan.FromMilliseconds(500));
        _server.AddPod(Ns, "sharded-svc-0", Labels(), ready: true, podIP: "10.0.0.10");
        var blackHoled = 1;
        _server.BeforeRequest = async request =>
        {
            if (request.QueryString.Value!.Contains("watch=1", StringComparison.Ordinal) && Interlocked.Exchange(ref blackHoled, 0) == 1)
            {
                await Task.WhenAny(Task.Delay(Timeout.Infinite, request.HttpContext.RequestAborted));
            }
        };
        Start(watchTimeoutSeconds: 1);
        await WaitForAsync(s => s.Services.ContainsKey("sharded-svc"));

        _server.AddPod(Ns, "sharded-svc-1", Labels(), ready: true, podIP: "10.0.0.11");
        await Task.Delay(TimeSpan.FromSeconds(2));
        var snapshot = await AdvanceUntilAsync(s => s.Services["sharded-svc"].Members.Length == 2);
        Assert.Equal(["sharded-svc-0", "sharded-svc-1"], snapshot.Services["sharded-svc"].Members.Select(m => m.Name));
    }

    [Fact]
    public async Task WatchAsync_Annotations_SetServiceSettingsAndOldestPodWinsConflicts()
    {
        var annotations = new Dictionary<string, string>
        {
            ["sharding.dev/key"] = "header:x-tenant, path:/docs/{key}",
            ["sharding.dev/algorithm"] = "ring",
            ["sharding.dev/table-size"] = "251",
            ["sharding.dev/hash-key"] = "address",
            ["sharding.dev/sidecar-port"] = "16000",
            ["sharding.dev/weight"] = "3",
        };
        _server.AddPod(Ns, "sharded-svc-0", Labels(), annotations, ready: true, podIP: "10.0.0.10");
        _time.Advance(TimeSpan.FromSeconds(5));
        _server.AddPod(Ns, "sharded-svc-1", Labels(), new Dictionary<string, string> { ["sharding.dev/algorithm"] = "modulo" }, ready: true, podIP: "10.0.0.11");
        Start();

        var snapshot = await WaitForAsync(s => s.Services.ContainsKey("sharded-svc"));
        var service = snapshot.Services["sharded-svc"];
        Assert.Equal(ShardAlgorithm.RingHash, service.Algorithm);
        Assert.Equal(251, service.TableOptions.MaglevTableSize);
        Assert.Equal(HashKeySource.Address, service.HashKeySource);
        Assert.Equal([ShardKeyRule.Parse("header:x-tenant"), ShardKeyRule.Parse("path:/docs/{key}")], service.KeyPolicy.Rules.ToArray());
        Assert.Equal(new ShardMember("sharded-svc-0", "10.0.0.10:16000", 3), service.Members[0]);
        Assert.Equal(new ShardMember("sharded-svc-1", "10.0.0.11:15100", 1), service.Members[1]);
    }

    [Fact]
    public async Task WatchAsync_NoKeyAndBodyLimitAnnotations_SetTheKeyPolicy()
    {
        _server.AddPod(Ns, "a-0", Labels("a"), new Dictionary<string, string> { ["sharding.dev/no-key"] = "serve-locally", ["sharding.dev/max-body-bytes"] = "1024" }, ready: true, podIP: "10.0.1.1");
        _server.AddPod(Ns, "b-0", Labels("b"), new Dictionary<string, string> { ["sharding.dev/no-key"] = "fixed-member", ["sharding.dev/fallback-member"] = "b-0" }, ready: true, podIP: "10.0.2.1");
        _server.AddPod(Ns, "c-0", Labels("c"), new Dictionary<string, string> { ["sharding.dev/no-key"] = "fixed-member" }, ready: true, podIP: "10.0.3.1");
        _server.AddPod(Ns, "d-0", Labels("d"), new Dictionary<string, string> { ["sharding.dev/no-key"] = "7", ["sharding.dev/max-body-bytes"] = "16777217" }, ready: true, podIP: "10.0.4.1");
        Start();

        var snapshot = await WaitForAsync(s => s.Services.Count == 4);
        Assert.Equal(NoKeyAction.ServeLocally, snapshot.Services["a"].KeyPolicy.NoKey);
        Assert.Equal(1024, snapshot.Services["a"].KeyPolicy.MaxBodyBytes);
        Assert.Equal(NoKeyAction.FixedMember, snapshot.Services["b"].KeyPolicy.NoKey);
        Assert.Equal("b-0", snapshot.Services["b"].KeyPolicy.FallbackMember);

        // Invalid values are logged and leave the default (reject, 64 KiB): a fixed member needs its name.
        Assert.Equal(ShardKeyPolicy.Default, snapshot.Services["c"].KeyPolicy);
        Assert.Equal(ShardKeyPolicy.Default, snapshot.Services["d"].KeyPolicy);
    }

    [Fact]
    public async Task WatchAsync_TwoServices_AreSeparate()
    {
        _server.AddPod(Ns, "a-0", Labels("a"), ready: true, podIP: "10.0.1.1");
        _server.AddPod(Ns, "b-0", Labels("b"), ready: true, podIP: "10.0.2.1");
        Start();
        var snapshot = await WaitForAsync(s => s.Services.Count == 2);
        Assert.Equal("a-0", snapshot.Services["a"].Members.Single().Name);
        Assert.Equal("b-0", snapshot.Services["b"].Members.Single().Name);
    }

    private void UseClient(TimeSpan requestTimeout)
    {
        _client.Dispose();
        _client = new KubernetesClient(new KubernetesClientConfiguration
        {
            Server = _server.BaseAddress,
            Namespace = "default",
            Token = BearerTokenSource.FromValue("fake-token"),
        })
        { RequestTimeout = requestTimeout };
    }

    private void Start(int watchTimeoutSeconds = 300)
    {
        var source = new PodMembershipSource(
            new PodListWatchSource(_client, Ns, PodMembershipOptions.ServiceLabel, watchTimeoutSeconds),
            Options.Create(new PodMembershipOptions { Namespace = Ns }),
            _time,
            NullLogger<PodMembershipSource>.Instance,
            new ResourceInformerOptions { BackoffBase = TimeSpan.FromSeconds(1), BackoffMax = TimeSpan.FromSeconds(2), UseJitter = false });
        _pump = Task.Run(async () =>
        {
            await foreach (var snapshot in source.WatchAsync(_stop.Token))
            {
                _snapshots.Writer.TryWrite(snapshot);
            }
        });
    }

    private async Task<MembershipSnapshot> WaitForAsync(Func<MembershipSnapshot, bool> condition)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        while (_latest is null || !condition(_latest))
        {
            _latest = await _snapshots.Reader.ReadAsync(timeout.Token);
        }

        return _latest;
    }

    // For faults with backoff: moves the clock a second at a time until the condition holds.
    private async Task<MembershipSnapshot> AdvanceUntilAsync(Func<MembershipSnapshot, bool> condition)
    {
        for (var i = 0; i < 60; i++)
        {
            await SettleAsync();
            if (_latest is not null && condition(_latest))
            {
                return _latest;
            }

            _time.Advance(TimeSpan.FromMilliseconds(500));
        }

        return await WaitForAsync(condition);
    }

    // Drains snapshots already produced; gives the informer's I/O a moment (real time) to deliver in-flight events.
    private async Task SettleAsync()
    {
        for (var i = 0; i < 20; i++)
        {
            await Task.Delay(5);
            while (_snapshots.Reader.TryRead(out var snapshot))
            {
                _latest = snapshot;
                i = 0;
            }
        }
    }
}

using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Sharding.ControlPlane.Leadership;
using Sharding.Kubernetes;
using Sharding.Testing;
using Sharding.Testing.Kubernetes;

namespace Sharding.ControlPlane.Tests.Leadership;

public sealed class LeaseLeaderElectorTests : IAsyncLifetime
{
    private const string Namespace = "sharding-system";
    private const string LeaseName = "sharding-controlplane";
    private readonly ManualTimeProvider _time = new();
    private readonly List<Candidate> _candidates = [];
    private readonly Lock _trackerGate = new();
    private readonly Dictionary<string, bool> _leading = [];
    private readonly List<string> _violations = [];
    private readonly HashSet<string> _partitioned = [];
    private readonly Dictionary<string, int> _held = [];
    private readonly TaskCompletionSource _heal = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private FakeKubernetesApiServer _server = null!;

    public async Task InitializeAsync()
    {
        _server = await FakeKubernetesApiServer.StartAsync(_time);
        _server.BeforeRequest = async request =>
        {
            var token = request.Headers.Authorization.ToString().Replace("Bearer ", string.Empty, StringComparison.Ordinal);
            bool hold;
            lock (_trackerGate)
            {
                hold = _partitioned.Contains(token);
                if (hold)
                {
                    _held[token] = _held.GetValueOrDefault(token) + 1;
                }
            }

            if (hold)
            {
                // A network partition: the request hangs until the test heals it (or the client gives up).
                await Task.WhenAny(_heal.Task, Task.Delay(Timeout.Infinite, request.HttpContext.RequestAborted));
                lock (_trackerGate)
                {
                    _held[token]--;
                }
            }
        };
    }

    public async Task DisposeAsync()
    {
        _heal.TrySetResult();
        foreach (var candidate in _candidates)
        {
            await candidate.StopAsync();
        }

        await _server.DisposeAsync();
    }

    [Fact]
    public async Task RunAsync_TwoCandidates_FirstLeadsSecondFollowsWithLeaderUrl()
    {
        var a = Start("cp-a");
        await SettleAsync();
        Assert.True(a.Elector.Current.IsLeader);
        Assert.Equal(0, a.Elector.Current.Epoch);

        var b = Start("cp-b");
        await SettleAsync();
        Assert.False(b.Elector.Current.IsLeader);
        Assert.Equal("cp-a", b.Elector.Current.LeaderId);
        Assert.Equal("http://cp-a:8080", b.Elector.Current.LeaderAddress);

        await RunForAsync(TimeSpan.FromSeconds(60));
        Assert.True(a.Elector.Current.IsLeader);
        Assert.False(b.Elector.Current.IsLeader);
        Assert.Empty(_violations);

        var lease = _server.Get("leases", Namespace, LeaseName)!;
        Assert.Equal("cp-a", (string?)lease["spec"]!["holderIdentity"]);
        Assert.Equal(15, (int?)lease["spec"]!["leaseDurationSeconds"]);
        Assert.Matches(@"\.\d{6}Z$", (string?)lease["spec"]!["renewTime"]);
    }

    [Fact]
    public async Task RunAsync_ThreeCandidatesAtOnce_ExactlyOneLeaderThroughout()
    {
        Start("cp-a");
        Start("cp-b");
        Start("cp-c");
        await SettleAsync();
        await RunForAsync(TimeSpan.FromSeconds(45));

        Assert.Single(_candidates, c => c.Elector.Current.IsLeader);
        var leader = _candidates.Single(c => c.Elector.Current.IsLeader).Identity;
        Assert.All(_candidates.Where(c => c.Identity != leader), c => Assert.Equal(leader, c.Elector.Current.LeaderId));
        Assert.Empty(_violations);
    }

    [Fact]
    public async Task RunAsync_LeaderStopsRenewing_StepsDownBeforeDeadlineAndFollowerTakesOverWithinLeaseDuration()
    {
        var a = Start("cp-a");
        await SettleAsync();
        var b = Start("cp-b");
        var c = Start("cp-c");
        await SettleAsync();
        Assert.True(a.Elector.Current.IsLeader);

        // a's last renewal started now; from here on its requests hang.
        await RunForAsync(TimeSpan.FromSeconds(2));
        var lastRenewal = _time.GetTimestamp();
        Partition("cp-a");

        TimeSpan? steppedDownAfter = null;
        TimeSpan? takenOverAfter = null;
        for (var i = 0; i < 300 && takenOverAfter is null; i++)
        {
            await AdvanceAsync(TimeSpan.FromMilliseconds(100));
            if (steppedDownAfter is null && !a.Elector.Current.IsLeader)
            {
                steppedDownAfter = _time.GetElapsedTime(lastRenewal);
            }

            if (b.Elector.Current.IsLeader || c.Elector.Current.IsLeader)
            {
                takenOverAfter = _time.GetElapsedTime(lastRenewal);
            }
        }

        Assert.NotNull(steppedDownAfter);
        Assert.True(steppedDownAfter <= TimeSpan.FromSeconds(10), $"stepped down after {steppedDownAfter}");
        Assert.NotNull(takenOverAfter);
        Assert.True(takenOverAfter > steppedDownAfter);

        // Followers saw the last renewal within a retry period of it, then wait the lease duration, then one retry period.
        Assert.True(takenOverAfter <= TimeSpan.FromSeconds(15 + 2 + 2), $"taken over after {takenOverAfter}");
        await RunForAsync(TimeSpan.FromSeconds(30));
        Assert.Empty(_violations);
        Assert.DoesNotContain(a.History.SkipWhile(s => s.IsLeader).Skip(1), s => s.IsLeader);
        Assert.Equal(1, (int?)_server.Get("leases", Namespace, LeaseName)!["spec"]!["leaseTransitions"]);
    }

    [Fact]
    public async Task RunAsync_GracefulShutdown_ReleasesAndFollowerTakesOverAtNextAttempt()
    {
        var a = Start("cp-a");
        await SettleAsync();
        var b = Start("cp-b");
        await SettleAsync();

        await a.StopAsync();
        Assert.False(a.Elector.Current.IsLeader);
        var released = _server.Get("leases", Namespace, LeaseName)!;
        Assert.Null((string?)released["spec"]!["holderIdentity"]);
        Assert.Equal(1, (int?)released["spec"]!["leaseDurationSeconds"]);
        Assert.Null(released["metadata"]!["annotations"]?[LeaseElectionOptions.LeaderUrlAnnotation]);

        await AdvanceAsync(TimeSpan.FromSeconds(2));
        Assert.True(b.Elector.Current.IsLeader);
        Assert.Equal(1, b.Elector.Current.Epoch);
        Assert.Empty(_violations);
    }

    [Fact]
    public async Task RunAsync_ExpiredLeaseOfDeadHolder_TakenOverOnlyAfterLeaseDurationOnOurClock()
    {
        // A holder that died long ago, whose renewTime says "just now" by a skewed wall clock: only our clock counts.
        _server.Create("leases", Namespace, LeaseRecord("ghost", renew: _time.GetUtcNow().AddHours(1), transitions: 4));
        var a = Start("cp-a");
        await SettleAsync();
        Assert.Equal("ghost", a.Elector.Current.LeaderId);

        await RunForAsync(TimeSpan.FromSeconds(14));
        Assert.False(a.Elector.Current.IsLeader);
        await RunForAsync(TimeSpan.FromSeconds(3));
        Assert.True(a.Elector.Current.IsLeader);
        Assert.Equal(5, a.Elector.Current.Epoch);
        Assert.Equal(5, (int?)_server.Get("leases", Namespace, LeaseName)!["spec"]!["leaseTransitions"]);
    }

    [Fact]
    public async Task RunAsync_ConflictOnTakeover_LosesRaceWithoutClaimingLeadership()
    {
        _server.Create("leases", Namespace, LeaseRecord("ghost", renew: _time.GetUtcNow(), transitions: 0));
        var a = Start("cp-a");
        await SettleAsync();

        // Just before a's takeover PUT is handled, another candidate writes the Lease: a's resourceVersion is stale.
        var raced = 0;
        var previous = _server.BeforeRequest!;
        _server.BeforeRequest = async request =>
        {
            if (request.Method == "PUT" && Interlocked.Exchange(ref raced, 1) == 0)
            {
                _server.Update("leases", Namespace, LeaseName, l =>
                {
                    l["spec"]!["holderIdentity"] = "cp-z";
                    l["spec"]!["leaseTransitions"] = 1;
                });
            }

            await previous(request);
        };

        await RunForAsync(TimeSpan.FromSeconds(19));
        Assert.Equal(1, raced);
        Assert.DoesNotContain(a.History, s => s.IsLeader);
        Assert.Equal("cp-z", a.Elector.Current.LeaderId);
        Assert.Equal("cp-z", (string?)_server.Get("leases", Namespace, LeaseName)!["spec"]!["holderIdentity"]);
    }

    [Fact]
    public async Task RunAsync_LeaseTakenBehindLeadersBack_StepsDownAtNextRenewal()
    {
        var a = Start("cp-a");
        await SettleAsync();
        Assert.True(a.Elector.Current.IsLeader);

        _server.Update("leases", Namespace, LeaseName, l => l["spec"]!["holderIdentity"] = "intruder");
        await AdvanceAsync(TimeSpan.FromSeconds(2));
        Assert.False(a.Elector.Current.IsLeader);
        Assert.Equal("intruder", a.Elector.Current.LeaderId);
        await RunForAsync(TimeSpan.FromSeconds(10));
        Assert.False(a.Elector.Current.IsLeader);
    }

    [Fact]
    public async Task RunAsync_TransientErrors_LeaderKeepsLeadingWithinRenewDeadline()
    {
        var a = Start("cp-a");
        await SettleAsync();
        _server.FailNextRequests(3, 500, pathContains: "/leases/");
        await RunForAsync(TimeSpan.FromSeconds(12));
        Assert.True(a.Elector.Current.IsLeader);
        Assert.DoesNotContain(a.History, s => !s.IsLeader && s != LeadershipState.Unknown);
    }

    [Fact]
    public async Task RunAsync_FollowerReadIsSlow_JudgesExpiryFromWhenItReceivedTheLeaseNotFromWhenItAsked()
    {
        var a = Start("cp-a");
        await SettleAsync();
        var b = Start("cp-b");
        await SettleAsync();
        Assert.True(a.Elector.Current.IsLeader);

        // b's next GET of the Lease is slow (an overloaded API server): it is answered only when the test says so.
        var slow = 1;
        var answer = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var previous = _server.BeforeRequest!;
        _server.BeforeRequest = async request =>
        {
            if (request.Method == "GET" && request.Headers.Authorization.ToString() == "Bearer cp-b" && Interlocked.Exchange(ref slow, 0) == 1)
            {
                lock (_trackerGate)
                {
                    _held["cp-b"] = _held.GetValueOrDefault("cp-b") + 1;
                }

                await answer.Task;
                lock (_trackerGate)
                {
                    _held["cp-b"]--;
                }
            }

            await previous(request);
        };

        // While b's read hangs for 12 s, a keeps renewing; then a is cut off right after its last renewal and b's read returns
        // that renewal. a steps down 10 s after that renewal started, so b must not take over before then.
        await RunForAsync(TimeSpan.FromSeconds(12));
        Assert.Equal(0, slow);
        Partition("cp-a");
        answer.SetResult();
        await SettleAsync();
        for (var i = 0; i < 300 && !b.Elector.Current.IsLeader; i++)
        {
            await AdvanceAsync(TimeSpan.FromMilliseconds(100));
        }

        Assert.True(b.Elector.Current.IsLeader);
        Assert.Empty(_violations);
    }

    [Fact]
    public async Task RunAsync_RestartedWhileTheLeaseStillNamesUs_TakesANewEpoch()
    {
        // Our previous incarnation (same pod name, the container crashed) led in epoch 4 and published generations (4 << 32) | n;
        // it could not release the Lease. The new process must not lead in epoch 4 again: it would count generations from
        // (4 << 32) | 1, below or equal to what sidecars already hold.
        _server.Create("leases", Namespace, LeaseRecord("cp-a", renew: _time.GetUtcNow(), transitions: 4));
        var a = Start("cp-a");
        await SettleAsync();

        Assert.True(a.Elector.Current.IsLeader);
        Assert.True(a.Elector.Current.Epoch > 4, $"led again in epoch {a.Elector.Current.Epoch}");
        Assert.Equal(a.Elector.Current.Epoch, (long?)_server.Get("leases", Namespace, LeaseName)!["spec"]!["leaseTransitions"]);

        // Renewals by the same process keep the epoch.
        await RunForAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(5, a.Elector.Current.Epoch);
        Assert.Equal(5, (int?)_server.Get("leases", Namespace, LeaseName)!["spec"]!["leaseTransitions"]);
    }

    [Fact]
    public async Task RunAsync_LeaseDeletedWhileRunning_RecreatedAboveTheLastEpochSeen()
    {
        // `kubectl delete lease` while the replicas run: the next CREATE must not restart at epoch 0, below what sidecars hold.
        _server.Create("leases", Namespace, LeaseRecord(string.Empty, renew: _time.GetUtcNow(), transitions: 6)); // released
        var a = Start("cp-a");
        await SettleAsync();
        Assert.True(a.Elector.Current.IsLeader);
        Assert.Equal(7, a.Elector.Current.Epoch);

        Assert.True(_server.Delete("leases", Namespace, LeaseName));
        await RunForAsync(TimeSpan.FromSeconds(3));

        Assert.True(a.Elector.Current.IsLeader);
        Assert.Equal(8, a.Elector.Current.Epoch);
        Assert.Equal(8, (int?)_server.Get("leases", Namespace, LeaseName)!["spec"]!["leaseTransitions"]);
    }

    [Fact]
    public async Task RaiseEpochAbove_Leader_RenewsAtOnceAboveTheClaimAndKeepsIt()
    {
        // A fresh install (epoch 0) after the namespace was deleted; sidecars still hold generations of epoch 6.
        var a = Start("cp-a");
        await SettleAsync();
        var b = Start("cp-b");
        await SettleAsync();
        Assert.True(a.Elector.Current.IsLeader);
        Assert.Equal(0, a.Elector.Current.Epoch);

        Assert.False(b.Elector.RaiseEpochAbove(6)); // a follower cannot
        Assert.True(a.Elector.RaiseEpochAbove(6));
        await SettleAsync(); // no clock advance: the raise wakes the loop for an immediate renewal

        Assert.Equal(7, a.Elector.Current.Epoch);
        Assert.Equal(7, (int?)_server.Get("leases", Namespace, LeaseName)!["spec"]!["leaseTransitions"]);
        Assert.False(a.Elector.RaiseEpochAbove(5)); // below the epoch already
        await RunForAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(7, a.Elector.Current.Epoch);
        Assert.Equal(7, b.Elector.Current.Epoch);

        // The next leader counts on from there.
        await a.StopAsync();
        await RunForAsync(TimeSpan.FromSeconds(5));
        Assert.True(b.Elector.Current.IsLeader);
        Assert.Equal(8, b.Elector.Current.Epoch);
        Assert.Empty(_violations);
    }

    [Fact]
    public async Task RunAsync_StoppedAfterAWriteThatCameTooLateToLead_StillReleasesTheLease()
    {
        // The create naming cp-b succeeds only after the renew deadline: cp-b does not lead on it, but the Lease names it.
        var seen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var inner = _server.BeforeRequest;
        _server.BeforeRequest = async request =>
        {
            if (request.Method == "POST" && !release.Task.IsCompleted)
            {
                lock (_trackerGate)
                {
                    _held["cp-b"] = _held.GetValueOrDefault("cp-b") + 1;
                }

                seen.TrySetResult();
                await release.Task;
                lock (_trackerGate)
                {
                    _held["cp-b"]--;
                }
            }

            await inner!(request);
        };
        var b = Start("cp-b");
        await seen.Task.WaitAsync(TimeSpan.FromSeconds(10));
        _time.Advance(TimeSpan.FromSeconds(11));
        release.TrySetResult();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (_server.Get("leases", Namespace, LeaseName) is null && clock.Elapsed < TimeSpan.FromSeconds(5))
        {
            await Task.Delay(10);
        }

        await SettleAsync();
        Assert.False(b.Elector.Current.IsLeader);
        Assert.Equal("cp-b", (string?)_server.Get("leases", Namespace, LeaseName)!["spec"]!["holderIdentity"]);

        // Shut down before the next attempt: the Lease must not keep naming cp-b for a whole lease duration.
        await b.StopAsync();
        Assert.Null((string?)_server.Get("leases", Namespace, LeaseName)!["spec"]!["holderIdentity"]);
    }

    [Fact]
    public async Task RunAsync_FollowerRequestTimesOut_LogsTheFailedAttempt()
    {
        // A request that hangs until the client's request timeout is a failed attempt like any other, not the silent
        // "renew deadline cut it short" (which only a leader's watchdog does).
        var a = Start("cp-a");
        await SettleAsync();
        var logger = new CollectingLogger();
        using var client = new KubernetesClient(new KubernetesClientConfiguration
        {
            Server = _server.BaseAddress,
            Namespace = "default",
            Token = BearerTokenSource.FromValue("cp-b"),
        })
        { RequestTimeout = TimeSpan.FromMilliseconds(200) };
        using var elector = new LeaseLeaderElector(
            client,
            Options.Create(new LeaseElectionOptions { Namespace = Namespace, LeaseName = LeaseName, Identity = "cp-b", LeaderUrl = "http://cp-b:8080" }),
            _time,
            logger);
        Partition("cp-b");
        await elector.TryAcquireOrRenewAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.False(elector.Current.IsLeader);
        Assert.Contains(105, logger.EventIds);
    }

    private sealed class CollectingLogger : ILogger<LeaseLeaderElector>
    {
        private readonly System.Collections.Concurrent.ConcurrentQueue<int> _events = new();

        public IEnumerable<int> EventIds => _events;

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            _events.Enqueue(eventId.Id);
    }

    [Fact]
    public async Task RaiseEpochAbove_DuringARenewalAlreadyWritten_RenewsAgainAtOnceNotAfterTheRetryPeriod()
    {
        var a = Start("cp-a");
        await SettleAsync();
        Assert.True(a.Elector.Current.IsLeader);
        Assert.Equal(0, a.Elector.Current.Epoch);

        // The next renewal's PUT (built with epoch 0) is in flight when the claim arrives.
        var putSeen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var releasePut = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var inner = _server.BeforeRequest;
        _server.BeforeRequest = async request =>
        {
            if (request.Method == "PUT" && !releasePut.Task.IsCompleted)
            {
                lock (_trackerGate)
                {
                    _held["cp-a"] = _held.GetValueOrDefault("cp-a") + 1;
                }

                putSeen.TrySetResult();
                await releasePut.Task;
                lock (_trackerGate)
                {
                    _held["cp-a"]--;
                }
            }

            await inner!(request);
        };
        _time.Advance(TimeSpan.FromSeconds(2));
        await putSeen.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(a.Elector.RaiseEpochAbove(6));
        releasePut.TrySetResult();

        // No clock advance: the raise must not wait for the next retry period (which cannot elapse on the manual clock).
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (a.Elector.Current.Epoch != 7 && clock.Elapsed < TimeSpan.FromSeconds(5))
        {
            await Task.Delay(10);
        }

        await SettleAsync();

        Assert.Equal(7, a.Elector.Current.Epoch);
        Assert.Equal(7, (int?)_server.Get("leases", Namespace, LeaseName)!["spec"]!["leaseTransitions"]);
    }

    [Theory]
    [InlineData(EpochRaise.MaxStep + 1)]
    [InlineData(int.MaxValue - 1L)]
    [InlineData(long.MaxValue >> 32)]
    public async Task RaiseEpochAbove_ImplausibleClaim_RefusedSoNoForgedRequestCanExhaustTheInt32(long claimed)
    {
        var a = Start("cp-a");
        await SettleAsync();
        Assert.True(a.Elector.Current.IsLeader);

        Assert.False(a.Elector.RaiseEpochAbove(claimed));
        await RunForAsync(TimeSpan.FromSeconds(3));
        Assert.Equal(0, a.Elector.Current.Epoch);
        Assert.Equal(0, (int?)_server.Get("leases", Namespace, LeaseName)!["spec"]!["leaseTransitions"]);
    }

    [Fact]
    public async Task RunAsync_LeaseWithFieldsTheModelDoesNotKnow_TakeoverRenewalsAndReleaseKeepThem()
    {
        // Kubernetes 1.31+ coordinated leader election sets spec.preferredHolder and spec.strategy; newer versions may add more.
        // Every write is a PUT of the whole Lease, so whatever the elector does not set must go back as it was read.
        var lease = LeaseRecord("ghost", renew: _time.GetUtcNow(), transitions: 2);
        lease["metadata"]!["finalizers"] = new JsonArray("example.com/keep");
        lease["metadata"]!["managedFields"] = new JsonArray(new JsonObject { ["manager"] = "kube-controller-manager", ["operation"] = "Update" });
        lease["spec"]!["preferredHolder"] = "cp-b";
        lease["spec"]!["strategy"] = "OldestEmulationVersion";
        lease["spec"]!["futureField"] = new JsonObject { ["nested"] = new JsonArray(1, "two", true) };
        _server.Create("leases", Namespace, lease);
        var puts = 0;
        var previous = _server.BeforeRequest!;
        _server.BeforeRequest = async request =>
        {
            if (request.Method == "PUT")
            {
                Interlocked.Increment(ref puts);
            }

            await previous(request);
        };

        var a = Start("cp-a");
        await SettleAsync();
        await RunForAsync(TimeSpan.FromSeconds(17));
        Assert.True(a.Elector.Current.IsLeader);
        AssertKept(_server.Get("leases", Namespace, LeaseName)!);
        Assert.Equal(3, (int?)_server.Get("leases", Namespace, LeaseName)!["spec"]!["leaseTransitions"]);

        await RunForAsync(TimeSpan.FromSeconds(6));
        AssertKept(_server.Get("leases", Namespace, LeaseName)!);

        await a.StopAsync();
        var released = _server.Get("leases", Namespace, LeaseName)!;
        Assert.Null((string?)released["spec"]!["holderIdentity"]);
        AssertKept(released);
        Assert.True(puts >= 4, $"{puts} PUTs: a takeover, renewals and a release were expected");

        static void AssertKept(JsonObject stored)
        {
            Assert.Equal("cp-b", (string?)stored["spec"]!["preferredHolder"]);
            Assert.Equal("OldestEmulationVersion", (string?)stored["spec"]!["strategy"]);
            Assert.Equal("""{"nested":[1,"two",true]}""", stored["spec"]!["futureField"]?.ToJsonString());
            Assert.Equal("""["example.com/keep"]""", stored["metadata"]!["finalizers"]?.ToJsonString());
            Assert.Equal("kube-controller-manager", (string?)stored["metadata"]!["managedFields"]?[0]?["manager"]);
        }
    }

    public static TheoryData<int, int, int, bool> Timings => new()
    {
        { 15, 10, 2, true },
        { 15, 15, 2, false },
        { 15, 16, 2, false },
        { 15, 10, 9, false },
        { 15, 10, 0, false },
        { 0, 0, 0, false },
    };

    [Theory]
    [MemberData(nameof(Timings))]
    public void Validator_Timings_FollowClientGoRules(int leaseSeconds, int renewSeconds, int retrySeconds, bool valid)
    {
        var options = new LeaseElectionOptions
        {
            Namespace = "ns",
            Identity = "me",
            LeaseDuration = TimeSpan.FromSeconds(leaseSeconds),
            RenewDeadline = TimeSpan.FromSeconds(renewSeconds),
            RetryPeriod = TimeSpan.FromSeconds(retrySeconds),
        };
        var result = new LeaseElectionOptionsValidator().Validate(null, options);
        Assert.Equal(valid, result.Succeeded);
    }

    [Fact]
    public void Validator_MissingIdentityAndNamespace_NamesDownwardApiVariables()
    {
        var result = new LeaseElectionOptionsValidator().Validate(null, new LeaseElectionOptions());
        Assert.Contains("POD_NAME", result.FailureMessage, StringComparison.Ordinal);
        Assert.Contains("POD_NAMESPACE", result.FailureMessage, StringComparison.Ordinal);
    }

    private static JsonObject LeaseRecord(string holder, DateTimeOffset renew, int transitions) => new()
    {
        ["metadata"] = new JsonObject { ["name"] = LeaseName },
        ["spec"] = new JsonObject
        {
            ["holderIdentity"] = holder,
            ["leaseDurationSeconds"] = 15,
            ["acquireTime"] = MicroTimeConverter.ToText(renew),
            ["renewTime"] = MicroTimeConverter.ToText(renew),
            ["leaseTransitions"] = transitions,
        },
    };

    private Candidate Start(string identity)
    {
        var client = _server.CreateClient(token: identity);
        var options = Options.Create(new LeaseElectionOptions
        {
            Namespace = Namespace,
            LeaseName = LeaseName,
            Identity = identity,
            LeaderUrl = $"http://{identity}:8080",
        });
        var elector = new LeaseLeaderElector(client, options, _time, NullLogger<LeaseLeaderElector>.Instance);
        var candidate = new Candidate(identity, elector, client);
        elector.Changed += state =>
        {
            lock (_trackerGate)
            {
                candidate.History.Add(state);
                if (state.IsLeader && _leading.Any(kv => kv.Value && kv.Key != identity))
                {
                    _violations.Add($"{identity} leads while {string.Join(",", _leading.Where(kv => kv.Value).Select(kv => kv.Key))} lead at {_time.GetUtcNow():O}");
                }

                _leading[identity] = state.IsLeader;
            }
        };
        candidate.Run = Task.Run(() => elector.RunAsync(candidate.Stop.Token));
        _candidates.Add(candidate);
        return candidate;
    }

    private void Partition(string identity)
    {
        lock (_trackerGate)
        {
            _partitioned.Add(identity);
        }
    }

    private async Task RunForAsync(TimeSpan duration)
    {
        for (var t = TimeSpan.Zero; t < duration; t += TimeSpan.FromMilliseconds(500))
        {
            await AdvanceAsync(TimeSpan.FromMilliseconds(500));
        }
    }

    private async Task AdvanceAsync(TimeSpan by)
    {
        _time.Advance(by);
        await SettleAsync();
    }

    // Waits (in real time, for the loops' I/O) until every running candidate waits for its next attempt or hangs in a partition.
    private async Task SettleAsync()
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            bool settled;
            lock (_trackerGate)
            {
                settled = _candidates.TrueForAll(c => c.Run.IsCompleted || c.Elector.IsIdle || _held.GetValueOrDefault(c.Identity) > 0);
            }

            if (settled)
            {
                // Twice in a row, so a loop between "request done" and "timer armed" is not mistaken for idle.
                await Task.Yield();
                lock (_trackerGate)
                {
                    if (_candidates.TrueForAll(c => c.Run.IsCompleted || c.Elector.IsIdle || _held.GetValueOrDefault(c.Identity) > 0))
                    {
                        return;
                    }
                }
            }

            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), "candidates did not settle");
            await Task.Delay(1);
        }
    }

    private sealed class Candidate(string identity, LeaseLeaderElector elector, KubernetesClient client)
    {
        public string Identity { get; } = identity;

        public LeaseLeaderElector Elector { get; } = elector;

        public CancellationTokenSource Stop { get; } = new();

        public Task Run { get; set; } = Task.CompletedTask;

        public List<LeadershipState> History { get; } = [];

        public async Task StopAsync()
        {
            if (!Stop.IsCancellationRequested)
            {
                await Stop.CancelAsync();
                await Run.WaitAsync(TimeSpan.FromSeconds(20));
                Elector.Dispose();
                client.Dispose();
            }
        }
    }
}

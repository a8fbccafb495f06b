using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Sharding.Client.Tests.Infrastructure;
using Sharding.Keys;
using Sharding.Mapping;
using Sharding.Metrics;

namespace Sharding.Client.Tests.Routing;

/// <summary>
/// The handler against real processes: three sample apps behind three sidecars and a control plane in local mode. Tests that
/// change membership or stop the control plane run last (<see cref="TestPriorityAttribute"/>).
/// </summary>
[Collection(ClusterTests.Name)]
[TestCaseOrderer(PriorityOrderer.TypeName, PriorityOrderer.AssemblyName)]
public sealed class ClusterRoutingTests(ClusterFixture fixture)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);
    private readonly LocalCluster _cluster = fixture.Cluster;

    [Fact, TestPriority(1)]
    public async Task Handler_10000RandomKeys_LandOnOwnersWithoutForwarding()
    {
        await using var client = new RoutedClient(_cluster.SidecarUrl(0), [_cluster.ControlPlaneGrpcUrl]);
        using var metrics = new ClientMetricsRecorder(client.Services);
        var map = await WaitForMapAsync(client.Router);

        // The control plane's map and one built here from the same members agree (the same Maglev table): the test's oracle.
        var local = ShardMap.Create(LocalCluster.Service, 0, map.Members, keyPolicy: map.KeyPolicy);
        Assert.Equal(local.Checksum, map.Checksum);

        var forwardedBefore = await _cluster.ForwardedAsync();
        var random = new Random(8);
        var keys = Enumerable.Range(0, 10_000).Select(_ => RandomKeys.Next(random, ascii: true)).ToArray();
        var misses = await SendCountersAsync(client, keys, map);

        Assert.Empty(misses);
        Assert.Equal(forwardedBefore, await _cluster.ForwardedAsync());
        Assert.Equal(10_000, metrics.Sum($"{ClientMetricNames.Requests}|{ClientMetricNames.ServiceTag}={LocalCluster.Service}|{ClientMetricNames.RouteTag}={ClientMetricNames.RouteDirect}"));
        metrics.Observe();
        Assert.Equal(map.Generation, metrics.Last[$"{ClientMetricNames.MapGeneration}|{ClientMetricNames.ServiceTag}={LocalCluster.Service}"]);
        Assert.Equal((int)ShardRouterState.Connected, metrics.Last[$"{ClientMetricNames.SubscriptionState}|{ClientMetricNames.ServiceTag}={LocalCluster.Service}"]);
    }

    [Fact, TestPriority(2)]
    public async Task Handler_EveryKeyRule_AgreesWithSidecarOwnerOverHttp()
    {
        await using var client = new RoutedClient(_cluster.SidecarUrl(0), [_cluster.ControlPlaneGrpcUrl]);
        using var plain = new HttpClient(new SocketsHttpHandler { UseProxy = false, UseCookies = false });
        var map = await WaitForMapAsync(client.Router);
        var byAddress = map.Members.ToDictionary(m => m.Address, m => m.Name);
        var forwardedBefore = await _cluster.ForwardedAsync();
        var random = new Random(2);
        var problems = new List<string>();
        var samples = new List<(string Rule, string Key, string Owner)>();
        foreach (var rule in new[] { "header", "path", "query", "cookie", "json" })
        {
            for (var i = 0; i < 40; i++)
            {
                var key = RandomKeys.Next(random, ascii: rule is "header" or "cookie");
                var expected = map.OwnerOf(key.AsSpan())!.Name;

                // Through the handler: sent straight to the owner, whose sidecar serves it (x-sharding-owner = itself).
                using var routed = await client.Client.SendAsync(KeyRequest(rule, key, baseUrl: null));
                var sentTo = byAddress[routed.Headers.GetValues(RoutedClient.SentToHeader).Single()];
                var routedOwner = routed.Headers.GetValues("x-sharding-owner").Single();
                if (sentTo != expected || routedOwner != expected)
                {
                    problems.Add($"{rule} '{key}': handler sent to {sentTo}, owner header {routedOwner}, map says {expected}");
                }

                samples.Add((rule, key, sentTo));
            }
        }

        Assert.Empty(problems);
        Assert.Equal(forwardedBefore, await _cluster.ForwardedAsync());

        // Straight to a random sidecar, no handler: that sidecar's own extraction names the same owner.
        foreach (var (rule, key, owner) in samples)
        {
            var sidecar = random.Next(_cluster.SidecarPorts.Count);
            using var reply = await plain.SendAsync(KeyRequest(rule, key, _cluster.SidecarUrl(sidecar)));
            var sidecarOwner = reply.Headers.GetValues("x-sharding-owner").Single();
            if (sidecarOwner != owner)
            {
                problems.Add($"{rule} '{key}': handler chose {owner}, sidecar {sidecar} says {sidecarOwner} ({(int)reply.StatusCode})");
            }
        }

        Assert.Empty(problems);
    }

    [Fact, TestPriority(2)]
    public async Task Handler_ShardKeyHeaderWithSeveralValues_GoesWhereTheSidecarRoutesIt()
    {
        // HttpClient sends a header's values on one line joined with ", " (HTTP/1.1 and HPACK alike), so the sidecar's key is
        // "a, b": the handler must hash that too, or the owner's sidecar is the wrong one and forwards (an extra hop per request).
        await using var client = new RoutedClient(_cluster.SidecarUrl(0), [_cluster.ControlPlaneGrpcUrl]);
        var map = await WaitForMapAsync(client.Router);
        var byAddress = map.Members.ToDictionary(m => m.Address, m => m.Name);
        var forwardedBefore = await _cluster.ForwardedAsync();
        var problems = new List<string>();
        for (var i = 0; i < 30; i++)
        {
            using var request = KeyRequest("none", string.Empty, baseUrl: null);
            request.Headers.TryAddWithoutValidation(ShardKeyRule.DefaultHeader, [$"acct-{i}", $"acct-{i + 100}"]);
            using var routed = await client.Client.SendAsync(request);
            var sentTo = byAddress[routed.Headers.GetValues(RoutedClient.SentToHeader).Single()];
            var owner = routed.Headers.GetValues("x-sharding-owner").Single();
            if (sentTo != owner)
            {
                problems.Add($"acct-{i}, acct-{i + 100}: handler sent to {sentTo}, served by {owner} ({(int)routed.StatusCode})");
            }
        }

        Assert.Empty(problems);
        Assert.Equal(forwardedBefore, await _cluster.ForwardedAsync());
    }

    [Fact, TestPriority(3)]
    public async Task Router_UnknownService_ThrowsFromWaitLogsErrorAndSendsViaService()
    {
        await using var client = new RoutedClient(_cluster.SidecarUrl(0), [_cluster.ControlPlaneGrpcUrl], service: "no-such-svc");
        using var timeout = new CancellationTokenSource(Patience);
        var error = await Assert.ThrowsAsync<ShardServiceNotFoundException>(() => client.Router.WaitForMapAsync(timeout.Token).AsTask());

        Assert.Equal("no-such-svc", error.Service);
        Assert.Contains("unknown service 'no-such-svc'", error.Message, StringComparison.Ordinal);
        Assert.Contains(LocalCluster.Service, error.Message, StringComparison.Ordinal); // the control plane names what it serves
        Assert.Equal(ShardRouterState.ServiceNotFound, client.Router.State);
        Assert.Contains(client.Logs.Entries, e => e.Id.Id == 1003 && e.Level == Microsoft.Extensions.Logging.LogLevel.Error && e.Message.Contains("no-such-svc", StringComparison.Ordinal));
        Assert.Equal(ShardLookupStatus.NoMap, client.Router.OwnerOf("k").Status);

        // Requests still work: they go to the Service address and its sidecar routes them.
        using var response = await client.Client.SendAsync(RoutedClient.Counter("k"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal($"127.0.0.1:{_cluster.SidecarPorts[0]}", response.Headers.GetValues(RoutedClient.SentToHeader).Single());
    }

    [Fact, TestPriority(4)]
    public async Task Handler_NoMapEver_SendsToServiceAddressAndSidecarsForward()
    {
        var unreachable = $"http://127.0.0.1:{LocalCluster.FreePort()}";
        await using var client = new RoutedClient(_cluster.SidecarUrl(1), [unreachable]);
        using var metrics = new ClientMetricsRecorder(client.Services);
        var oracle = ShardMap.Create(LocalCluster.Service, 0, _cluster.Members.Select(i => new ShardMember(LocalCluster.PodName(i), $"127.0.0.1:{_cluster.SidecarPorts[i]}")));
        var forwardedBefore = await _cluster.ForwardedAsync();
        var random = new Random(4);
        var keys = Enumerable.Range(0, 300).Select(_ => RandomKeys.Next(random, ascii: true)).ToArray();

        var misses = await SendCountersAsync(client, keys, oracle, expectSentTo: $"127.0.0.1:{_cluster.SidecarPorts[1]}");

        Assert.Empty(misses);
        Assert.Equal(-1, client.Router.Generation);
        Assert.Equal(ShardRouterState.Reconnecting, client.Router.State);
        Assert.Equal(300, metrics.Sum($"{ClientMetricNames.Requests}|{ClientMetricNames.ServiceTag}={LocalCluster.Service}|{ClientMetricNames.RouteTag}={ClientMetricNames.RouteViaService}|{ClientMetricNames.ReasonTag}={ClientMetricNames.ReasonNoMap}"));
        Assert.True(await _cluster.ForwardedAsync() - forwardedBefore >= 100, "keys owned by the other pods were forwarded by the Service's sidecar");
    }

    [Fact, TestPriority(5)]
    public async Task Handler_MembershipChange_FollowsNewGenerationAndLandsOnOwners()
    {
        await using var client = new RoutedClient(_cluster.SidecarUrl(0), [_cluster.ControlPlaneGrpcUrl]);
        var before = await WaitForMapAsync(client.Router);
        var changes = new ConcurrentQueue<ShardMapChangedEventArgs>();
        client.Router.MapChanged += (_, e) => changes.Enqueue(e);

        await _cluster.SetMembersAsync([0, 1], Patience);

        // Wait for the event, not for CurrentMap: MapChanged is raised after the map became current, so a poll that sees the
        // new map can run before the event reached the handler.
        ShardMapChangedEventArgs? moved = null;
        await LocalCluster.Until(() => Task.FromResult((moved = changes.FirstOrDefault(e => e.Map.Members.Length == 2)) is not null), Patience, "the router did not follow the membership change");

        var after = moved!.Map;
        Assert.True(after.Generation > before.Generation);
        Assert.NotNull(moved.Previous);
        Assert.True(client.Router.Generation >= after.Generation);
        var forwardedBefore = await _cluster.ForwardedAsync();
        var random = new Random(5);
        var keys = Enumerable.Range(0, 2_000).Select(_ => RandomKeys.Next(random, ascii: true)).ToArray();
        var misses = await SendCountersAsync(client, keys, after);

        Assert.Empty(misses);
        Assert.Equal(forwardedBefore, await _cluster.ForwardedAsync());
    }

    [Fact, TestPriority(6)]
    public async Task Handler_ControlPlaneStoppedAfterFirstMap_KeepsLandingOnOwners()
    {
        await using var client = new RoutedClient(_cluster.SidecarUrl(0), [_cluster.ControlPlaneGrpcUrl]);
        var map = await WaitForMapAsync(client.Router);

        await _cluster.StopControlPlaneAsync();
        await LocalCluster.Until(() => Task.FromResult(client.Router.State == ShardRouterState.Reconnecting), Patience, "the router did not notice the control plane left");

        var forwardedBefore = await _cluster.ForwardedAsync();
        var random = new Random(6);
        var keys = Enumerable.Range(0, 2_000).Select(_ => RandomKeys.Next(random, ascii: true)).ToArray();
        var misses = await SendCountersAsync(client, keys, map);

        Assert.Empty(misses);
        Assert.Equal(map.Generation, client.Router.Generation);
        Assert.Equal(forwardedBefore, await _cluster.ForwardedAsync());
    }

    private static async Task<ShardMap> WaitForMapAsync(ShardRouter router)
    {
        using var timeout = new CancellationTokenSource(Patience);
        return await router.WaitForMapAsync(timeout.Token);
    }

    /// <summary>POST /counter for every key through the handler; returns what did not land on the map's owner.</summary>
    private static async Task<ConcurrentBag<string>> SendCountersAsync(RoutedClient client, string[] keys, ShardMap oracle, string? expectSentTo = null)
    {
        var misses = new ConcurrentBag<string>();
        await Parallel.ForEachAsync(keys, new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (key, ct) =>
        {
            using var response = await client.Client.SendAsync(RoutedClient.Counter(key), ct);
            var expected = oracle.OwnerOf(key.AsSpan())!;
            var sentTo = response.Headers.GetValues(RoutedClient.SentToHeader).Single();
            if (response.StatusCode != HttpStatusCode.OK)
            {
                misses.Add($"{key}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync(ct)}");
                return;
            }

            using var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync(ct));
            var pod = body.RootElement.GetProperty("pod").GetString();
            if (pod != expected.Name || sentTo != (expectSentTo ?? expected.Address))
            {
                misses.Add($"{key}: served by {pod} after sending to {sentTo}; owner {expected.Name} at {expected.Address}");
            }
        });
        return misses;
    }

    /// <summary>A request that carries <paramref name="key"/> only where <paramref name="rule"/> looks (to the base address when no URL).</summary>
    private static HttpRequestMessage KeyRequest(string rule, string key, string? baseUrl)
    {
        var prefix = baseUrl ?? string.Empty;
        var escaped = Uri.EscapeDataString(key);
        HttpRequestMessage request = rule switch
        {
            "path" => new HttpRequestMessage(HttpMethod.Post, $"{prefix}/counters/{escaped}"),
            "query" => new HttpRequestMessage(HttpMethod.Post, $"{prefix}/counter?other=1&tenant={escaped}"),
            "json" => new HttpRequestMessage(HttpMethod.Post, $"{prefix}/counter") { Content = JsonContent.Create(new { name = "x", account = new { id = key } }) },
            _ => new HttpRequestMessage(HttpMethod.Post, $"{prefix}/counter"),
        };
        if (rule == "header")
        {
            request.Headers.TryAddWithoutValidation(ShardKeyRule.DefaultHeader, key);
        }
        else if (rule == "cookie")
        {
            request.Headers.TryAddWithoutValidation("cookie", $"a=b; sid={key}");
        }

        return request;
    }
}

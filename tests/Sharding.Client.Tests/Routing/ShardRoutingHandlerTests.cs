using System.Net.Http.Json;
using System.Text;
using Sharding.Client.Tests.Infrastructure;
using Sharding.Keys;
using Sharding.Mapping;
using Sharding.Metrics;

namespace Sharding.Client.Tests.Routing;

public sealed class ShardRoutingHandlerTests
{
    [Fact]
    public async Task SendAsync_KeyFound_RewritesAuthorityKeepsPathQueryAndHost()
    {
        var map = TestMaps.Create(3);
        var (invoker, inner, router) = Create(map);
        using var request = new HttpRequestMessage(HttpMethod.Get, "http://svc.example:8080/a%20b/c?x=1&y=%2F#frag");
        request.Headers.TryAddWithoutValidation("x-shard-key", "k-1");

        using var response = await invoker.SendAsync(request, CancellationToken.None);

        var owner = map.OwnerOf("k-1".AsSpan())!;
        Assert.Equal($"http://{owner.Address}/a%20b/c?x=1&y=%2F", inner.LastUri!.AbsoluteUri);
        Assert.Equal("svc.example:8080", inner.LastHost);
        await router.DisposeAsync();
    }

    [Fact]
    public async Task SendAsync_PreserveHostHeaderOff_HostIsOwnerAddress()
    {
        var (invoker, inner, router) = Create(TestMaps.Create(3), o => o.PreserveHostHeader = false);
        using var request = new HttpRequestMessage(HttpMethod.Get, "http://svc.example/counter");
        request.Headers.TryAddWithoutValidation("x-shard-key", "k-2");

        using var response = await invoker.SendAsync(request, CancellationToken.None);

        Assert.Null(inner.LastHost);
        Assert.StartsWith("127.0.0.1:", inner.LastAuthority, StringComparison.Ordinal);
        await router.DisposeAsync();
    }

    [Fact]
    public async Task SendAsync_NoMapYet_SendsToServiceAddressUnchanged()
    {
        await using var router = new ShardRouter(new ShardRoutingOptions
        {
            Service = "svc",
            ControlPlaneAddresses = [$"http://127.0.0.1:{LocalCluster.FreePort()}"],
            MaxReconnectDelay = TimeSpan.FromMilliseconds(200),
        });
        var inner = new RecordingHandler();
        using var invoker = new HttpMessageInvoker(new ShardRoutingHandler(router, inner));
        using var request = new HttpRequestMessage(HttpMethod.Get, "http://svc.example:15100/counter");
        request.Headers.TryAddWithoutValidation("x-shard-key", "k");

        using var response = await invoker.SendAsync(request, CancellationToken.None);

        Assert.Equal("http://svc.example:15100/counter", inner.LastUri!.AbsoluteUri);
        Assert.Null(inner.LastHost);
        Assert.Equal(ShardLookupStatus.NoMap, router.OwnerOf("k").Status);
    }

    [Fact]
    public async Task SendAsync_EmptyMapOrNoKey_SendsToServiceAddressWithReason()
    {
        using var recorder = new MeterRecorder();
        var (invoker, inner, router) = Create(TestMaps.Create(2, weight: 0));
        using (var request = new HttpRequestMessage(HttpMethod.Get, "http://svc.example/counter"))
        {
            request.Headers.TryAddWithoutValidation("x-shard-key", "k");
            using var response = await invoker.SendAsync(request, CancellationToken.None);
            Assert.Equal("svc.example", inner.LastAuthority);
        }

        router.TryPublish(TestMaps.Create(2, generation: 2));
        using (var request = new HttpRequestMessage(HttpMethod.Get, "http://svc.example/counter"))
        {
            using var response = await invoker.SendAsync(request, CancellationToken.None);
            Assert.Equal("svc.example", inner.LastAuthority);
        }

        Assert.Equal(1, recorder.Count(ClientMetricNames.ReasonEmptyMap));
        Assert.Equal(1, recorder.Count(ClientMetricNames.ReasonNoKey));
        await router.DisposeAsync();
    }

    [Fact]
    public async Task SendAsync_NoKeyWithFixedMemberPolicy_SendsToFallbackMember()
    {
        var policy = TestMaps.AllRules with { NoKey = NoKeyAction.FixedMember, FallbackMember = "pod-2" };
        var (invoker, inner, router) = Create(TestMaps.Create(3, policy));
        using var request = new HttpRequestMessage(HttpMethod.Get, "http://svc.example/counter");

        using var response = await invoker.SendAsync(request, CancellationToken.None);

        Assert.Equal("127.0.0.1:15102", inner.LastAuthority);
        await router.DisposeAsync();
    }

    [Fact]
    public async Task SendAsync_JsonContent_BufferedWithinLimitRoutedAndSentWhole()
    {
        var map = TestMaps.Create(3);
        var (invoker, inner, router) = Create(map);
        using var request = new HttpRequestMessage(HttpMethod.Post, "http://svc.example/counter")
        {
            Content = JsonContent.Create(new { account = new { id = "acct-42" }, note = new string('n', 3000) }),
        };

        using var response = await invoker.SendAsync(request, CancellationToken.None);

        Assert.Equal(map.OwnerOf("acct-42".AsSpan())!.Address, inner.LastAuthority);
        Assert.Contains("\"acct-42\"", inner.LastBody, StringComparison.Ordinal);
        Assert.EndsWith("nnnn\"}", inner.LastBody, StringComparison.Ordinal);
        await router.DisposeAsync();
    }

    [Fact]
    public async Task SendAsync_JsonKeyBeyondLimit_SendsToServiceWithWholeBody()
    {
        using var recorder = new MeterRecorder();
        var policy = TestMaps.AllRules with { MaxBodyBytes = 1024 };
        var (invoker, inner, router) = Create(TestMaps.Create(3, policy));
        var body = "{\"pad\":\"" + new string('p', 5000) + "\",\"account\":{\"id\":\"late\"}}";
        using var request = new HttpRequestMessage(HttpMethod.Post, "http://svc.example/counter")
        {
            Content = new StreamContent(new NonSeekableStream(Encoding.UTF8.GetBytes(body))),
        };

        using var response = await invoker.SendAsync(request, CancellationToken.None);

        Assert.Equal("svc.example", inner.LastAuthority);
        Assert.Equal(body, inner.LastBody);
        Assert.Equal(1, recorder.Count(ClientMetricNames.ReasonBodyTooLarge));
        await router.DisposeAsync();
    }

    [Fact]
    public async Task SendAsync_MalformedJson_SendsToServiceForItsErrorMessage()
    {
        using var recorder = new MeterRecorder();
        var (invoker, inner, router) = Create(TestMaps.Create(3));
        using var request = new HttpRequestMessage(HttpMethod.Post, "http://svc.example/counter") { Content = new StringContent("{\"x\": tru, \"account\": {\"id\": \"a\"}}", Encoding.UTF8, "application/json") };

        using var response = await invoker.SendAsync(request, CancellationToken.None);

        Assert.Equal("svc.example", inner.LastAuthority);
        Assert.Equal("{\"x\": tru, \"account\": {\"id\": \"a\"}}", inner.LastBody);
        Assert.Equal(1, recorder.Count(ClientMetricNames.ReasonBadKey));
        await router.DisposeAsync();
    }

    [Fact]
    public async Task Router_OlderGeneration_IsRefusedAndLookupsKeepNewest()
    {
        await using var router = ShardRouter.CreateStatic(TestMaps.Create(3, generation: 5));
        var changed = 0;
        router.MapChanged += (_, _) => changed++;

        Assert.False(router.TryPublish(TestMaps.Create(1, generation: 4)));
        Assert.True(router.TryPublish(TestMaps.Create(2, generation: 6)));

        var lookup = router.OwnerOf("key");
        Assert.True(lookup.Found);
        Assert.Equal(6, lookup.Generation);
        Assert.StartsWith("pod-", lookup.MemberName, StringComparison.Ordinal);
        Assert.Equal(1, changed);
        Assert.Equal(6, (await router.WaitForMapAsync()).Generation);
    }

    private static (HttpMessageInvoker Invoker, RecordingHandler Inner, ShardRouter Router) Create(ShardMap map, Action<ShardRoutingOptions>? configure = null)
    {
        var options = new ShardRoutingOptions();
        configure?.Invoke(options);
        var router = ShardRouter.CreateStatic(map, options);
        var inner = new RecordingHandler();
        return (new HttpMessageInvoker(new ShardRoutingHandler(router, inner)), inner, router);
    }

    /// <summary>Counts via_service requests by reason (this class's tests run one at a time; other classes cause no such reasons).</summary>
    private sealed class MeterRecorder : IDisposable
    {
        private readonly System.Diagnostics.Metrics.MeterListener _listener = new();
        private readonly System.Collections.Concurrent.ConcurrentDictionary<string, int> _counts = new();

        public MeterRecorder()
        {
            _listener.InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Meter.Name == ClientMetricNames.MeterName && instrument.Name == ClientMetricNames.Requests)
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            };
            _listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
            {
                foreach (var tag in tags)
                {
                    if (tag.Key == ClientMetricNames.ReasonTag && tag.Value is string reason)
                    {
                        _counts.AddOrUpdate(reason, 1, (_, old) => old + 1);
                    }
                }
            });
            _listener.Start();
        }

        public int Count(string reason) => _counts.TryGetValue(reason, out var count) ? count : 0;

        public void Dispose()
        {
            _listener.Dispose();
        }
    }
}

/// <summary>Member addresses that are not <c>host:port</c> (the membership file does not check them).</summary>
public sealed class MemberAddressTests
{
    public static TheoryData<string> BadAddresses => new()
    {
        "fd00::1:15100",          // IPv6 without brackets: not a URI authority
        "10.0.0.7:15100/admin",   // a path would replace the request's
        "10.0.0.7:15100#",        // the request's path and query would become a fragment, never sent
        "10.0.0.7:15100?x=",      // the request's path would become a query
        "ops@10.0.0.7:15100",     // user info
        "10.0.0.7",               // no port: would go to port 80, not to the sidecar
    };

    [Theory]
    [MemberData(nameof(BadAddresses))]
    public async Task SendAsync_OwnerAddressNotHostPort_GoesToServiceAddressNotElsewhere(string address)
    {
        var (key, router, inner) = RouteToMember(address);
        using var invoker = new HttpMessageInvoker(new ShardRoutingHandler(router, inner));
        using var request = new HttpRequestMessage(HttpMethod.Get, "http://svc.example:8080/counters/x?y=1");
        request.Headers.TryAddWithoutValidation("x-shard-key", key);

        using var response = await invoker.SendAsync(request, CancellationToken.None);

        Assert.Equal("http://svc.example:8080/counters/x?y=1", inner.LastUri!.AbsoluteUri);
        await router.DisposeAsync();
    }

    [Theory]
    [InlineData("[fd00::1]:15100", "http://[fd00::1]:15100/counters/x?y=1")]
    [InlineData("sharded-0.sharded.prod.svc:15100", "http://sharded-0.sharded.prod.svc:15100/counters/x?y=1")]
    public async Task SendAsync_OwnerAddressHostPort_Direct(string address, string expected)
    {
        var (key, router, inner) = RouteToMember(address);
        using var invoker = new HttpMessageInvoker(new ShardRoutingHandler(router, inner));
        using var request = new HttpRequestMessage(HttpMethod.Get, "http://svc.example:8080/counters/x?y=1");
        request.Headers.TryAddWithoutValidation("x-shard-key", key);

        using var response = await invoker.SendAsync(request, CancellationToken.None);

        Assert.Equal(expected, inner.LastUri!.AbsoluteUri);
        Assert.Equal("svc.example:8080", inner.LastHost);
        await router.DisposeAsync();
    }

    /// <summary>A router over pod-0 (at <paramref name="address"/>) and pod-1, and a key pod-0 owns.</summary>
    private static (string Key, ShardRouter Router, RecordingHandler Inner) RouteToMember(string address)
    {
        var map = ShardMap.Create("svc", 1, [new ShardMember("pod-0", address), new ShardMember("pod-1", "127.0.0.1:15101")], keyPolicy: TestMaps.AllRules);
        var key = Enumerable.Range(0, 100).Select(i => $"k-{i}").First(k => map.OwnerOf(k.AsSpan())!.Name == "pod-0");
        return (key, ShardRouter.CreateStatic(map), new RecordingHandler());
    }
}

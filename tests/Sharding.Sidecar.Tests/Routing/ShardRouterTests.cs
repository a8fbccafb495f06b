using System.Net;
using System.Text;
using Sharding.Sidecar.Tests.Infrastructure;

namespace Sharding.Sidecar.Tests.Routing;

[Collection(ClusterGroup.Name)]
public sealed class ShardRouterTests(ClusterFixture fixture)
{
    private Cluster Cluster => fixture.Cluster;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task RandomKeys_ToRandomSidecars_ReachThePredictedOwner(bool http2)
    {
        using var client = Cluster.Client(http2);
        var random = new Random(http2 ? 2 : 1);
        var byOwner = new Dictionary<string, int>();
        var tasks = new List<Task>();
        using var gate = new SemaphoreSlim(16);
        for (var i = 0; i < 1000; i++)
        {
            var key = $"account-{random.Next():x8}-{i}";
            var sidecar = Cluster.Sidecars[random.Next(Cluster.Sidecars.Count)];
            var expected = Cluster.OwnerOf(key);
            byOwner[expected] = byOwner.GetValueOrDefault(expected) + 1;
            await gate.WaitAsync();
            tasks.Add(Task.Run(async () =>
            {
                try
                {
                    using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{sidecar.Port}/items?i={i}", http2);
                    request.Headers.Add("x-shard-key", key);
                    using var response = await client.SendAsync(request);
                    var body = await response.Content.ReadAsStringAsync();
                    Assert.True(response.StatusCode == HttpStatusCode.OK, body);
                    var parts = body.Split('|');
                    Assert.Equal(expected, parts[0]); // the app that served it, from its own reply
                    Assert.Equal(key, parts[1]);
                    Assert.Equal(expected, response.Headers.GetValues("x-sharding-owner").Single());
                    Assert.Equal(Cluster.Map.Generation.ToString(System.Globalization.CultureInfo.InvariantCulture), response.Headers.GetValues("x-sharding-generation").Single());
                    Assert.Equal(http2 ? new Version(2, 0) : new Version(1, 1), response.Version);
                }
                finally
                {
                    gate.Release();
                }
            }));
        }

        await Task.WhenAll(tasks);
        Assert.Equal(3, byOwner.Count); // every pod owned some keys
    }

    [Theory]
    [InlineData("path", "/docs/doc-42/edit", null, null, "doc-42")]
    [InlineData("query", "/search?x=1&tenant=t%C3%A9nant+7", null, null, "ténant 7")]
    [InlineData("cookie", "/a", null, "theme=dark; sid=\"sess-9\"", "sess-9")]
    [InlineData("json", "/orders", "{\"note\":\"x\",\"account\":{\"tier\":1,\"id\":\"acc-77\"},\"rest\":[1,2,3]}", null, "acc-77")]
    [InlineData("json-number", "/orders", "{\"account\":{\"id\":12345}}", null, "12345")]
    public async Task EachKeyRule_RoutesToTheOwnerOfItsKey(string rule, string target, string? json, string? cookie, string key)
    {
        _ = rule;
        using var client = Cluster.Client(http2: false);
        var expected = Cluster.OwnerOf(key);
        foreach (var sidecar in Cluster.Sidecars)
        {
            using var request = Cluster.Request(json is null ? HttpMethod.Get : HttpMethod.Post, $"http://127.0.0.1:{sidecar.Port}{target}");
            if (json is not null)
            {
                request.Content = new StringContent(json, Encoding.UTF8, "application/json");
            }

            if (cookie is not null)
            {
                request.Headers.Add("cookie", cookie);
            }

            using var response = await client.SendAsync(request);
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.OK, body);
            var parts = body.Split('|');
            Assert.Equal(expected, parts[0]);
            Assert.Equal((json?.Length ?? 0).ToString(System.Globalization.CultureInfo.InvariantCulture), parts[3]); // the body arrived intact
        }
    }

    [Fact]
    public async Task NoKey_Is400_NamingTheRulesTried()
    {
        using var client = Cluster.Client(http2: false);
        using var response = await client.GetAsync($"http://127.0.0.1:{Cluster.Sidecars[0].Port}/nothing-here");
        var body = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("no shard key: no rule found one (tried header:x-shard-key, path:/docs/{key}, query:tenant, cookie:sid, json:$.account.id)\n", body);
    }

    [Fact]
    public async Task MalformedJsonBody_Is400_SayingWhere()
    {
        using var client = Cluster.Client(http2: false);
        using var response = await client.PostAsync($"http://127.0.0.1:{Cluster.Sidecars[0].Port}/orders", new StringContent("{\"account\": {\"id\": tru", Encoding.UTF8, "application/json"));
        var body = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.StartsWith("cannot read the shard key from the JSON body: the body is not valid JSON:", body, StringComparison.Ordinal);
    }

    [Fact]
    public async Task JsonBodyWithoutKeyWithinLimit_Is413()
    {
        using var client = Cluster.Client(http2: false);
        var padding = new string('x', 70 * 1024);
        using var response = await client.PostAsync($"http://127.0.0.1:{Cluster.Sidecars[0].Port}/orders", new StringContent($"{{\"pad\":\"{padding}\",\"account\":{{\"id\":\"a\"}}}}", Encoding.UTF8, "application/json"));
        var body = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Equal("the JSON body's shard key was not found in its first 65536 bytes (keys.maxBodyBytes); put the key field first or raise the limit\n", body);
    }

    [Fact]
    public async Task TooLongKey_Is400()
    {
        using var client = Cluster.Client(http2: false);
        using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{Cluster.Sidecars[0].Port}/a");
        request.Headers.Add("x-shard-key", new string('k', 1025));
        using var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("the shard key is longer than 1024 characters\n", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task SpoofedInternalHeaders_AreStrippedFromOutsideRequests()
    {
        using var client = Cluster.Client(http2: false);
        var key = KeyOwnedBy("pod-1");
        using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{Cluster.Sidecars[0].Port}/a");
        request.Headers.Add("x-shard-key", key);
        request.Headers.Add("x-sharding-owner", "pod-evil");
        request.Headers.Add("x-sharding-generation", "999");
        request.Headers.Add("x-sharding-key", "someone-else");
        using var response = await client.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var parts = body.Split('|');
        Assert.Equal("pod-1", parts[0]);
        // The app saw only what its sidecar added (routed generation and owner), none of the spoofed ones.
        Assert.Equal("x-sharding-generation,x-sharding-owner", parts[4]);
    }

    [Theory]
    [InlineData("1", "forged", "the forwarding proof (x-sharding-proof) is malformed")]
    [InlineData("1", null, "the forwarding proof (x-sharding-proof) is missing")]
    [InlineData("1", "1767225600.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "the forwarding proof (x-sharding-proof) is expired")]
    [InlineData("7", "x", "x-sharding-hop must be 1..2")]
    public async Task ForgedForward_Is403(string hop, string? proof, string reason)
    {
        using var client = Cluster.Client(http2: true);
        using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{Cluster.Sidecars[0].Port}/a");
        request.Headers.Add("x-shard-key", "k1");
        request.Headers.Add("x-sharding-hop", hop);
        request.Headers.Add("x-sharding-generation", "1");
        request.Headers.Add("x-sharding-key", "k1");
        if (proof is not null)
        {
            request.Headers.Add("x-sharding-proof", proof);
        }

        using var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal($"forwarded request rejected: {reason}\n", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task ValidProofForAnotherKey_Is403()
    {
        var proof = Cluster.Sidecars[1].Services.GetService(typeof(Sharding.Sidecar.Routing.ForwardingProof)) as Sharding.Sidecar.Routing.ForwardingProof;
        var forKeyA = proof!.Create("key-a", 1, 1);
        using var client = Cluster.Client(http2: true);
        using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{Cluster.Sidecars[0].Port}/a");
        request.Headers.Add("x-sharding-hop", "1");
        request.Headers.Add("x-sharding-generation", "1");
        request.Headers.Add("x-sharding-key", "key-b");
        request.Headers.Add("x-sharding-proof", forKeyA);
        using var response = await client.SendAsync(request);
        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("forwarded request rejected: the forwarding proof (x-sharding-proof) is mismatch\n", await response.Content.ReadAsStringAsync());
    }

    internal string KeyOwnedBy(string pod)
    {
        for (var i = 0; i < 10_000; i++)
        {
            var key = $"k-{pod}-{i}";
            if (Cluster.OwnerOf(key) == pod)
            {
                return key;
            }
        }

        throw new InvalidOperationException("no key found");
    }
}

[CollectionDefinition(Name)]
public sealed class ClusterGroup : ICollectionFixture<ClusterFixture>
{
    public const string Name = "cluster";
}

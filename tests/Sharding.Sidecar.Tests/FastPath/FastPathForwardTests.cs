using Microsoft.Extensions.Options;
using Sharding.Metrics;
using Sharding.Sidecar.Hosting;
using Sharding.Sidecar.Routing;
using Sharding.Sidecar.Tests.Infrastructure;

namespace Sharding.Sidecar.Tests.FastPath;

/// <summary>
/// Another pod's key on the fast path: the first sidecar forwards it over kept-alive HTTP/1.1 with the internal headers and
/// proof, the owner's fast path verifies and serves it; anything it cannot vouch for goes to the full path's answers.
/// </summary>
public sealed class FastPathForwardTests(ClusterFixture fixture) : IClassFixture<ClusterFixture>
{
    private Cluster Cluster => fixture.Cluster;

    private string KeyOwnedBy(string pod)
    {
        for (var i = 0; i < 10_000; i++)
        {
            var key = $"fwd-{pod}-{i}";
            if (Cluster.OwnerOf(key) == pod)
            {
                return key;
            }
        }

        throw new InvalidOperationException("no key found");
    }

    private static string Get(string target, string key, string extra = "") =>
        $"GET {target} HTTP/1.1\r\nHost: sidecar.test\r\nx-shard-key: {key}\r\n{extra}\r\n";

    private static ForwardingProof Proof() =>
        new(Options.Create(new SidecarOptions { ForwardingSecret = TestSidecar.Secret }), TimeProvider.System);

    [Fact]
    public async Task AnotherPodsKey_IsForwardedAndServed_OnBothSidecarsFastPaths()
    {
        using var entry = new FastPathCounters(Cluster.Sidecars[0]);
        using var owner = new FastPathCounters(Cluster.Sidecars[1]);
        var key = KeyOwnedBy("pod-1");
        using var client = await RawClient.ConnectAsync(Cluster.Sidecars[0].Port);

        // Two requests on one connection (the kept peer connection is reused), with spoofed internal headers that must not cross
        // (a spoofed x-sharding-hop would make it a forward to verify: 403, see below).
        for (var i = 0; i < 2; i++)
        {
            await client.SendAsync(Get($"/elsewhere/{i}", key, "x-sharding-key: spoofed\r\nx-sharding-owner: pod-9\r\n"));
            var response = await client.ReadResponseAsync();
            Assert.Equal(200, response.Status);

            // The app behind pod-1 saw exactly the headers its sidecar adds: no hop, key or proof.
            Assert.Equal($"pod-1|{key}|GET /elsewhere/{i}|0|x-sharding-generation,x-sharding-owner|HTTP/1.1", response.BodyText);
            Assert.Equal("pod-1", response.Single("x-sharding-owner"));
            Assert.Equal("1", response.Single("x-sharding-generation"));
        }

        await entry.WaitForAsync(static c => c.Served == 2, "the entry sidecar relayed both");
        await owner.WaitForAsync(static c => c.Served == 2, "the owner's sidecar served both");
        Assert.Equal(0, entry.TotalHandovers);
        Assert.Equal(0, owner.TotalHandovers);
    }

    [Theory]
    [InlineData("forged", "1")]
    [InlineData(null, "1")]
    [InlineData("valid", "3")]
    public async Task AForwardTheFastPathCannotVouchFor_IsHandedOver_AndRejected403(string? proof, string hop)
    {
        var target = Cluster.Sidecars[1];
        using var counters = new FastPathCounters(target);
        var key = KeyOwnedBy("pod-1");
        var proofText = proof == "valid" ? Proof().Create(key, 1, 3) : proof;
        using var client = await RawClient.ConnectAsync(target.Port);
        await client.SendAsync(Get("/forged", key,
            $"x-sharding-hop: {hop}\r\nx-sharding-generation: 1\r\nx-sharding-key: {key}\r\n" + (proofText is null ? string.Empty : $"x-sharding-proof: {proofText}\r\n")));
        var response = await client.ReadResponseAsync();

        Assert.Equal(403, response.Status);
        Assert.StartsWith("forwarded request rejected: ", response.BodyText, StringComparison.Ordinal);
        await counters.WaitForAsync(static c => c.Handovers(SidecarMetricNames.HandoverForwarded) == 1, "a forwarded handover");
        Assert.Equal(0, counters.Served);
    }

    [Fact]
    public async Task AProvenForward_ForAKeyTheReceiverDoesNotOwn_GoesOneHopFurther_OnTheFullPath()
    {
        var receiver = Cluster.Sidecars[1];
        using var counters = new FastPathCounters(receiver);
        var key = KeyOwnedBy("pod-2");
        using var client = await RawClient.ConnectAsync(receiver.Port);
        await client.SendAsync(Get("/hop", key,
            $"x-sharding-hop: 1\r\nx-sharding-generation: 1\r\nx-sharding-key: {key}\r\nx-sharding-proof: {Proof().Create(key, 1, 1)}\r\n"));
        var response = await client.ReadResponseAsync();

        Assert.Equal(200, response.Status);
        Assert.Equal("pod-2", response.Single("x-sharding-owner"));
        Assert.StartsWith($"pod-2|{key}|GET /hop|", response.BodyText, StringComparison.Ordinal);
        await counters.WaitForAsync(static c => c.Handovers(SidecarMetricNames.HandoverForwarded) == 1, "a forwarded handover");
    }

    [Fact]
    public async Task WithFastPathForwardsOff_AnotherPodsKey_GoesThroughTheFullPath()
    {
        await using var cluster = await Cluster.StartAsync(2, sidecarSettings: new Dictionary<string, string?> { ["Sidecar:Http1FastPathForwards"] = "false" });
        using var counters = new FastPathCounters(cluster.Sidecars[0]);
        string? key = null;
        for (var i = 0; key is null; i++)
        {
            key = cluster.OwnerOf($"off-{i}") == "pod-1" ? $"off-{i}" : null;
        }

        using var client = await RawClient.ConnectAsync(cluster.Sidecars[0].Port);
        await client.SendAsync(Get("/h2c", key));
        var response = await client.ReadResponseAsync();

        Assert.Equal(200, response.Status);
        Assert.Equal("pod-1", response.Single("x-sharding-owner"));

        // The full path forwards over h2c: the owner's app sees the request arrive from its sidecar as HTTP/1.1 still.
        Assert.StartsWith($"pod-1|{key}|GET /h2c|", response.BodyText, StringComparison.Ordinal);
        await counters.WaitForAsync(static c => c.Handovers(SidecarMetricNames.HandoverNotOwner) == 1, "a not_owner handover");
        Assert.Equal(0, counters.Served);
    }
}

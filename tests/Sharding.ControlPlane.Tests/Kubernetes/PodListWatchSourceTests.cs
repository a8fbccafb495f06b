using System.Text.Json.Nodes;
using Sharding.Kubernetes;
using Sharding.Testing.Kubernetes;

namespace Sharding.ControlPlane.Tests.Kubernetes;

/// <summary>What the pod informer's source hands to the cache, listed and watched from the fake API server.</summary>
public sealed class PodListWatchSourceTests
{
    private const string Ns = "shop";
    private const string Selector = "sharding.dev/service";

    [Fact]
    public async Task ListAndWatch_KeepWhatMembershipReads_DropMetadataNobodyReads()
    {
        await using var server = await FakeKubernetesApiServer.StartAsync();
        using var client = server.CreateClient();
        server.AddPod(Ns, "sharded-svc-0", new Dictionary<string, string> { [Selector] = "carts" }, new Dictionary<string, string> { ["sharding.dev/key"] = "x" }, ready: true, podIP: "10.0.0.10");
        server.Update("pods", Ns, "sharded-svc-0", AddServerManagedFields);
        var source = new PodListWatchSource(client, Ns, Selector);

        var (items, version) = await source.ListAsync(CancellationToken.None);
        var listed = Assert.Single(items);
        AssertTrimmed(listed);

        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        await using var watch = source.WatchAsync(version, stop.Token).GetAsyncEnumerator(stop.Token);
        server.SetPodReady(Ns, "sharded-svc-0", ready: false);
        Assert.True(await watch.MoveNextAsync());
        Assert.Equal(WatchEventType.Modified, watch.Current.Type);
        AssertTrimmed(watch.Current.Item!);
    }

    // What a real API server keeps on every pod: managedFields (a few KB) and, often, finalizers.
    private static void AddServerManagedFields(JsonObject pod)
    {
        var metadata = pod["metadata"]!.AsObject();
        metadata["finalizers"] = new JsonArray("example.com/protect");
        metadata["managedFields"] = new JsonArray(Enumerable.Range(0, 20).Select(i => (JsonNode)new JsonObject
        {
            ["manager"] = "kubelet-" + i,
            ["operation"] = "Update",
            ["apiVersion"] = "v1",
            ["fieldsType"] = "FieldsV1",
            ["fieldsV1"] = new JsonObject { ["f:status"] = new JsonObject { ["f:conditions"] = new JsonObject { ["k:{\"type\":\"Ready\"}"] = new JsonObject() } } },
        }).ToArray());
    }

    private static void AssertTrimmed(Pod pod)
    {
        Assert.Equal("sharded-svc-0", pod.Metadata.Name);
        Assert.Equal(Ns, pod.Metadata.Namespace);
        Assert.Equal("carts", pod.Metadata.Labels![Selector]);
        Assert.Equal("x", pod.Metadata.Annotations!["sharding.dev/key"]);
        Assert.NotNull(pod.Metadata.ResourceVersion);
        Assert.Null(pod.Metadata.ExtensionData);
    }
}

using Sharding.Kubernetes;
using Sharding.Testing.Kubernetes;

namespace Sharding.ControlPlane.Tests.Kubernetes;

public sealed class KubernetesClientTests : IAsyncLifetime
{
    private FakeKubernetesApiServer _server = null!;
    private KubernetesClient _client = null!;

    public async Task InitializeAsync()
    {
        _server = await FakeKubernetesApiServer.StartAsync();
        _client = _server.CreateClient();
    }

    public async Task DisposeAsync()
    {
        _client.Dispose();
        await _server.DisposeAsync();
    }

    [Fact]
    public async Task ListPodsAsync_WithSelector_ReturnsMatchingPodsAndListVersion()
    {
        _server.AddPod("shop", "a", new Dictionary<string, string> { ["sharding.dev/service"] = "s" }, ready: true, podIP: "10.0.0.1");
        _server.AddPod("shop", "b", new Dictionary<string, string> { ["app"] = "x" });
        var list = await _client.ListPodsAsync("shop", "sharding.dev/service", CancellationToken.None);
        Assert.Equal("a", Assert.Single(list.Items).Metadata.Name);
        Assert.True(list.Items[0].IsReady);
        Assert.Equal("10.0.0.1", list.Items[0].Status!.PodIP);
        Assert.Equal(_server.Revision.ToString(System.Globalization.CultureInfo.InvariantCulture), list.Metadata.ResourceVersion);
    }
}

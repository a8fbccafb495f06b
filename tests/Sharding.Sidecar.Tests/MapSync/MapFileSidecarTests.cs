using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Sharding.Sidecar.MapSync;
using Sharding.Sidecar.Tests.Infrastructure;

namespace Sharding.Sidecar.Tests.MapSync;

/// <summary>The static map file under a real sidecar host (Kestrel on 127.0.0.1).</summary>
public sealed class MapFileSidecarTests
{
    [Fact]
    public async Task Sidecar_BadEditWithAnEmptyListItem_KeepsServingTheLastGoodMap()
    {
        var port = TestSidecar.FreePort();
        var path = Path.Combine(Directory.CreateTempSubdirectory("sharding-map-").FullName, "map.yaml");
        var good = $"service: echo\nmembers:\n  - {{ name: pod-0, address: \"127.0.0.1:{port}\" }}\n  - {{ name: pod-1, address: \"127.0.0.1:9\" }}\n";
        File.WriteAllText(path, good);
        await using var sidecar = await TestSidecar.StartAsync("pod-0", port, TestSidecar.FreePort(), path);
        var lifetime = sidecar.Services.GetRequiredService<IHostApplicationLifetime>();
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        Assert.StartsWith("ok: service echo generation 1", await client.GetStringAsync($"http://127.0.0.1:{sidecar.AdminPort}/readyz"), StringComparison.Ordinal);

        // Deleting pod-1's fields but not its '-': YAML reads a null list item.
        File.WriteAllText(path, $"service: echo\nmembers:\n  - {{ name: pod-0, address: \"127.0.0.1:{port}\" }}\n  -\n");
        await Task.Delay(FileShardMapSource.PollInterval * 2.5);

        Assert.False(lifetime.ApplicationStopping.IsCancellationRequested, "the bad edit stopped the sidecar");
        Assert.StartsWith("ok: service echo generation 1", await client.GetStringAsync($"http://127.0.0.1:{sidecar.AdminPort}/readyz"), StringComparison.Ordinal);
        Assert.Equal(2, sidecar.Store.Current!.Members.Length);
    }
}

using Sharding.Cli.Demo;
using Sharding.Testing;

namespace Sharding.EndToEnd.Tests;

/// <summary>A sidecar fed by the control plane (not a map file) counts the maps it applies, as docs/metrics.md says.</summary>
public sealed class SidecarMapLoadMetricTests
{
    [Fact]
    public async Task ControlPlaneFedSidecar_CountsAppliedMaps()
    {
        using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var work = Directory.CreateTempSubdirectory("sharding-maploads-test-").FullName;
        await using var cluster = new LocalCluster(ComponentPaths.Locate(), work);
        await cluster.StartAsync(1, 2, cancel.Token);

        using var http = new HttpClient();
        var loads = 0d;
        for (var i = 0; i < 100 && loads < 1; i++)
        {
            var metrics = await http.GetStringAsync(new Uri(cluster.Pods[0].AdminUrl + "/metrics"), cancel.Token);
            var line = metrics.Split('\n').FirstOrDefault(l => l.StartsWith("sharding_sidecar_map_loads_total{", StringComparison.Ordinal) && l.Contains("result=\"ok\"", StringComparison.Ordinal));
            loads = line is null ? 0 : double.Parse(line[(line.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture);
            if (loads < 1)
            {
                await Task.Delay(100, cancel.Token);
            }
        }

        Assert.True(loads >= 1, "sharding_sidecar_map_loads_total{result=\"ok\"} was never counted");
    }
}

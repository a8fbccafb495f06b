using Sharding.Testing;

namespace Sharding.ControlPlane.Tests.Hosting;

/// <summary>
/// The control plane's <c>/metrics</c> families are the rows of docs/metrics.md, and every control-plane, runtime and exporter
/// metric name the docs, dashboards and Prometheus configuration mention is one it exposes.
/// </summary>
public sealed class MetricsDocumentationTests
{
    [Fact]
    public async Task Metrics_AreTheOnesTheDocsAndDashboardsName()
    {
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(3));
        await using var replica = await ControlPlaneReplica.StartAsync(cluster.Directory, "metrics");
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var exposed = MetricsCatalogue.Exposed(await client.GetStringAsync(new Uri(replica.HttpUrl, "/metrics")));

        var problems = MetricsCatalogue.Problems("sharding_controlplane_", exposed, MetricsCatalogue.Documented("Control plane"));
        problems.AddRange(MetricsCatalogue.Problems("sharding_metrics_", exposed, documented: null));
        problems.AddRange(MetricsCatalogue.Problems("dotnet_", exposed, documented: null));
        Assert.True(problems.Count == 0, string.Join('\n', problems));
    }
}

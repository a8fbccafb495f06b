using Sharding.Metrics;
using Sharding.Testing;

namespace Sharding.Client.Tests.Hosting;

/// <summary>The client library's metric families are the rows of docs/metrics.md, and every client metric the docs name exists.</summary>
public sealed class MetricsDocumentationTests
{
    [Fact]
    public void Metrics_AreTheOnesTheDocsName()
    {
        using var exporter = new PrometheusExporter(meterNamePrefix: ClientMetricNames.MeterName);
        using var metrics = new ShardClientMetrics();
        var problems = MetricsCatalogue.Problems("sharding_client_", MetricsCatalogue.Exposed(exporter.Collect()), MetricsCatalogue.Documented("Client library"));
        Assert.True(problems.Count == 0, string.Join('\n', problems));
    }
}

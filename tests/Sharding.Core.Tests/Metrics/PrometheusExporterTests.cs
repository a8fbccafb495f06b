using System.Diagnostics.Metrics;
using Sharding.Metrics;
using Sharding.Testing;

namespace Sharding.Core.Tests.Metrics;

public sealed class PrometheusExporterTests
{
    [Fact]
    public void Collect_CounterHistogramAndGauges_RendersPrometheusText()
    {
        using var exporter = new PrometheusExporter("Sharding.Test.Render");
        using var meter = new Meter("Sharding.Test.Render");
        var requests = meter.CreateCounter<long>("sharding.test.requests", "{request}", "Requests by outcome.");
        var duration = meter.CreateHistogram<double>("sharding.test.forward.duration", "s", "Forward latency.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.001, 0.01, 0.1] });
        var open = meter.CreateUpDownCounter<int>("sharding.test.streams.active", "{stream}", "Open streams.");
        meter.CreateObservableGauge("sharding.test.generation", () => 42L, null, "Current generation.");

        requests.Add(2, new KeyValuePair<string, object?>("outcome", "local"));
        requests.Add(1, new KeyValuePair<string, object?>("outcome", "local"));
        requests.Add(5, new KeyValuePair<string, object?>("outcome", "forwarded"));
        duration.Record(0.0005);
        duration.Record(0.05);
        duration.Record(3);
        open.Add(3);
        open.Add(-1);

        var text = exporter.Collect();

        Assert.Contains("# TYPE sharding_test_requests_total counter\n", text, StringComparison.Ordinal);
        Assert.Contains("sharding_test_requests_total{outcome=\"local\"} 3\n", text, StringComparison.Ordinal);
        Assert.Contains("sharding_test_requests_total{outcome=\"forwarded\"} 5\n", text, StringComparison.Ordinal);
        Assert.Contains("# TYPE sharding_test_forward_duration_seconds histogram\n", text, StringComparison.Ordinal);
        Assert.Contains("sharding_test_forward_duration_seconds_bucket{le=\"0.001\"} 1\n", text, StringComparison.Ordinal);
        Assert.Contains("sharding_test_forward_duration_seconds_bucket{le=\"0.1\"} 2\n", text, StringComparison.Ordinal);
        Assert.Contains("sharding_test_forward_duration_seconds_bucket{le=\"+Inf\"} 3\n", text, StringComparison.Ordinal);
        Assert.Contains("sharding_test_forward_duration_seconds_count 3\n", text, StringComparison.Ordinal);
        Assert.Contains("sharding_test_forward_duration_seconds_sum 3.0505\n", text, StringComparison.Ordinal);
        Assert.Contains("# TYPE sharding_test_streams_active gauge\n", text, StringComparison.Ordinal);
        Assert.Contains("sharding_test_streams_active 2\n", text, StringComparison.Ordinal);
        Assert.Contains("sharding_test_generation 42\n", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Collect_OtherMeters_AreIgnored()
    {
        using var exporter = new PrometheusExporter("Sharding.Test.Mine");
        using var other = new Meter("Other.Library");
        other.CreateCounter<long>("other.requests").Add(1);

        Assert.DoesNotContain("other_requests", exporter.Collect(), StringComparison.Ordinal);
    }

    [Fact]
    public void Collect_WithRuntime_ExportsProcessAndGcMetrics_WithoutIt_DoesNot()
    {
        using var withRuntime = new PrometheusExporter("Sharding.Test.Runtime", includeRuntime: true);
        using var without = new PrometheusExporter("Sharding.Test.Runtime");
        GC.Collect(0);

        var text = withRuntime.Collect();
        Assert.Contains("# TYPE dotnet_process_cpu_time_seconds_total counter\n", text, StringComparison.Ordinal);
        Assert.Contains("dotnet_process_cpu_time_seconds_total{cpu_mode=\"user\"} ", text, StringComparison.Ordinal);
        Assert.Contains("dotnet_gc_collections_total{gc_heap_generation=\"gen0\"} ", text, StringComparison.Ordinal);
        Assert.Contains("# TYPE dotnet_process_memory_working_set_bytes gauge\n", text, StringComparison.Ordinal);
        Assert.Contains("dotnet_gc_heap_total_allocated_bytes_total ", text, StringComparison.Ordinal);
        Assert.DoesNotContain("dotnet_", without.Collect(), StringComparison.Ordinal);
    }

    [Fact]
    public void Collect_LabelValues_AreEscaped()
    {
        using var exporter = new PrometheusExporter("Sharding.Test.Escape");
        using var meter = new Meter("Sharding.Test.Escape");
        meter.CreateCounter<long>("sharding.test.escaped", null, "Help with \\ backslash\nand newline.")
            .Add(1, new KeyValuePair<string, object?>("member", "a\"b\\c\nd"));

        var text = exporter.Collect();

        Assert.Contains("sharding_test_escaped_total{member=\"a\\\"b\\\\c\\nd\"} 1\n", text, StringComparison.Ordinal);
        Assert.Contains("# HELP sharding_test_escaped_total Help with \\\\ backslash\\nand newline.\n", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Record_BeyondSeriesLimit_DropsAndCounts()
    {
        using var exporter = new PrometheusExporter("Sharding.Test.Limit");
        using var meter = new Meter("Sharding.Test.Limit");
        var counter = meter.CreateCounter<long>("sharding.test.limited");
        for (var i = 0; i < PrometheusExporter.MaxSeriesPerInstrument + 5; i++)
        {
            counter.Add(1, new KeyValuePair<string, object?>("n", i));
        }

        var text = exporter.Collect();

        Assert.Contains("sharding_metrics_dropped_measurements_total 5\n", text, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("sharding.sidecar.requests", "{request}", true, "sharding_sidecar_requests_total")]
    [InlineData("sharding.sidecar.forward.duration", "s", false, "sharding_sidecar_forward_duration_seconds")]
    [InlineData("sharding.sidecar.bytes", "By", true, "sharding_sidecar_bytes_total")]
    [InlineData("sharding.controlplane.leader", null, false, "sharding_controlplane_leader")]
    [InlineData("sharding.x.duration_seconds", "s", false, "sharding_x_duration_seconds")]
    [InlineData("dotnet.timer.count", "{timer}", false, "dotnet_timer_count_value")]
    [InlineData("dotnet.thread_pool.thread.count", "{thread}", true, "dotnet_thread_pool_thread_count_total")]
    public void PrometheusName_FollowsConventions(string instrument, string? unit, bool counter, string expected) =>
        Assert.Equal(expected, PrometheusExporter.PrometheusName(instrument, unit, counter));

    [RequiresToolFact("promtool", "prometheus")]
    public async Task Collect_PassesPromtoolCheckMetrics()
    {
        using var exporter = new PrometheusExporter("Sharding.Test.Promtool", includeRuntime: true);
        using var meter = new Meter("Sharding.Test.Promtool");
        meter.CreateCounter<long>("sharding.test.requests", "{request}", "Requests by outcome.").Add(1, new KeyValuePair<string, object?>("outcome", "local"));
        meter.CreateHistogram<double>("sharding.test.duration", "s", "Latency.").Record(0.2);
        meter.CreateObservableGauge("sharding.test.generation", () => 7L, null, "Generation.");

        var result = await ProcessRunner.RunAsync("promtool", ["check", "metrics"], System.Text.Encoding.UTF8.GetBytes(exporter.Collect()));

        Assert.True(result.ExitCode == 0, $"promtool: {result.StandardOutput}{result.StandardError}");
    }
}

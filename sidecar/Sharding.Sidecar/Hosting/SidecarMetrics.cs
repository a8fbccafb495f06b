using System.Diagnostics;
using System.Diagnostics.Metrics;
using Sharding.Mapping;
using Sharding.Metrics;
using Sharding.Sidecar.Forwarding;

namespace Sharding.Sidecar.Hosting;

/// <summary>The sidecar's instruments, on one Meter <see cref="SidecarMetricNames.MeterName"/>; tags never hold a shard key.</summary>
internal sealed class SidecarMetrics
{
    private static readonly double[] LatencyBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    private readonly Counter<long> _requests;
    private readonly Histogram<double> _forwardDuration;
    private readonly UpDownCounter<long> _activeStreams;
    private readonly Counter<long> _requestBytes;
    private readonly Counter<long> _responseBytes;
    private readonly Counter<long> _mapLoads;
    private readonly Counter<long> _retries;

    public SidecarMetrics(IMeterFactory meterFactory, ShardMapStore store, OwnerCircuitStates circuits)
    {
        var meter = meterFactory.Create(SidecarMetricNames.MeterName);
        _requests = meter.CreateCounter<long>(SidecarMetricNames.Requests, "{request}", "Requests by outcome");
        _forwardDuration = meter.CreateHistogram(
            SidecarMetricNames.ForwardDuration, "s", "Time from request start to the upstream's response headers",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBuckets });
        _activeStreams = meter.CreateUpDownCounter<long>(SidecarMetricNames.ActiveStreams, "{stream}", "Requests being forwarded now");
        _requestBytes = meter.CreateCounter<long>(SidecarMetricNames.RequestBytes, "By", "Request body bytes sent upstream");
        _responseBytes = meter.CreateCounter<long>(SidecarMetricNames.ResponseBytes, "By", "Response body bytes sent to clients");
        _mapLoads = meter.CreateCounter<long>(SidecarMetricNames.MapLoads, "{load}", "Shard-map loads by result");
        _retries = meter.CreateCounter<long>(SidecarMetricNames.ForwardRetries, "{retry}", "Connect retries by owner");
        meter.CreateObservableGauge(SidecarMetricNames.MapGeneration, () => store.Generation, "{generation}", "Current shard-map generation");
        meter.CreateObservableGauge(SidecarMetricNames.CircuitState, circuits.Observe, "1", "Circuit-breaker state by owner: 0 closed, 1 open, 2 half-open, 3 isolated");
    }

    public void Request(string outcome)
    {
        if (_requests.Enabled)
        {
            _requests.Add(1, new KeyValuePair<string, object?>(SidecarMetricNames.OutcomeTag, outcome));
        }
    }

    public void ForwardDuration(bool local, long startTimestamp)
    {
        if (_forwardDuration.Enabled)
        {
            _forwardDuration.Record(
                Stopwatch.GetElapsedTime(startTimestamp).TotalSeconds,
                new KeyValuePair<string, object?>(SidecarMetricNames.DestinationTag, local ? SidecarMetricNames.DestinationLocal : SidecarMetricNames.DestinationPeer));
        }
    }

    public void StreamStarted() => _activeStreams.Add(1);

    public void StreamEnded() => _activeStreams.Add(-1);

    public void RequestBytes(long count)
    {
        if (count > 0)
        {
            _requestBytes.Add(count);
        }
    }

    public void ResponseBytes(long count)
    {
        if (count > 0)
        {
            _responseBytes.Add(count);
        }
    }

    public void MapLoaded(bool ok) => _mapLoads.Add(1, new KeyValuePair<string, object?>(SidecarMetricNames.ResultTag, ok ? "ok" : "error"));

    public void Retry(string owner) => _retries.Add(1, new KeyValuePair<string, object?>(SidecarMetricNames.OwnerTag, owner));
}

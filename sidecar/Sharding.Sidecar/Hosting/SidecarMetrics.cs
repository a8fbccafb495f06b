using System.Diagnostics;
using System.Diagnostics.Metrics;
using Sharding.Mapping;
using Sharding.Metrics;
using Sharding.Sidecar.Forwarding;
using Sharding.Sidecar.Transport;

namespace Sharding.Sidecar.Hosting;

/// <summary>The sidecar's instruments, on one Meter <see cref="SidecarMetricNames.MeterName"/>; tags never hold a shard key.</summary>
internal sealed class SidecarMetrics
{
    private static readonly double[] LatencyBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    private static readonly double[] DrainBuckets = [0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60];

    private readonly Counter<long> _requests;
    private readonly Histogram<double> _forwardDuration;
    private readonly UpDownCounter<long> _activeStreams;
    private readonly Counter<long> _requestBytes;
    private readonly Counter<long> _responseBytes;
    private readonly Counter<long> _mapLoads;
    private readonly Counter<long> _retries;
    private readonly UpDownCounter<long> _streamsTracked;
    private readonly Counter<long> _goAways;
    private readonly Counter<long> _streamsDrained;
    private readonly Histogram<double> _drainDuration;
    private readonly Counter<long> _skewWaits;
    private readonly Counter<long> _fastPathRequests;
    private readonly Counter<long> _fastPathHandovers;
    private readonly Counter<long> _peerLinksOpened;
    private readonly UpDownCounter<long> _peerLinkStreams;

    public SidecarMetrics(IMeterFactory meterFactory, ShardMapStore store, OwnerCircuitStates circuits, EpollLoops? loops = null)
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
        _streamsTracked = meter.CreateUpDownCounter<long>(SidecarMetricNames.StreamsTracked, "{stream}", "Long-lived streams tracked for draining, by protocol");
        _goAways = meter.CreateCounter<long>(SidecarMetricNames.GoAwaysSent, "{goaway}", "HTTP/2 GOAWAYs sent to clients whose streams must move");
        _streamsDrained = meter.CreateCounter<long>(SidecarMetricNames.StreamsDrained, "{stream}", "Streams ended by the sidecar, by reason and protocol");
        _drainDuration = meter.CreateHistogram(
            SidecarMetricNames.DrainDuration, "s", "Time from a new generation to the last moved stream closed",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = DrainBuckets });
        _skewWaits = meter.CreateCounter<long>(SidecarMetricNames.SkewWaits, "{wait}", "Forwarded requests that waited for a newer map, by result");
        _fastPathRequests = meter.CreateCounter<long>(SidecarMetricNames.FastPathRequests, "{request}", "Requests relayed by the HTTP/1.1 fast path");
        _fastPathHandovers = meter.CreateCounter<long>(SidecarMetricNames.FastPathHandovers, "{connection}", "Connections the HTTP/1.1 fast path handed to the full path, by reason");
        _peerLinksOpened = meter.CreateCounter<long>(SidecarMetricNames.PeerLinksOpened, "{link}", "Peer links opened to other sidecars, by result");
        _peerLinkStreams = meter.CreateUpDownCounter<long>(SidecarMetricNames.PeerLinkStreams, "{stream}", "Open peer-link streams, by direction");
        meter.CreateObservableGauge(SidecarMetricNames.MapGeneration, () => store.Generation, "{generation}", "Current shard-map generation");
        meter.CreateObservableGauge(SidecarMetricNames.CircuitState, circuits.Observe, "1", "Circuit-breaker state by owner: 0 closed, 1 open, 2 half-open, 3 isolated");
        if (loops is { Enabled: true })
        {
            meter.CreateObservableCounter(SidecarMetricNames.EventLoopSleeps, () => loops.Waits.Sleeps, "{sleep}", "Times the event loops slept in epoll_wait");
            meter.CreateObservableCounter(SidecarMetricNames.EventLoopYields, () => loops.Waits.Yields, "{yield}", "Times the event loops yielded the processor and polled again instead of sleeping");
        }
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

    public void StreamTracked(string protocol, int delta) =>
        _streamsTracked.Add(delta, new KeyValuePair<string, object?>(SidecarMetricNames.ProtocolTag, protocol));

    public void GoAwaySent() => _goAways.Add(1);

    public void StreamDrained(string reason, string protocol) => _streamsDrained.Add(
        1, new KeyValuePair<string, object?>(SidecarMetricNames.ReasonTag, reason), new KeyValuePair<string, object?>(SidecarMetricNames.ProtocolTag, protocol));

    public void DrainCompleted(TimeSpan elapsed) => _drainDuration.Record(elapsed.TotalSeconds);

    public void FastPathServed() => _fastPathRequests.Add(1);

    public void FastPathHandover(string reason) => _fastPathHandovers.Add(1, new KeyValuePair<string, object?>(SidecarMetricNames.ReasonTag, reason));

    public void PeerLinkOpened(string result) => _peerLinksOpened.Add(1, new KeyValuePair<string, object?>(SidecarMetricNames.ResultTag, result));

    public void PeerLinkStreams(bool outgoing, int delta) =>
        _peerLinkStreams.Add(delta, new KeyValuePair<string, object?>(SidecarMetricNames.DirectionTag, outgoing ? "out" : "in"));

    public void SkewWait(bool caughtUp) =>
        _skewWaits.Add(1, new KeyValuePair<string, object?>(SidecarMetricNames.ResultTag, caughtUp ? SidecarMetricNames.SkewCaughtUp : SidecarMetricNames.SkewTimedOut));
}

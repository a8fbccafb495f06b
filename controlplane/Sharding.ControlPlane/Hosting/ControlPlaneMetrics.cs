using System.Diagnostics.Metrics;
using Sharding.ControlPlane.Distribution;
using Sharding.ControlPlane.Leadership;
using Sharding.Metrics;

namespace Sharding.ControlPlane.Hosting;

/// <summary>The control plane's instruments, on one Meter named <see cref="ControlPlaneMetricNames.MeterName"/>.</summary>
internal sealed class ControlPlaneMetrics
{
    private readonly Histogram<double> _publishDuration;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, double> _keysMoved = new(StringComparer.Ordinal);
    private readonly Counter<long> _publications;
    private readonly UpDownCounter<long> _subscribers;
    private readonly Counter<long> _streamResets;
    private readonly Counter<long> _updatesSent;
    private readonly Counter<long> _updateBytesSent;
    private readonly Counter<long> _membershipEvents;
    private readonly Counter<long> _membershipErrors;

    public ControlPlaneMetrics(IMeterFactory meterFactory, ShardMapRegistry registry, ILeaderElector elector)
    {
        var meter = meterFactory.Create(ControlPlaneMetricNames.MeterName);
        meter.CreateObservableGauge(ControlPlaneMetricNames.Leader, () => elector.Current.IsLeader ? 1 : 0, description: "1 while this replica is the leader");
        meter.CreateObservableGauge(ControlPlaneMetricNames.CutOff, () => registry.CutOff is null ? 0 : 1, description: "1 while this follower is cut off from the leader it relays");
        meter.CreateObservableGauge(ControlPlaneMetricNames.LeaderEpoch, () => elector.Current.Epoch, description: "The leader epoch this replica knows");
        meter.CreateObservableGauge(
            ControlPlaneMetricNames.Generation,
            () => registry.All.Select(static p => new Measurement<long>(p.Map.Generation, new KeyValuePair<string, object?>(ControlPlaneMetricNames.ServiceTag, p.Map.Service))),
            description: "Current shard-map generation per service");
        meter.CreateObservableGauge(
            ControlPlaneMetricNames.ServiceMembers,
            () => registry.All.Select(static p => new Measurement<int>(p.Map.Members.Length, new KeyValuePair<string, object?>(ControlPlaneMetricNames.ServiceTag, p.Map.Service))),
            description: "Members per service");
        meter.CreateObservableGauge(
            ControlPlaneMetricNames.KeysMovedRatio,
            () => _keysMoved.Select(static p => new Measurement<double>(p.Value, new KeyValuePair<string, object?>(ControlPlaneMetricNames.ServiceTag, p.Key))),
            description: "Share of keys whose owner changed with the last published generation");
        _publishDuration = meter.CreateHistogram(
            ControlPlaneMetricNames.PublishDuration, unit: "s", description: "Time to compute and encode the changed maps of one publication",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1] });
        _publications = meter.CreateCounter<long>(ControlPlaneMetricNames.Publications, description: "Generations published (computed) or relayed");
        _subscribers = meter.CreateUpDownCounter<long>(ControlPlaneMetricNames.Subscribers, description: "Open Watch streams");
        _streamResets = meter.CreateCounter<long>(ControlPlaneMetricNames.StreamResets, description: "Watch streams ended other than by the server");
        _updatesSent = meter.CreateCounter<long>(ControlPlaneMetricNames.UpdatesSent, description: "Updates sent on Watch streams");
        _updateBytesSent = meter.CreateCounter<long>(ControlPlaneMetricNames.UpdateBytesSent, unit: "By", description: "Update bytes sent on Watch streams");
        _membershipEvents = meter.CreateCounter<long>(ControlPlaneMetricNames.MembershipEvents, description: "Membership snapshots received");
        _membershipErrors = meter.CreateCounter<long>(ControlPlaneMetricNames.MembershipErrors, description: "Membership inputs rejected");
    }

    public void Published(TimeSpan duration, int services, bool computed)
    {
        if (computed)
        {
            _publishDuration.Record(duration.TotalSeconds);
        }

        if (_publications.Enabled && services > 0)
        {
            _publications.Add(services, new KeyValuePair<string, object?>(ControlPlaneMetricNames.SourceTag, computed ? "computed" : "relayed"));
        }
    }

    /// <summary>Records the share of keys the last generation of <paramref name="service"/> moved.</summary>
    public void KeysMoved(string service, double share) => _keysMoved[service] = share;

    public void SubscriberOpened() => _subscribers.Add(1);

    public void SubscriberClosed() => _subscribers.Add(-1);

    public void StreamReset(string reason)
    {
        if (_streamResets.Enabled)
        {
            _streamResets.Add(1, new KeyValuePair<string, object?>(ControlPlaneMetricNames.ReasonTag, reason));
        }
    }

    public void UpdateSent(string kind, int bytes)
    {
        if (_updatesSent.Enabled)
        {
            var tag = new KeyValuePair<string, object?>(ControlPlaneMetricNames.KindTag, kind);
            _updatesSent.Add(1, tag);
            _updateBytesSent.Add(bytes, tag);
        }
    }

    public void MembershipEvent() => _membershipEvents.Add(1);

    public void MembershipError() => _membershipErrors.Add(1);
}

using System.Diagnostics.Metrics;
using Sharding.Metrics;

namespace Sharding.Client;

/// <summary>The client library's instruments (Meter <see cref="ClientMetricNames.MeterName"/>); one per service provider.</summary>
internal sealed class ShardClientMetrics : IDisposable
{
    private readonly Meter _meter;
    private readonly bool _ownsMeter;
    private readonly Counter<long> _requests;
    private readonly List<ShardRouter> _routers = [];

    public ShardClientMetrics(IMeterFactory? meterFactory = null)
    {
        _ownsMeter = meterFactory is null;
        _meter = meterFactory?.Create(ClientMetricNames.MeterName) ?? new Meter(ClientMetricNames.MeterName);
        _requests = _meter.CreateCounter<long>(ClientMetricNames.Requests, "{request}", "Requests sent by the shard routing handler, directly to the owner or via the Service address.");
        _meter.CreateObservableGauge(ClientMetricNames.MapGeneration, ObserveGenerations, description: "The followed service's shard-map generation (-1 before the first map).");
        _meter.CreateObservableGauge(ClientMetricNames.SubscriptionState, ObserveStates, description: "Subscription state: 0 starting, 1 connected, 2 reconnecting, 3 service not found, 4 stopped.");
    }

    public void Register(ShardRouter router)
    {
        lock (_routers)
        {
            _routers.Add(router);
        }
    }

    public void Unregister(ShardRouter router)
    {
        lock (_routers)
        {
            _routers.Remove(router);
        }
    }

    public void Direct(string service)
    {
        if (_requests.Enabled)
        {
            _requests.Add(1, new KeyValuePair<string, object?>(ClientMetricNames.ServiceTag, service),
                new KeyValuePair<string, object?>(ClientMetricNames.RouteTag, ClientMetricNames.RouteDirect));
        }
    }

    public void ViaService(string service, string reason)
    {
        if (_requests.Enabled)
        {
            _requests.Add(1, new KeyValuePair<string, object?>(ClientMetricNames.ServiceTag, service),
                new KeyValuePair<string, object?>(ClientMetricNames.RouteTag, ClientMetricNames.RouteViaService),
                new KeyValuePair<string, object?>(ClientMetricNames.ReasonTag, reason));
        }
    }

    public void Dispose()
    {
        if (_ownsMeter)
        {
            _meter.Dispose();
        }
    }

    private List<Measurement<long>> ObserveGenerations()
    {
        lock (_routers)
        {
            var measurements = new List<Measurement<long>>(_routers.Count);
            foreach (var router in _routers)
            {
                measurements.Add(new Measurement<long>(router.Generation, new KeyValuePair<string, object?>(ClientMetricNames.ServiceTag, router.Service)));
            }

            return measurements;
        }
    }

    private List<Measurement<int>> ObserveStates()
    {
        lock (_routers)
        {
            var measurements = new List<Measurement<int>>(_routers.Count);
            foreach (var router in _routers)
            {
                measurements.Add(new Measurement<int>((int)router.State, new KeyValuePair<string, object?>(ClientMetricNames.ServiceTag, router.Service)));
            }

            return measurements;
        }
    }
}

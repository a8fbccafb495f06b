namespace Sharding.Metrics;

/// <summary>Instrument, tag and tag-value names of the client library's metrics (Meter <see cref="MeterName"/>).</summary>
/// <remarks>
/// Prometheus names follow from <see cref="PrometheusExporter.PrometheusName"/>: <c>sharding_client_requests_total</c>,
/// <c>sharding_client_map_generation</c>, <c>sharding_client_subscription_state</c>. Tags never carry a shard key.
/// </remarks>
public static class ClientMetricNames
{
    /// <summary>The client library's Meter.</summary>
    public const string MeterName = "Sharding.Client";

    /// <summary>Counter of requests the routing handler sent, tagged <see cref="ServiceTag"/>, <see cref="RouteTag"/> and, for
    /// <see cref="RouteViaService"/>, <see cref="ReasonTag"/>.</summary>
    public const string Requests = "sharding.client.requests";

    /// <summary>Gauge of the followed service's shard-map generation (-1 before the first map), tagged <see cref="ServiceTag"/>.</summary>
    public const string MapGeneration = "sharding.client.map.generation";

    /// <summary>Gauge of the subscription state, tagged <see cref="ServiceTag"/>: 0 starting, 1 connected, 2 reconnecting,
    /// 3 service not found, 4 stopped.</summary>
    public const string SubscriptionState = "sharding.client.subscription.state";

    /// <summary>Tag: the sharded service's name.</summary>
    public const string ServiceTag = "service";

    /// <summary>Tag: <see cref="RouteDirect"/> or <see cref="RouteViaService"/>.</summary>
    public const string RouteTag = "route";

    /// <summary>Tag: why a request went to the Service address, one of the <c>Reason…</c> values.</summary>
    public const string ReasonTag = "reason";

    /// <summary>Sent straight to the owner's sidecar.</summary>
    public const string RouteDirect = "direct";

    /// <summary>Sent to the Service address (the original URI); a sidecar routes it.</summary>
    public const string RouteViaService = "via_service";

    /// <summary>No shard map yet.</summary>
    public const string ReasonNoMap = "no_map";

    /// <summary>The map has no member that owns keys.</summary>
    public const string ReasonEmptyMap = "empty_map";

    /// <summary>No rule found a key (and the policy names no fallback member).</summary>
    public const string ReasonNoKey = "no_key";

    /// <summary>The key is too long or the JSON body is malformed: the sidecar answers 400 and says why.</summary>
    public const string ReasonBadKey = "bad_key";

    /// <summary>The JSON body rule needed more than the policy's body limit: the sidecar answers 413.</summary>
    public const string ReasonBodyTooLarge = "body_too_large";

    /// <summary>The owner's address in the map is not <c>host:port</c>: the Service's sidecar answers with the owner's name.</summary>
    public const string ReasonBadAddress = "bad_address";
}

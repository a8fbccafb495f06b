namespace Sharding.Metrics;

/// <summary>Instrument, tag and tag-value names of the sidecar's metrics (Meter <see cref="MeterName"/>).</summary>
/// <remarks>
/// Prometheus names follow from <see cref="PrometheusExporter.PrometheusName"/>: counters get <c>_total</c>, unit <c>s</c>
/// gives <c>_seconds</c>, unit <c>By</c> gives <c>_bytes</c>. Tags never carry a shard key (unbounded cardinality).
/// </remarks>
public static class SidecarMetricNames
{
    /// <summary>The sidecar's Meter.</summary>
    public const string MeterName = "Sharding.Sidecar";

    /// <summary>Counter of finished requests, tagged <see cref="OutcomeTag"/> (<c>sharding_sidecar_requests_total</c>).</summary>
    public const string Requests = "sharding.sidecar.requests";

    /// <summary>Histogram of the time from receiving a request to the upstream's response headers, seconds, tagged <see cref="DestinationTag"/>.</summary>
    public const string ForwardDuration = "sharding.sidecar.forward.duration";

    /// <summary>Up-down counter of requests being forwarded right now (streams included).</summary>
    public const string ActiveStreams = "sharding.sidecar.active_streams";

    /// <summary>Counter of body bytes read from clients and sent upstream, bytes.</summary>
    public const string RequestBytes = "sharding.sidecar.request.body";

    /// <summary>Counter of body bytes read from upstream and sent to clients, bytes.</summary>
    public const string ResponseBytes = "sharding.sidecar.response.body";

    /// <summary>Gauge of the current shard-map generation (-1 before the first map).</summary>
    public const string MapGeneration = "sharding.sidecar.map.generation";

    /// <summary>Counter of map loads, tagged <see cref="ResultTag"/> (<c>ok</c> or <c>error</c>).</summary>
    public const string MapLoads = "sharding.sidecar.map.loads";

    /// <summary>Gauge of each owner's circuit-breaker state, tagged <see cref="OwnerTag"/>: 0 closed, 1 open, 2 half-open, 3 isolated.</summary>
    public const string CircuitState = "sharding.sidecar.circuit.state";

    /// <summary>Counter of connect retries to an owner, tagged <see cref="OwnerTag"/>.</summary>
    public const string ForwardRetries = "sharding.sidecar.forward.retries";

    /// <summary>Counter of requests the HTTP/1.1 fast path relayed itself (also counted in <see cref="Requests"/>).</summary>
    public const string FastPathRequests = "sharding.sidecar.fast_path.requests";

    /// <summary>Counter of connections the HTTP/1.1 fast path handed to the full path, tagged <see cref="ReasonTag"/>
    /// (one of the <c>Handover…</c> values).</summary>
    public const string FastPathHandovers = "sharding.sidecar.fast_path.handovers";

    /// <summary>Counter of peer links this sidecar opened to others, tagged <see cref="ResultTag"/>: <c>linked</c>,
    /// <c>unsupported</c> (the other sidecar answered as a plain HTTP/2 server: an older version), <c>failed</c> (no answer).</summary>
    public const string PeerLinksOpened = "sharding.sidecar.peer_links.opened";

    /// <summary>Up-down counter of open peer-link streams, tagged <see cref="DirectionTag"/>: <c>out</c> (opened here to forward),
    /// <c>in</c> (opened by another sidecar, served here).</summary>
    public const string PeerLinkStreams = "sharding.sidecar.peer_link.streams";

    /// <summary>Observable counter of the times the sidecar's event loops slept in epoll_wait.</summary>
    public const string EventLoopSleeps = "sharding.sidecar.event_loop.sleeps";

    /// <summary>Observable counter of the times the event loops yielded the processor and polled again instead of sleeping
    /// (<c>Sidecar:IdleYields</c>).</summary>
    public const string EventLoopYields = "sharding.sidecar.event_loop.yields";

    /// <summary>Tag: which side opened a peer-link stream.</summary>
    public const string DirectionTag = "direction";

    /// <summary>Handover reason: not a plain HTTP/1.1 request (HTTP/2, upgrade, chunked upload, Expect, event stream, unusual head).</summary>
    public const string HandoverProtocol = "protocol";

    /// <summary>Handover reason: a request from another sidecar the fast path does not serve itself: its proof does not verify,
    /// the sender's map is newer, or the key is not this pod's (the full path answers 403, waits for the map, or forwards once more).</summary>
    public const string HandoverForwarded = "forwarded";

    /// <summary>Handover reason: the key is another pod's and the fast path does not forward it (its owner's circuit is not
    /// closed, or its address is not an IP endpoint).</summary>
    public const string HandoverNotOwner = "not_owner";

    /// <summary>Handover reason: the key needs the JSON body, is too long, or no key was found and the answer is not "serve here".</summary>
    public const string HandoverKey = "key";

    /// <summary>Handover reason: no shard map yet, or this pod is not in it.</summary>
    public const string HandoverNoMap = "no_map";

    /// <summary>Handover reason: the request head is larger than the fast path reads (16 KiB) or never completed.</summary>
    public const string HandoverHeadSize = "head_size";

    /// <summary>Handover reason: this pod's app or the owner's sidecar refused or did not accept the connection (the full path
    /// retries or answers 503).</summary>
    public const string HandoverConnect = "connect";

    /// <summary>Tag: the request's outcome, one of the <c>Outcome…</c> values.</summary>
    public const string OutcomeTag = "outcome";

    /// <summary>Tag: <c>local</c> (this pod's app) or <c>peer</c> (another sidecar).</summary>
    public const string DestinationTag = "destination";

    /// <summary>Up-down counter of tracked long-lived streams, tagged <see cref="ProtocolTag"/> (<c>sharding_sidecar_streams_tracked</c>).</summary>
    public const string StreamsTracked = "sharding.sidecar.streams.tracked";

    /// <summary>Counter of HTTP/2 GOAWAYs sent to clients whose streams' keys moved (<c>sharding_sidecar_goaways_sent_total</c>).</summary>
    public const string GoAwaysSent = "sharding.sidecar.goaways.sent";

    /// <summary>Counter of streams the sidecar ended, tagged <see cref="ReasonTag"/> and <see cref="ProtocolTag"/> (<c>sharding_sidecar_streams_drained_total</c>).</summary>
    public const string StreamsDrained = "sharding.sidecar.streams.drained";

    /// <summary>Histogram of the time from a new generation to the last moved stream closed, seconds (<c>sharding_sidecar_drain_duration_seconds</c>).</summary>
    public const string DrainDuration = "sharding.sidecar.drain.duration";

    /// <summary>Counter of forwarded requests that waited for a newer map, tagged <see cref="ResultTag"/> <c>caught_up</c> or <c>timed_out</c> (<c>sharding_sidecar_skew_waits_total</c>).</summary>
    public const string SkewWaits = "sharding.sidecar.skew.waits";

    /// <summary>Tag: a stream's protocol, one of the <c>Protocol…</c> values.</summary>
    public const string ProtocolTag = "protocol";

    /// <summary>Tag: why a stream was drained, one of the <c>Reason…</c> values.</summary>
    public const string ReasonTag = "reason";

    /// <summary><see cref="ProtocolTag"/>: gRPC (content type application/grpc).</summary>
    public const string ProtocolGrpc = "grpc";

    /// <summary><see cref="ProtocolTag"/>: server-sent events (text/event-stream).</summary>
    public const string ProtocolSse = "sse";

    /// <summary><see cref="ProtocolTag"/>: a WebSocket (HTTP/1.1 upgrade).</summary>
    public const string ProtocolWebSocket = "websocket";

    /// <summary><see cref="ProtocolTag"/>: a request whose response headers had not come after the stream threshold.</summary>
    public const string ProtocolLongPoll = "long_poll";

    /// <summary><see cref="ProtocolTag"/>: any other request open longer than the stream threshold.</summary>
    public const string ProtocolHttp = "http";

    /// <summary><see cref="ReasonTag"/>: the stream's key moved to another owner.</summary>
    public const string ReasonMoved = "moved";

    /// <summary><see cref="ReasonTag"/>: the sidecar is shutting down.</summary>
    public const string ReasonShutdown = "shutdown";

    /// <summary><see cref="ReasonTag"/>: the client connection reached its maximum age.</summary>
    public const string ReasonMaxAge = "max_age";

    /// <summary><see cref="ResultTag"/> of a skew wait: the newer map arrived in time.</summary>
    public const string SkewCaughtUp = "caught_up";

    /// <summary><see cref="ResultTag"/> of a skew wait: it did not; the request was decided on the older map.</summary>
    public const string SkewTimedOut = "timed_out";

    /// <summary>Tag: a member (pod) name.</summary>
    public const string OwnerTag = "owner";

    /// <summary>Tag: <c>ok</c> or <c>error</c>.</summary>
    public const string ResultTag = "result";

    /// <summary>Served by this pod's app.</summary>
    public const string OutcomeLocal = "local";

    /// <summary>Forwarded to the owner's sidecar.</summary>
    public const string OutcomeForwarded = "forwarded";

    /// <summary>Rejected: a forwarded request whose proof failed (403), or an internal header from outside.</summary>
    public const string OutcomeRejected = "rejected";

    /// <summary>No rule found a key and the policy rejects such requests (400).</summary>
    public const string OutcomeNoKey = "no_key";

    /// <summary>Bad input: malformed JSON body, key too long (400), body over the limit (413).</summary>
    public const string OutcomeBadRequest = "bad_request";

    /// <summary>The request would have needed a third hop (503).</summary>
    public const string OutcomeLoopPrevented = "loop_prevented";

    /// <summary>The owner is down or its circuit is open (503).</summary>
    public const string OutcomeOwnerUnavailable = "owner_unavailable";

    /// <summary>No shard map yet, or an empty one (503).</summary>
    public const string OutcomeNoMap = "no_map";

    /// <summary>The upstream failed after the request was sent (502/504, or a reset once the response started).</summary>
    public const string OutcomeUpstreamError = "upstream_error";

    /// <summary>The client went away.</summary>
    public const string OutcomeClientAborted = "client_aborted";

    /// <summary><see cref="DestinationTag"/> value for this pod's app.</summary>
    public const string DestinationLocal = "local";

    /// <summary><see cref="DestinationTag"/> value for another sidecar.</summary>
    public const string DestinationPeer = "peer";
}

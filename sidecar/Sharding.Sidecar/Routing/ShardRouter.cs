using System.Buffers;
using System.Globalization;
using Microsoft.Extensions.Options;
using Sharding.Hashing;
using Sharding.Keys;
using Sharding.Mapping;
using Sharding.Metrics;
using Sharding.Net;
using Sharding.Protocol;
using Sharding.Sidecar.Draining;
using Sharding.Sidecar.Forwarding;
using Sharding.Sidecar.Hosting;

namespace Sharding.Sidecar.Routing;

/// <summary>
/// The data plane: finds the shard key, picks the owner on the map snapshot read once, and serves locally or forwards.
/// </summary>
/// <remarks>
/// (1) read the map once; (2) a request carrying <c>x-sharding-hop</c> came from a sidecar: its proof must verify (403),
/// and its key comes from <c>x-sharding-key</c>; any other <c>x-sharding-*</c> header from outside is dropped (never copied);
/// (3) else the key rules run, the JSON body rule last with bounded buffering (400 malformed, 413 over the limit);
/// (4) no key → the policy's fallback (400 naming the rules, local, or a fixed member); (5) owner = map.OwnerOf(key);
/// (6) owner is this pod → the app; else → the owner's sidecar, unless that would be a third hop (503 + Retry-After);
/// (7) errors before the response started become 502/503/504 with a reason; every response carries
/// <c>x-sharding-owner</c> and <c>x-sharding-generation</c>.
/// </remarks>
internal sealed partial class ShardRouter
{
    /// <summary>Sidecar-to-sidecar hops a request may take: one forward, plus one more when the receiver's map differs.</summary>
    public const int MaxHops = 2;

    private readonly ShardMapStore _store;
    private readonly HttpForwarder _forwarder;
    private readonly ForwardingProof _proof;
    private readonly SidecarMetrics _metrics;
    private readonly SidecarOptions _options;
    private readonly ILogger<ShardRouter> _logger;
    private readonly StreamRegistry _streams;
    private readonly string _retryAfter;
    private readonly string _appBase;
    private readonly MapViews _views;

    public ShardRouter(
        ShardMapStore store, MapViews views, HttpForwarder forwarder, ForwardingProof proof, SidecarMetrics metrics, IOptions<SidecarOptions> options,
        StreamRegistry streams, ILogger<ShardRouter> logger)
    {
        _views = views;
        _streams = streams;
        _store = store;
        _forwarder = forwarder;
        _proof = proof;
        _metrics = metrics;
        _options = options.Value;
        _logger = logger;
        _retryAfter = Math.Max(1, _options.RetryAfterSeconds).ToString(CultureInfo.InvariantCulture);
        _appBase = forwarder.AppBaseAddress;
    }

    public async Task InvokeAsync(HttpContext context)
    {
        // 1. One snapshot for the whole request.
        var map = _store.Current;
        if (map is null || map.IsEmpty)
        {
            await WriteErrorAsync(context, StatusCodes.Status503ServiceUnavailable, SidecarMetricNames.OutcomeNoMap,
                map is null ? "no shard map yet" : $"the shard map of service '{map.Service}' has no members", _retryAfter, _options.PodName).ConfigureAwait(false);
            return;
        }

        // Version skew: a peer that routed with a newer map than ours; wait briefly for it before deciding.
        if (context.Request.Headers[HeaderRules.Hop].Count > 0 && SenderGeneration(context) is var sent && sent > map.Generation && _options.SkewWait > TimeSpan.Zero)
        {
            map = await WaitForSkewAsync(context, map, sent).ConfigureAwait(false);
        }

        var state = _views.For(map);
        context.Response.Headers[HeaderRules.Generation] = state.GenerationText;
        if (RefusedTunnel(context) is { } refused)
        {
            await WriteErrorAsync(context, StatusCodes.Status501NotImplemented, SidecarMetricNames.OutcomeBadRequest, refused, null, _options.PodName)
                .ConfigureAwait(false);
            return;
        }

        // 2-6. Decide.
        var decision = Decide(context, state);
        byte[]? prefix = null;
        var prefixLength = 0;
        JsonKeyPathGuard? guard = null;
        try
        {
            if (decision.Kind == DecisionKind.NeedsBody)
            {
                (decision, prefix, prefixLength, guard) = await DecideFromBodyAsync(context, state).ConfigureAwait(false);
            }

            if (decision.Kind == DecisionKind.Error)
            {
                await WriteErrorAsync(context, decision.Status, decision.Outcome!, decision.Message!, decision.RetryAfter,
                    decision.Owner?.Name ?? _options.PodName).ConfigureAwait(false);
                return;
            }

            var owner = decision.Owner!;
            var isLocal = decision.Kind == DecisionKind.Local;
            var shard = new ShardRequestContext
            {
                KeyHash = decision.Hash,
                HasKey = decision.HasKey,
                Key = decision.KeyHeader,
                Owner = owner,
                Map = map,
                Kind = isLocal ? RouteKind.Local : RouteKind.Peer,
                Hop = decision.Hop,
                SenderGeneration = decision.SenderGeneration,
                ConnectionId = context.Connection.Id,
                Protocol = context.Request.Protocol,
            };
            context.Features.Set(shard);
            context.Response.Headers[HeaderRules.Owner] = owner.Name;
            var body = prefix is null ? ReadOnlyMemory<byte>.Empty : prefix.AsMemory(0, prefixLength);
            var target = isLocal
                ? new ForwardTarget(_appBase, _options.PodName, IsPeer: false, body, Internal: null, state.GenerationText, guard)
                : new ForwardTarget(state.PeerBase(owner), owner.Name, IsPeer: true, body,
                    new InternalHeaders(decision.NextHopText!, state.GenerationText, decision.KeyHeader ?? string.Empty, decision.Proof!), BodyGuard: guard);

            _streams.Begin(shard, context);
            try
            {
                var result = await _forwarder.ForwardAsync(context, target, shard).ConfigureAwait(false);
                if (guard?.Message is { } ambiguous && !context.Response.HasStarted)
                {
                    // Found in the rest of the body while it streamed: the upstream request was cut, never whole.
                    await WriteErrorAsync(context, StatusCodes.Status400BadRequest, SidecarMetricNames.OutcomeBadRequest, ambiguous, null, owner.Name)
                        .ConfigureAwait(false);
                    return;
                }

                await CompleteAsync(context, result, owner, isLocal).ConfigureAwait(false);
            }
            finally
            {
                _streams.End(shard);
            }
        }
        finally
        {
            if (prefix is not null)
            {
                ArrayPool<byte>.Shared.Return(prefix);
            }
        }
    }

    private static long SenderGeneration(HttpContext context) =>
        long.TryParse(context.Request.Headers[HeaderRules.Generation].ToString(), NumberStyles.None, CultureInfo.InvariantCulture, out var generation)
            ? generation
            : -1;

    /// <summary>
    /// The sender's map is newer: wait (bounded by <see cref="SidecarOptions.SkewWait"/>) for it, then decide on whatever map
    /// is current. The proof is verified afterwards as usual, so an unproven request costs at most the wait.
    /// </summary>
    private async ValueTask<ShardMap> WaitForSkewAsync(HttpContext context, ShardMap map, long senderGeneration)
    {
        var caughtUp = await _store.WaitForGenerationAsync(senderGeneration, _options.SkewWait, context.RequestAborted).ConfigureAwait(false);
        _metrics.SkewWait(caughtUp);
        var current = _store.Current ?? map;
        Log.SkewWait(_logger, senderGeneration, map.Generation, current.Generation, caughtUp);
        return current.IsEmpty ? map : current;
    }

    private async Task CompleteAsync(HttpContext context, ForwardResult result, ShardMember owner, bool isLocal)
    {
        switch (result.Error)
        {
            case ForwarderError.None:
                _metrics.Request(isLocal ? SidecarMetricNames.OutcomeLocal : SidecarMetricNames.OutcomeForwarded);
                return;
            case ForwarderError.RequestCanceled or ForwarderError.ResponseBodyClient:
                _metrics.Request(SidecarMetricNames.OutcomeClientAborted);
                return;
        }

        if (context.Response.HasStarted)
        {
            _metrics.Request(SidecarMetricNames.OutcomeUpstreamError);
            return;
        }

        var who = ForwardFailureText.Who(owner, isLocal);
        var (status, outcome, message, retryAfter) = result.Error switch
        {
            ForwarderError.OwnerUnavailable => (StatusCodes.Status503ServiceUnavailable, SidecarMetricNames.OutcomeOwnerUnavailable,
                ForwardFailureText.Unavailable(who),
                Math.Max(1, (int)Math.Ceiling(result.RetryAfter.TotalSeconds)).ToString(CultureInfo.InvariantCulture)),
            ForwarderError.RequestTimedOut => (StatusCodes.Status504GatewayTimeout, SidecarMetricNames.OutcomeUpstreamError,
                ForwardFailureText.TimedOut(who, _options.ResponseHeadersTimeout), null),
            ForwarderError.RequestBodyClient => (StatusCodes.Status400BadRequest, SidecarMetricNames.OutcomeBadRequest,
                "reading the request body failed", null),
            _ => (StatusCodes.Status502BadGateway, SidecarMetricNames.OutcomeUpstreamError, ForwardFailureText.Failed(who, result.Error.ToString()), (string?)null),
        };
        await WriteErrorAsync(context, status, outcome, message, retryAfter, owner.Name).ConfigureAwait(false);
    }

    private Decision Decide(HttpContext context, MapView state)
    {
        Span<char> key = stackalloc char[ShardKeyExtractor.MaxKeyLength];
        var headers = context.Request.Headers;
        var hopHeader = headers[HeaderRules.Hop];
        if (hopHeader.Count > 0)
        {
            return DecideForwarded(context, state, key);
        }

        var request = new HttpContextShardKeyRequest(context);
        var status = state.Extractor.TryExtract(ref request, key, out var length);
        return status switch
        {
            ShardKeyStatus.Found => Route(state, key[..length], hasKey: true, hop: 0, senderGeneration: -1),
            // Only a JSON body (or one of no stated type) is read: a gRPC, multipart, form or binary one only ever gave "not valid
            // JSON", where the no-key policy (serve here, a fixed member) is what the service asked for.
            ShardKeyStatus.NeedsBody when HasBody(context) => ShardKeyExtractor.ReadsBodyOf(context.Request.ContentType)
                ? new Decision(DecisionKind.NeedsBody)
                : NoKey(state, hop: 0, senderGeneration: -1, unreadBodyType: context.Request.ContentType),
            ShardKeyStatus.TooLong => Error(StatusCodes.Status400BadRequest, SidecarMetricNames.OutcomeBadRequest,
                $"the shard key is longer than {ShardKeyExtractor.MaxKeyLength} characters"),
            _ => NoKey(state, hop: 0, senderGeneration: -1),
        };
    }

    private static bool HasBody(HttpContext context) =>
        context.Request.ContentLength is long length ? length > 0
        : context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpRequestBodyDetectionFeature>()?.CanHaveBody ?? false;

    private Decision DecideForwarded(HttpContext context, MapView state, Span<char> key)
    {
        // A request from another sidecar: nothing in it is trusted until its proof verifies.
        var headers = context.Request.Headers;
        if (!int.TryParse(headers[HeaderRules.Hop].ToString(), NumberStyles.None, CultureInfo.InvariantCulture, out var hop) || hop is < 1 or > MaxHops)
        {
            return Rejected(context, $"{HeaderRules.Hop} must be 1..{MaxHops}");
        }

        if (!long.TryParse(headers[HeaderRules.Generation].ToString(), NumberStyles.None, CultureInfo.InvariantCulture, out var senderGeneration))
        {
            return Rejected(context, $"{HeaderRules.Generation} is missing or not a number");
        }

        var keyHeader = headers[HeaderRules.Key];
        var length = 0;
        if (keyHeader.Count > 0 && !KeyHeader.TryDecode(keyHeader.ToString(), key, out length))
        {
            return Rejected(context, $"{HeaderRules.Key} is not a valid key");
        }

        var proof = _proof.Verify(headers[HeaderRules.Proof].ToString(), key[..length], senderGeneration, hop);
        if (proof != ProofResult.Valid)
        {
            return Rejected(context, $"the forwarding proof ({HeaderRules.Proof}) is {proof.ToString().ToLowerInvariant()}");
        }

        // Version skew: InvokeAsync already waited for the sender's newer map (SkewWait); a map that still differs forwards at
        // most once more (Peer refuses a third hop).
        if (length == 0)
        {
            // The sender applied its no-key fallback and picked us: serve it.
            return new Decision(DecisionKind.Local, state.LocalMember, Hop: hop, SenderGeneration: senderGeneration);
        }

        return Route(state, key[..length], hasKey: true, hop, senderGeneration);
    }

    private Decision Rejected(HttpContext context, string reason)
    {
        Log.ProofRejected(_logger, ClientAddress.Of(context.Connection.RemoteIpAddress)?.ToString() ?? "?", reason);
        return Error(StatusCodes.Status403Forbidden, SidecarMetricNames.OutcomeRejected, $"forwarded request rejected: {reason}");
    }

    /// <summary>
    /// Reads the body up to the key (bounded by the map's limit) and decides. The bytes read are also checked for a member on
    /// a key path that appears twice (400: the app's parser may take the other one); when the body goes on, the returned
    /// guard checks the rest while it streams.
    /// </summary>
    private async ValueTask<(Decision Decision, byte[]? Prefix, int Length, JsonKeyPathGuard? Guard)> DecideFromBodyAsync(HttpContext context, MapView state)
    {
        var limit = state.Map.KeyPolicy.MaxBodyBytes;
        var request = context.Request;
        var buffer = ArrayPool<byte>.Shared.Rent(request.ContentLength is long length && length < limit ? (int)length : limit);
        var keyChars = ArrayPool<char>.Shared.Rent(ShardKeyExtractor.MaxKeyLength);
        var filled = 0;
        var returnBuffer = true;
        try
        {
            var status = ShardKeyStatus.NeedsMoreBody;
            int keyLength = 0;
            string? error = null;

            // Bounded: each turn adds at least one byte up to the limit, or the body ends.
            var complete = false;
            while (filled < limit)
            {
                var read = await request.Body.ReadAsync(buffer.AsMemory(filled, Math.Min(buffer.Length, limit) - filled), context.RequestAborted).ConfigureAwait(false);
                if (read == 0)
                {
                    complete = true;
                    break;
                }

                filled += read;
                status = state.Extractor.TryExtractFromBody(buffer.AsSpan(0, filled), isFinalBlock: false, keyChars, out keyLength, out error);
                if (status != ShardKeyStatus.NeedsMoreBody)
                {
                    break;
                }

                if (filled == buffer.Length && filled < limit)
                {
                    var larger = ArrayPool<byte>.Shared.Rent(Math.Min(limit, buffer.Length * 2));
                    buffer.AsSpan(0, filled).CopyTo(larger);
                    ArrayPool<byte>.Shared.Return(buffer);
                    buffer = larger;
                }
            }

            if (complete)
            {
                status = state.Extractor.TryExtractFromBody(buffer.AsSpan(0, filled), isFinalBlock: true, keyChars, out keyLength, out error);
            }

            var decision = status switch
            {
                ShardKeyStatus.Found => Route(state, keyChars.AsSpan(0, keyLength), hasKey: true, hop: 0, senderGeneration: -1),
                ShardKeyStatus.MalformedBody => Error(StatusCodes.Status400BadRequest, SidecarMetricNames.OutcomeBadRequest,
                    $"cannot read the shard key from the JSON body: {error}"),
                ShardKeyStatus.TooLong => Error(StatusCodes.Status400BadRequest, SidecarMetricNames.OutcomeBadRequest,
                    $"the shard key is longer than {ShardKeyExtractor.MaxKeyLength} characters"),
                ShardKeyStatus.NeedsMoreBody => Error(StatusCodes.Status413PayloadTooLarge, SidecarMetricNames.OutcomeBadRequest,
                    $"the JSON body's shard key was not found in its first {limit} bytes (keys.maxBodyBytes); put the key field first or raise the limit"),
                _ => NoKey(state, hop: 0, senderGeneration: -1),
            };
            JsonKeyPathGuard? guard = null;
            if (decision.Kind != DecisionKind.Error)
            {
                guard = state.Extractor.CreateBodyGuard();
                if (!guard.Feed(buffer.AsSpan(0, filled)))
                {
                    decision = Error(StatusCodes.Status400BadRequest, SidecarMetricNames.OutcomeBadRequest, guard.Message!);
                }
                else if (complete)
                {
                    guard = null; // the whole body was checked
                }
            }

            returnBuffer = decision.Kind == DecisionKind.Error;
            return (decision, returnBuffer ? null : buffer, filled, returnBuffer ? null : guard);
        }
        finally
        {
            ArrayPool<char>.Shared.Return(keyChars);
            if (returnBuffer)
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }

    // unreadBodyType: the Content-Type of a body the JSON body rules did not read because it is not JSON (named in the 400).
    private Decision NoKey(MapView state, int hop, long senderGeneration, string? unreadBodyType = null)
    {
        var policy = state.Map.KeyPolicy;
        switch (policy.NoKey)
        {
            case NoKeyAction.ServeLocally:
                return new Decision(DecisionKind.Local, state.LocalMember, Hop: hop, SenderGeneration: senderGeneration);
            case NoKeyAction.FixedMember when policy.FallbackMember is { } name && state.Map.FindMember(name) is { } member:
                return member.Name == _options.PodName
                    ? new Decision(DecisionKind.Local, member, Hop: hop, SenderGeneration: senderGeneration)
                    : Peer(state, member, [], hasKey: false, 0, hop, senderGeneration);
            case NoKeyAction.FixedMember when policy.FallbackMember is { } name:
                // The pod named for key-less requests left the map (scaled away, or not Ready): unavailable, not a bad request.
                return Error(StatusCodes.Status503ServiceUnavailable, SidecarMetricNames.OutcomeOwnerUnavailable,
                    $"no shard key, and {name}, the member that serves requests without one, is not in shard map generation {state.GenerationText}", _retryAfter);
            default:
                return Error(StatusCodes.Status400BadRequest, SidecarMetricNames.OutcomeNoKey, unreadBodyType is null
                    ? $"no shard key: no rule found one (tried {state.Extractor.RulesDescription})"
                    : $"no shard key: no rule found one (tried {state.Extractor.RulesDescription}; json: rules read JSON bodies only, and this body is {unreadBodyType})");
        }
    }

    private Decision Route(MapView state, ReadOnlySpan<char> key, bool hasKey, int hop, long senderGeneration)
    {
        var hash = XxHash64.HashUtf8(key);
        var owner = state.Map.OwnerOf(hash);
        if (owner is null)
        {
            return Error(StatusCodes.Status503ServiceUnavailable, SidecarMetricNames.OutcomeNoMap, "the shard map has no member that owns keys", _retryAfter);
        }

        if (string.Equals(owner.Name, _options.PodName, StringComparison.Ordinal))
        {
            return new Decision(DecisionKind.Local, owner, hash, hasKey, Hop: hop, SenderGeneration: senderGeneration);
        }

        return Peer(state, owner, key, hasKey, hash, hop, senderGeneration);
    }

    private Decision Peer(MapView state, ShardMember owner, ReadOnlySpan<char> key, bool hasKey, ulong hash, int hop, long senderGeneration)
    {
        if (hop >= MaxHops)
        {
            Log.LoopPrevented(_logger, owner.Name, hop, senderGeneration, state.Map.Generation);
            return Error(StatusCodes.Status503ServiceUnavailable, SidecarMetricNames.OutcomeLoopPrevented,
                $"the shard maps disagree: after {hop} hops this pod's map (generation {state.Map.Generation}) names {owner.Name} as owner; not forwarding again",
                _retryAfter, owner);
        }

        var nextHop = hop + 1;
        return new Decision(DecisionKind.Peer, owner, hash, hasKey, Hop: hop, SenderGeneration: senderGeneration)
        {
            NextHopText = nextHop == 1 ? "1" : "2",
            KeyHeader = hasKey ? KeyHeader.Encode(key) : null,
            Proof = _proof.Create(key, state.Map.Generation, nextHop),
        };
    }

    /// <summary>
    /// Why the request asks for a tunnel the sidecar does not open, or null. A plain CONNECT names an authority to tunnel
    /// to: the sidecar is its pod's reverse proxy, not a forward proxy, so it neither opens one nor passes the request to an
    /// app that might. Of the extended CONNECTs only websocket (RFC 8441) is forwarded.
    /// </summary>
    private static string? RefusedTunnel(HttpContext context) => Http2WebSocket.Of(context) is { } connect
        ? Http2WebSocket.IsWebSocket(connect) ? null : $"HTTP/2 extended CONNECT for protocol '{connect.Protocol}' is not forwarded; only websocket (RFC 8441) is"
        : HttpMethods.IsConnect(context.Request.Method)
            ? "CONNECT is not forwarded: the sidecar opens no tunnels (WebSockets over HTTP/2 extended CONNECT, RFC 8441, are)"
            : null;

    private static Decision Error(int status, string outcome, string message, string? retryAfter = null, ShardMember? owner = null) =>
        new(DecisionKind.Error, owner) { Status = status, Outcome = outcome, Message = message, RetryAfter = retryAfter };

    private async Task WriteErrorAsync(HttpContext context, int status, string outcome, string message, string? retryAfter, string owner)
    {
        _metrics.Request(outcome);
        if (status >= 500)
        {
            Log.Unavailable(_logger, status, outcome, message);
        }
        else
        {
            Log.BadRequest(_logger, status, outcome, message);
        }

        var response = context.Response;
        response.StatusCode = status;
        response.Headers[HeaderRules.Owner] = owner;
        if (retryAfter is not null)
        {
            response.Headers.RetryAfter = retryAfter;
        }

        if (IsGrpc(context.Request))
        {
            // A gRPC client reads a status, not an HTTP error page: a non-200 answer reaches it as "bad gRPC response" with
            // the reason lost (and a 400 as INTERNAL). Trailers-only (one HEADERS frame), as the drain's answer before headers.
            response.StatusCode = StatusCodes.Status200OK;
            response.ContentType = GrpcProtocol.ContentType;
            response.Headers[GrpcProtocol.StatusHeader] = GrpcStatusOf(status);
            response.Headers[GrpcProtocol.MessageHeader] = GrpcProtocol.EncodeMessage(message);
            return;
        }

        response.ContentType = "text/plain; charset=utf-8";
        await response.WriteAsync(string.Concat(message, "\n"), context.RequestAborted).ConfigureAwait(false);
    }

    private static bool IsGrpc(HttpRequest request) => GrpcProtocol.IsGrpc(request.ContentType);

    /// <summary>The gRPC status for the sidecar's own HTTP answer (gRPC's HTTP mapping, made precise where the sidecar knows why).</summary>
    private static string GrpcStatusOf(int status) => status switch
    {
        StatusCodes.Status400BadRequest => "3", // INVALID_ARGUMENT: no key, a bad key or body
        StatusCodes.Status403Forbidden => "7", // PERMISSION_DENIED: a forward whose proof failed
        StatusCodes.Status413PayloadTooLarge => "8", // RESOURCE_EXHAUSTED
        StatusCodes.Status501NotImplemented => "12", // UNIMPLEMENTED
        StatusCodes.Status504GatewayTimeout => "4", // DEADLINE_EXCEEDED
        _ => "14", // UNAVAILABLE: 502, 503 (no map, owner down, circuit open, loop prevented); clients may retry
    };

    private enum DecisionKind
    {
        Local,
        Peer,
        NeedsBody,
        Error,
    }

    private readonly record struct Decision(
        DecisionKind Kind, ShardMember? Owner = null, ulong Hash = 0, bool HasKey = false, int Hop = 0, long SenderGeneration = -1)
    {
        public string? NextHopText { get; init; }

        public string? KeyHeader { get; init; }

        public string? Proof { get; init; }

        public int Status { get; init; }

        public string? Outcome { get; init; }

        public string? Message { get; init; }

        public string? RetryAfter { get; init; }
    }

    /// <summary>What the router derives once per map: the compiled key rules, the generation text, peer addresses.</summary>
    private static partial class Log
    {
        [LoggerMessage(EventId = 500, EventName = "ProofRejected", Level = LogLevel.Warning,
            Message = "Rejected a forwarded request from {Remote}: {Reason}")]
        public static partial void ProofRejected(ILogger logger, string remote, string reason);

        [LoggerMessage(EventId = 501, EventName = "LoopPrevented", Level = LogLevel.Warning,
            Message = "Not forwarding to {Owner} again: the request already took {Hop} hops (sender generation {SenderGeneration}, ours {Generation})")]
        public static partial void LoopPrevented(ILogger logger, string owner, int hop, long senderGeneration, long generation);

        [LoggerMessage(EventId = 502, EventName = "Unavailable", Level = LogLevel.Information, Message = "Answered {Status} ({Outcome}): {Reason}")]
        public static partial void Unavailable(ILogger logger, int status, string outcome, string reason);

        [LoggerMessage(EventId = 504, EventName = "SkewWait", Level = LogLevel.Debug,
            Message = "A forwarded request carried generation {SenderGeneration}, ours was {Generation}; waited, now {Current} (caught up: {CaughtUp})")]
        public static partial void SkewWait(ILogger logger, long senderGeneration, long generation, long current, bool caughtUp);

        [LoggerMessage(EventId = 503, EventName = "BadRequest", Level = LogLevel.Debug, Message = "Answered {Status} ({Outcome}): {Reason}")]
        public static partial void BadRequest(ILogger logger, int status, string outcome, string reason);
    }
}

using System.Buffers;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Sharding.Keys;
using Sharding.Mapping;
using Sharding.Metrics;

namespace Sharding.Client;

/// <summary>
/// Sends each request straight to the sidecar of the pod that owns its shard key: the key is found with the same
/// <see cref="ShardKeyExtractor"/> rules the sidecar runs, the owner comes from the shard map that <see cref="ShardRouter"/>
/// follows, and the request URI's authority is rewritten to the owner's address.
/// </summary>
/// <remarks>
/// <list type="number">
/// <item>Read the routing snapshot once. No map yet, or an empty one → send the request unchanged (the URI is the Service
///   address; any sidecar routes it).</item>
/// <item>Run the header, path, query and cookie rules over the request (<see cref="HttpRequestMessageShardKeyRequest"/>).</item>
/// <item>Only a JSON body rule left and the request has a body → read at most the policy's <c>maxBodyBytes</c>, stopping as soon
///   as the field is decided; the bytes read are not lost: a seekable body is rewound, any other is replaced by a content that
///   replays them before the rest.</item>
/// <item>Key found → owner = map.OwnerOf(key); rewrite scheme://owner-address/path?query. By default the <c>Host</c> header keeps
///   the original authority (<see cref="ShardRoutingOptions.PreserveHostHeader"/>). No key → the policy's fixed member if it
///   names one, else the Service address (the sidecar answers 400 naming the rules, or applies its fallback).</item>
/// </list>
/// Requests sent to the owner reach its sidecar, which serves them locally because its map agrees; a sidecar whose map
/// disagrees (a generation in flight) forwards once, so a request is never lost to skew.
/// Log event ids 1010–1019.
/// </remarks>
public sealed partial class ShardRoutingHandler : DelegatingHandler
{
    private readonly ShardRouter _router;
    private readonly ILogger _logger;
    private readonly bool _preserveHost;
    private readonly bool _readBodyKeys;

    /// <summary>Creates the handler; set <see cref="DelegatingHandler.InnerHandler"/> unless <c>IHttpClientFactory</c> does.</summary>
    /// <param name="router">The router of the sharded service the requests go to.</param>
    /// <param name="logger">Logs; none by default.</param>
    public ShardRoutingHandler(ShardRouter router, ILogger<ShardRoutingHandler>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(router);
        _router = router;
        _logger = logger ?? (ILogger)NullLogger.Instance;
        _preserveHost = router.Options.PreserveHostHeader;
        _readBodyKeys = router.Options.ReadBodyKeys;
    }

    /// <summary>Creates the handler over an inner handler.</summary>
    /// <param name="router">The router of the sharded service the requests go to.</param>
    /// <param name="innerHandler">The handler that sends (e.g. a <see cref="SocketsHttpHandler"/>).</param>
    /// <param name="logger">Logs; none by default.</param>
    public ShardRoutingHandler(ShardRouter router, HttpMessageHandler innerHandler, ILogger<ShardRoutingHandler>? logger = null)
        : this(router, logger)
    {
        InnerHandler = innerHandler;
    }

    /// <summary>The router this handler routes with.</summary>
    public IShardRouter Router => _router;

    /// <inheritdoc />
    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var bodyKey = Restore(request);

        // 1. One snapshot for the whole request.
        var snapshot = _router.Snapshot;
        if (snapshot is null)
        {
            return ViaService(request, ClientMetricNames.ReasonNoMap, cancellationToken);
        }

        if (snapshot.Map.IsEmpty)
        {
            return ViaService(request, ClientMetricNames.ReasonEmptyMap, cancellationToken);
        }

        if (request.RequestUri is not { IsAbsoluteUri: true })
        {
            return ViaService(request, ClientMetricNames.ReasonNoKey, cancellationToken);
        }

        // 2. Rules over the request line and headers (a body key found by an earlier send of this request stands).
        var decision = Checked(Decide(request, snapshot, bodyKey, out var owner), snapshot, owner);
        return decision switch
        {
            Decision.Owner => Direct(request, owner!, bodyKey, cancellationToken),
            Decision.NeedsBody => SendWithBodyKeyAsync(request, snapshot, cancellationToken),
            Decision.BadKey => ViaService(request, ClientMetricNames.ReasonBadKey, cancellationToken),
            Decision.BadAddress => ViaService(request, ClientMetricNames.ReasonBadAddress, cancellationToken),
            _ => ViaService(request, ClientMetricNames.ReasonNoKey, cancellationToken),
        };
    }

    /// <summary>An owner whose address is not <c>host:port</c> is not sent to: the Service address's sidecar says what is wrong.</summary>
    private static Decision Checked(Decision decision, RoutingSnapshot snapshot, ShardMember? owner) =>
        decision == Decision.Owner && !snapshot.CanRoute(owner!) ? Decision.BadAddress : decision;

    /// <inheritdoc />
    protected override HttpResponseMessage Send(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var bodyKey = Restore(request);
        var snapshot = _router.Snapshot;
        if (snapshot is null || snapshot.Map.IsEmpty || request.RequestUri is not { IsAbsoluteUri: true })
        {
            _router.Metrics.ViaService(_router.Service, snapshot is null ? ClientMetricNames.ReasonNoMap
                : snapshot.Map.IsEmpty ? ClientMetricNames.ReasonEmptyMap : ClientMetricNames.ReasonNoKey);
            return base.Send(request, cancellationToken);
        }

        var decision = Checked(Decide(request, snapshot, bodyKey, out var owner), snapshot, owner);
        if (decision == Decision.Owner)
        {
            Rewrite(request, owner!, bodyKey);
            _router.Metrics.Direct(_router.Service);
            return base.Send(request, cancellationToken);
        }

        // The synchronous path does not read bodies: the sidecar behind the Service address does.
        _router.Metrics.ViaService(_router.Service, decision switch
        {
            Decision.BadKey => ClientMetricNames.ReasonBadKey,
            Decision.BadAddress => ClientMetricNames.ReasonBadAddress,
            _ => ClientMetricNames.ReasonNoKey,
        });
        return base.Send(request, cancellationToken);
    }

    /// <summary>
    /// A request this handler already sent once (a retry handler outside it sends the same message again) starts over from the
    /// URI the caller gave, the Service address, not from the previous owner; returns the body key that send found, if any.
    /// </summary>
    private static string? Restore(HttpRequestMessage request)
    {
        if (request.RequestUri is RoutedUri routed)
        {
            request.RequestUri = routed.Original;
            return routed.BodyKey;
        }

        return null;
    }

    private Decision Decide(HttpRequestMessage request, RoutingSnapshot snapshot, string? bodyKey, out ShardMember? owner)
    {
        owner = null;
        Span<char> key = stackalloc char[ShardKeyExtractor.MaxKeyLength];
        var adapter = new HttpRequestMessageShardKeyRequest(request);
        var status = snapshot.Extractor.TryExtract(ref adapter, key, out var length);
        switch (status)
        {
            case ShardKeyStatus.Found:
                owner = snapshot.Map.OwnerOf(key[..length]);
                return owner is null ? Decision.NoKey : Decision.Owner;
            // As the sidecar: only a JSON body (or one of no stated type) is read; a gRPC body (whose streaming call ends only
            // when the caller ends it), a multipart, form or binary one is not: no key.
            case ShardKeyStatus.NeedsBody when bodyKey is not null:
                // The body was read to its key by an earlier send; it may not be readable again (a seekable one sits at its end).
                owner = snapshot.Map.OwnerOf(bodyKey.AsSpan());
                return owner is null ? Decision.NoKey : Decision.Owner;
            case ShardKeyStatus.NeedsBody when _readBodyKeys && HasBody(request.Content) && ReadsBody(request.Content!):
                return Decision.NeedsBody;
            case ShardKeyStatus.TooLong:
                return Decision.BadKey;
            default:
                return NoKey(snapshot.Map, out owner);
        }
    }

    /// <summary>The policy's no-key fallback: a fixed member is routed to directly; anything else is the sidecar's call.</summary>
    private static Decision NoKey(ShardMap map, out ShardMember? owner)
    {
        owner = null;
        var policy = map.KeyPolicy;
        if (policy.NoKey == NoKeyAction.FixedMember && policy.FallbackMember is { } name && map.FindMember(name) is { } member)
        {
            owner = member;
            return Decision.Owner;
        }

        return Decision.NoKey;
    }

    /// <summary>Mirrors the sidecar's test: a body with a positive or unknown length may hold the key.</summary>
    private static bool HasBody(HttpContent? content) => content is not null && (content.Headers.ContentLength is not long length || length > 0);

    /// <summary>Mirrors the sidecar's test (<see cref="ShardKeyExtractor.ReadsBodyOf"/>): JSON, or no content type.</summary>
    private static bool ReadsBody(HttpContent content) =>
        !content.Headers.NonValidated.TryGetValues("Content-Type", out var values)
        || ShardKeyExtractor.ReadsBodyOf(values.ToString());

    private Task<HttpResponseMessage> Direct(HttpRequestMessage request, ShardMember owner, string? bodyKey, CancellationToken cancellationToken)
    {
        Rewrite(request, owner, bodyKey);
        _router.Metrics.Direct(_router.Service);
        return base.SendAsync(request, cancellationToken);
    }

    private Task<HttpResponseMessage> ViaService(HttpRequestMessage request, string reason, CancellationToken cancellationToken)
    {
        _router.Metrics.ViaService(_router.Service, reason);
        Log.ViaService(_logger, _router.Service, reason);
        return base.SendAsync(request, cancellationToken);
    }

    private void Rewrite(HttpRequestMessage request, ShardMember owner, string? bodyKey)
    {
        var original = request.RequestUri!;
        if (_preserveHost && request.Headers.Host is null)
        {
            // Host (HTTP/2 :authority) stays the Service's: what the app sees does not depend on the route, and TLS checks
            // the certificate against the Service name (SocketsHttpHandler takes SNI from an explicit Host header).
            request.Headers.Host = original.Authority;
        }

        // Path and query exactly as escaped on the wire; the fragment is never sent. The URI remembers the original for a resend.
        request.RequestUri = new RoutedUri(string.Concat(original.Scheme, Uri.SchemeDelimiter, owner.Address, original.PathAndQuery), original, bodyKey);
    }

    private async Task<HttpResponseMessage> SendWithBodyKeyAsync(HttpRequestMessage request, RoutingSnapshot snapshot, CancellationToken cancellationToken)
    {
        // 3. A JSON body rule: read at most maxBodyBytes, keep the bytes for the send.
        var (decision, owner, key) = await DecideFromBodyAsync(request, snapshot, cancellationToken).ConfigureAwait(false);
        return Checked(decision, snapshot, owner) switch
        {
            Decision.Owner => await Direct(request, owner!, key, cancellationToken).ConfigureAwait(false),
            Decision.BadKey => await ViaService(request, ClientMetricNames.ReasonBadKey, cancellationToken).ConfigureAwait(false),
            Decision.TooLarge => await ViaService(request, ClientMetricNames.ReasonBodyTooLarge, cancellationToken).ConfigureAwait(false),
            Decision.BadAddress => await ViaService(request, ClientMetricNames.ReasonBadAddress, cancellationToken).ConfigureAwait(false),
            _ => await ViaService(request, ClientMetricNames.ReasonNoKey, cancellationToken).ConfigureAwait(false),
        };
    }

    private static async ValueTask<(Decision Decision, ShardMember? Owner, string? Key)> DecideFromBodyAsync(
        HttpRequestMessage request, RoutingSnapshot snapshot, CancellationToken cancellationToken)
    {
        var content = request.Content!;
        var limit = snapshot.Map.KeyPolicy.MaxBodyBytes;
        if (content is not (StreamContent or ByteArrayContent or ReadOnlyMemoryContent))
        {
            // Contents that serialize themselves (JsonContent, multipart…) are buffered by HttpContent, bounded by the limit, and
            // sent from that buffer afterwards.
            try
            {
                await content.LoadIntoBufferAsync(limit, cancellationToken).ConfigureAwait(false);
            }
            catch (HttpRequestException)
            {
                return (Decision.TooLarge, null, null);
            }
        }

        var stream = await content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        var start = stream.CanSeek ? stream.Position : 0;
        var declared = content.Headers.ContentLength;
        var buffer = ArrayPool<byte>.Shared.Rent(declared is long known && known < limit ? (int)Math.Max(known, 1) : Math.Min(limit, 16 * 1024));
        var keyChars = ArrayPool<char>.Shared.Rent(ShardKeyExtractor.MaxKeyLength);
        var filled = 0;
        var complete = false;
        try
        {
            var status = ShardKeyStatus.NeedsMoreBody;
            var keyLength = 0;

            // Bounded: each turn adds at least one byte up to the limit, or the body ends.
            while (filled < limit)
            {
                if (filled == buffer.Length)
                {
                    var larger = ArrayPool<byte>.Shared.Rent(Math.Min(limit, buffer.Length * 2));
                    buffer.AsSpan(0, filled).CopyTo(larger);
                    ArrayPool<byte>.Shared.Return(buffer);
                    buffer = larger;
                }

                var read = await stream.ReadAsync(buffer.AsMemory(filled, Math.Min(buffer.Length, limit) - filled), cancellationToken).ConfigureAwait(false);
                if (read == 0)
                {
                    complete = true;
                    break;
                }

                filled += read;
                status = snapshot.Extractor.TryExtractFromBody(buffer.AsSpan(0, filled), isFinalBlock: false, keyChars, out keyLength, out _);
                if (status != ShardKeyStatus.NeedsMoreBody)
                {
                    break;
                }
            }

            if (complete && status == ShardKeyStatus.NeedsMoreBody)
            {
                status = snapshot.Extractor.TryExtractFromBody(buffer.AsSpan(0, filled), isFinalBlock: true, keyChars, out keyLength, out _);
            }

            // Give the bytes back to the send.
            if (stream.CanSeek)
            {
                stream.Position = start;
            }
            else
            {
                request.Content = new ReplayContent(buffer.AsSpan(0, filled).ToArray(), complete ? null : stream, content);
            }

            switch (status)
            {
                case ShardKeyStatus.Found:
                    var owner = snapshot.Map.OwnerOf(keyChars.AsSpan(0, keyLength));
                    return owner is null ? (Decision.NoKey, null, null) : (Decision.Owner, owner, new string(keyChars, 0, keyLength));
                case ShardKeyStatus.NeedsMoreBody:
                    return (Decision.TooLarge, null, null);
                case ShardKeyStatus.TooLong or ShardKeyStatus.MalformedBody:
                    return (Decision.BadKey, null, null);
                default:
                    var decision = NoKey(snapshot.Map, out var fallback);
                    return (decision, fallback, null);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
            ArrayPool<char>.Shared.Return(keyChars);
        }
    }

    /// <summary>The owner's URI of a rewritten request, remembering the caller's URI (and a body key) for a resend.</summary>
    private sealed class RoutedUri(string uri, Uri original, string? bodyKey) : Uri(uri)
    {
        public Uri Original { get; } = original;

        public string? BodyKey { get; } = bodyKey;
    }

    private enum Decision
    {
        NoKey,
        Owner,
        NeedsBody,
        BadKey,
        TooLarge,
        BadAddress,
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 1010, EventName = "ViaService", Level = LogLevel.Debug, Message = "Request for service {Service} sent to the Service address ({Reason})")]
        public static partial void ViaService(ILogger logger, string service, string reason);
    }
}

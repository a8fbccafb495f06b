using Sharding.Mapping;

namespace Sharding.Sidecar.Routing;

/// <summary>How a request was routed.</summary>
internal enum RouteKind
{
    /// <summary>Served by this pod's app.</summary>
    Local,

    /// <summary>Forwarded to the owner's sidecar.</summary>
    Peer,
}

/// <summary>
/// The routing decision of one request, set as a feature on its <c>HttpContext</c> (<c>Features.Get&lt;ShardRequestContext&gt;()</c>):
/// the seam for tracking long-lived streams, draining and skew handling (issue 6).
/// </summary>
internal sealed class ShardRequestContext
{
    /// <summary>xxHash64 of the key's UTF-8 bytes (0 when the request had no key).</summary>
    public ulong KeyHash { get; init; }

    /// <summary>Whether a key was found (else a no-key fallback routed it).</summary>
    public bool HasKey { get; init; }

    /// <summary>The key text, when it was materialized (forwards to a peer); null otherwise.</summary>
    public string? Key { get; init; }

    /// <summary>The owner the request went to.</summary>
    public required ShardMember Owner { get; init; }

    /// <summary>The map the decision was made on.</summary>
    public required ShardMap Map { get; init; }

    /// <summary>Local or peer.</summary>
    public RouteKind Kind { get; init; }

    /// <summary>Sidecar-to-sidecar hops so far (0 when it came from outside).</summary>
    public int Hop { get; init; }

    /// <summary>The sender's generation on a forwarded request (-1 from outside).</summary>
    public long SenderGeneration { get; init; } = -1;

    /// <summary>The client connection's id (Kestrel's).</summary>
    public required string ConnectionId { get; init; }

    /// <summary>The client's protocol, e.g. <c>HTTP/2</c>.</summary>
    public required string Protocol { get; init; }
}

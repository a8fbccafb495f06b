using Sharding.Mapping;
using Sharding.Sidecar.Draining;

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
/// <remarks>The fields below the properties are the stream registry's (Draining/StreamRegistry), not part of the decision.</remarks>
internal sealed class ShardRequestContext
{
    // Tracking state: 0 in flight, 1 tracked as a long-lived stream, 2 ended (see StreamRegistry).
    internal int TrackingState;
    internal int Bucket = -1;
    internal int Slot = -1;
    internal long StartTimestamp;
    internal StreamKind StreamKind;
    internal HttpContext? Http;

    // Set by the HTTP/1.1 fast path (which has no HttpContext) once the response head went out.
    internal volatile bool ResponseStarted;
    internal ConnectionState? ConnectionState;
    internal DrainOrder? Drain;
    internal DrainBatch? Batch;

    // The forwarder's cancellation for this request, guarded by lock (this); ending a drained stream cancels it.
    private CancellationTokenSource? _cancel;
    private bool _endRequested;

    /// <summary>Whether the registry asked the forwarder to end this stream (the drain order says why).</summary>
    internal bool EndRequested => Volatile.Read(ref _endRequested);

    /// <summary>The forwarder attaches the source that cancels its copies; true when an end was already requested.</summary>
    internal void AttachCancellation(CancellationTokenSource? source)
    {
        bool cancelNow;
        lock (this)
        {
            _cancel = source;
            cancelNow = _endRequested && source is not null;
        }

        if (cancelNow)
        {
            source!.Cancel();
        }
    }

    /// <summary>Asks the forwarder to end the stream now (after the drain's grace).</summary>
    internal void RequestEnd()
    {
        CancellationTokenSource? cancel;
        lock (this)
        {
            _endRequested = true;
            cancel = _cancel;
        }

        try
        {
            cancel?.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // The forward finished in the meantime.
        }
    }

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

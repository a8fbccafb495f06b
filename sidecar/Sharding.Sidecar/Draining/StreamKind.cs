using Sharding.Metrics;

namespace Sharding.Sidecar.Draining;

/// <summary>What kind of long-lived stream a request is; decides how a drain ends it.</summary>
internal enum StreamKind
{
    /// <summary>Not known (yet): an ordinary request.</summary>
    None = 0,

    /// <summary>gRPC (content type <c>application/grpc</c>): ended with trailers <c>grpc-status: 14</c>.</summary>
    Grpc,

    /// <summary>Server-sent events: ended by ending the response.</summary>
    Sse,

    /// <summary>A WebSocket: ended with a close frame 1012 (service restart).</summary>
    WebSocket,

    /// <summary>No response headers after the stream threshold: answered 503 with <c>Retry-After: 0</c>.</summary>
    LongPoll,

    /// <summary>Any other response still streaming after the threshold: ended (HTTP/1.1 with <c>Connection: close</c>).</summary>
    Http,
}

/// <summary>Why the sidecar ends a stream.</summary>
internal enum DrainReason
{
    /// <summary>Its key has another owner now.</summary>
    Moved,

    /// <summary>The sidecar is stopping.</summary>
    Shutdown,

    /// <summary>Its client connection reached <c>MaxConnectionAge</c>.</summary>
    MaxAge,
}

internal static class StreamKindNames
{
    public static string ToTag(this StreamKind kind) => kind switch
    {
        StreamKind.Grpc => SidecarMetricNames.ProtocolGrpc,
        StreamKind.Sse => SidecarMetricNames.ProtocolSse,
        StreamKind.WebSocket => SidecarMetricNames.ProtocolWebSocket,
        StreamKind.LongPoll => SidecarMetricNames.ProtocolLongPoll,
        _ => SidecarMetricNames.ProtocolHttp,
    };

    public static string ToTag(this DrainReason reason) => reason switch
    {
        DrainReason.Moved => SidecarMetricNames.ReasonMoved,
        DrainReason.Shutdown => SidecarMetricNames.ReasonShutdown,
        _ => SidecarMetricNames.ReasonMaxAge,
    };
}

/// <summary>Why and where to a tracked stream is being drained.</summary>
/// <param name="Reason">Moved, shutdown or max age.</param>
/// <param name="Generation">The generation that moved the key (the current one for the other reasons).</param>
/// <param name="NewOwner">The key's owner now (null when it did not move).</param>
internal sealed record DrainOrder(DrainReason Reason, long Generation, string? NewOwner)
{
    /// <summary>What the client is told (gRPC message, WebSocket close reason, 503 body).</summary>
    public string Message => Reason switch
    {
        DrainReason.Moved => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"shard moved to {NewOwner} at generation {Generation}"),
        DrainReason.Shutdown => "the sidecar is shutting down; reconnect",
        _ => "the connection reached its maximum age; reconnect",
    };
}

/// <summary>The streams one drain ends together; measures the time from its start (the new generation) to the last one closed.</summary>
internal sealed class DrainBatch(long startTimestamp)
{
    private int _open;

    public long StartTimestamp { get; } = startTimestamp;

    public List<Routing.ShardRequestContext> Streams { get; } = [];

    public void Add(Routing.ShardRequestContext stream)
    {
        Streams.Add(stream);
        Interlocked.Increment(ref _open);
    }

    /// <summary>One stream closed (or no longer needs draining); true when it was the last.</summary>
    public bool Closed() => Interlocked.Decrement(ref _open) == 0;
}

/// <summary>Per client connection (set by a connection middleware on the data port): its lifetime feature, age and GOAWAY state.</summary>
internal sealed class ConnectionState(Microsoft.AspNetCore.Connections.Features.IConnectionLifetimeNotificationFeature? lifetime, long startTimestamp)
{
    private int _closeRequested;

    public Microsoft.AspNetCore.Connections.Features.IConnectionLifetimeNotificationFeature? Lifetime { get; } = lifetime;

    public long StartTimestamp { get; } = startTimestamp;

    /// <summary>The client's address as text for <c>x-forwarded-for</c>, formatted once per connection (see HttpForwarder).</summary>
    public string? RemoteAddressText { get; set; }

    /// <summary>Set when the connection reached its max age (its streams are drained with reason max_age).</summary>
    public bool MaxAgeReached { get; set; }

    /// <summary>Requests a graceful close (HTTP/2 GOAWAY; HTTP/1.1 close after the response) once; true the first time.</summary>
    public bool RequestClose()
    {
        if (Interlocked.Exchange(ref _closeRequested, 1) != 0)
        {
            return false;
        }

        Lifetime?.RequestClose();
        return true;
    }
}

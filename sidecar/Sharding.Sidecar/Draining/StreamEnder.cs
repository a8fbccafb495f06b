using Sharding.Protocol;
using Sharding.Sidecar.Forwarding;
using Sharding.Sidecar.Routing;

namespace Sharding.Sidecar.Draining;

/// <summary>Ends a drained stream the way its protocol understands (called by the forwarder on the request's own flow).</summary>
internal static class StreamEnder
{
    /// <summary>WebSocket close code 1012: service restart (the client should reconnect).</summary>
    public const ushort WebSocketServiceRestart = 1012;

    /// <summary>gRPC UNAVAILABLE: clients retry it.</summary>
    public const string GrpcUnavailable = "14";

    /// <summary>Whether a cancelled forward was ended by a drain (not by the client).</summary>
    public static bool IsDrained(HttpContext context, ShardRequestContext? stream) =>
        stream is not null && stream.EndRequested && stream.Drain is not null && !context.RequestAborted.IsCancellationRequested;

    /// <summary>The upstream had not answered yet (a long poll, a gRPC call before its headers).</summary>
    public static async ValueTask EndBeforeResponseAsync(HttpContext context, ShardRequestContext stream)
    {
        var order = stream.Drain!;
        var response = context.Response;
        if (response.HasStarted)
        {
            return;
        }

        if (stream.StreamKind == StreamKind.Grpc)
        {
            // Trailers-only: one HEADERS frame with the status.
            response.StatusCode = StatusCodes.Status200OK;
            response.ContentType = GrpcProtocol.ContentType;
            response.Headers["grpc-status"] = GrpcUnavailable;
            response.Headers["grpc-message"] = order.Message;
            return;
        }

        response.StatusCode = StatusCodes.Status503ServiceUnavailable;
        response.Headers.RetryAfter = "0";
        if (order.NewOwner is not null)
        {
            response.Headers[HeaderRules.Owner] = order.NewOwner;
        }

        if (!HttpProtocol.IsHttp2(context.Request.Protocol) && !HttpProtocol.IsHttp3(context.Request.Protocol))
        {
            response.Headers.Connection = "close";
        }

        response.ContentType = "text/plain; charset=utf-8";
        await response.WriteAsync(string.Concat(order.Message, "\n"), context.RequestAborted).ConfigureAwait(false);
    }

    /// <summary>The response is streaming: end it at a frame boundary (gRPC gets its status in trailers).</summary>
    /// <returns>False when it cannot end cleanly (mid-frame, fixed length): the caller resets the stream instead.</returns>
    public static bool EndStartedResponse(HttpContext context, ShardRequestContext stream, bool atBoundary, bool fixedLength)
    {
        if (!atBoundary || fixedLength)
        {
            return false;
        }

        if (stream.StreamKind == StreamKind.Grpc)
        {
            if (!context.Response.SupportsTrailers())
            {
                return false;
            }

            context.Response.AppendTrailer("grpc-status", GrpcUnavailable);
            context.Response.AppendTrailer("grpc-message", stream.Drain!.Message);
        }

        // SSE, long polls, other streams: the response just ends (HTTP/1.1: the connection closes after it, as
        // RequestClose asked when the drain started).
        return true;
    }

    /// <summary>A WebSocket: tell the client with a close frame 1012, unless the app's own close already went through.</summary>
    public static async ValueTask CloseWebSocketAsync(Stream client, ShardRequestContext stream, bool sawClose, CancellationToken cancellationToken)
    {
        if (sawClose)
        {
            return;
        }

        var frame = FramedCopier.CloseFrame(WebSocketServiceRestart, stream.Drain!.Message);
        await client.WriteAsync(frame, cancellationToken).ConfigureAwait(false);
        await client.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>What a response's media type says about the stream.</summary>
    public static StreamKind KindOfResponse(string? mediaType)
    {
        if (mediaType is null)
        {
            return StreamKind.None;
        }

        if (mediaType.Equals("text/event-stream", StringComparison.OrdinalIgnoreCase))
        {
            return StreamKind.Sse;
        }

        return GrpcProtocol.IsGrpc(mediaType) ? StreamKind.Grpc : StreamKind.None;
    }
}

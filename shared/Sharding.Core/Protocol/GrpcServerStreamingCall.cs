using System.Net;
using System.Net.Http.Headers;
using Google.Protobuf;

namespace Sharding.Protocol;

/// <summary>
/// A gRPC server-streaming call over <see cref="HttpClient"/>/<see cref="HttpMessageInvoker"/> HTTP/2 (h2c with prior knowledge for
/// <c>http://</c> URLs): sends one request message, then yields response messages until the trailers, whose <c>grpc-status</c> is checked.
/// </summary>
/// <remarks>
/// Dispose the call to cancel it: disposing the response makes <see cref="SocketsHttpHandler"/> send RST_STREAM (CANCEL), which the
/// server sees as an aborted request. Usage:
/// <code>
/// await using var call = await GrpcClient.StartServerStreamingAsync(invoker, baseUri, GrpcProtocol.WatchPath,
///     request, ShardMapUpdate.Parser, deadline: null, GrpcProtocol.DefaultMaxMessageBytes, ct);
/// while (await call.ReadAsync(ct) is { } update) { ... }   // throws GrpcCallException on a non-OK status
/// </code>
/// </remarks>
/// <typeparam name="TResponse">The response message type.</typeparam>
public sealed class GrpcServerStreamingCall<TResponse> : IAsyncDisposable, IDisposable
    where TResponse : class, IMessage<TResponse>
{
    private readonly HttpResponseMessage _response;
    private readonly GrpcFrameReader _reader;
    private readonly MessageParser<TResponse> _parser;
    private bool _completed;

    internal GrpcServerStreamingCall(HttpResponseMessage response, Stream body, MessageParser<TResponse> parser, int maxMessageBytes)
    {
        _response = response;
        _parser = parser;
        _reader = new GrpcFrameReader(body, maxMessageBytes);
    }

    /// <summary>Response bytes read so far (prefixes included).</summary>
    public long BytesRead => _reader.BytesRead;

    /// <summary>The response headers.</summary>
    public HttpResponseHeaders ResponseHeaders => _response.Headers;

    /// <summary>Reads the next message; null when the server ended the call with status OK.</summary>
    /// <param name="cancellationToken">Cancels the read (the caller should then dispose the call).</param>
    /// <returns>The message, or null at a successful end.</returns>
    /// <exception cref="GrpcCallException">The call ended with a non-OK status, a frame was bad, or the trailers were missing.</exception>
    public async ValueTask<TResponse?> ReadAsync(CancellationToken cancellationToken)
    {
        if (_completed)
        {
            return null;
        }

        var bytes = await _reader.ReadMessageAsync(cancellationToken).ConfigureAwait(false);
        if (bytes is not null)
        {
            try
            {
                return _parser.ParseFrom(bytes);
            }
            catch (InvalidProtocolBufferException ex)
            {
                throw new GrpcCallException(GrpcStatusCode.Internal, "a response message could not be parsed: " + ex.Message, ex);
            }
        }

        _completed = true;
        var trailers = _response.TrailingHeaders;
        if (!trailers.TryGetValues(GrpcProtocol.StatusHeader, out var values))
        {
            throw new GrpcCallException(GrpcStatusCode.Unavailable, "the stream ended without grpc-status trailers (connection lost?)");
        }

        ThrowIfNotOk(values.FirstOrDefault(), HeaderValue(trailers, GrpcProtocol.MessageHeader), orEnded: false);
        return null;
    }

    /// <inheritdoc />
    public void Dispose() => _response.Dispose();

    /// <inheritdoc />
    public ValueTask DisposeAsync()
    {
        _response.Dispose();
        return ValueTask.CompletedTask;
    }

    internal static void ThrowIfNotOk(string? statusText, string? messageText, bool orEnded)
    {
        if (!GrpcProtocol.TryParseStatus(statusText, out var status) || status != GrpcStatusCode.OK)
        {
            throw new GrpcCallException(status, GrpcProtocol.DecodeMessage(messageText));
        }

        if (orEnded)
        {
            throw new GrpcCallException(GrpcStatusCode.Internal, "the server ended the call before sending any message");
        }
    }

    internal static string? HeaderValue(HttpHeaders headers, string name) =>
        headers.TryGetValues(name, out var values) ? values.FirstOrDefault() : null;

    // grpc/doc/http-grpc-status-mapping.md
    internal static GrpcStatusCode MapHttpStatus(HttpStatusCode status) => status switch
    {
        HttpStatusCode.BadRequest => GrpcStatusCode.Internal,
        HttpStatusCode.Unauthorized => GrpcStatusCode.Unauthenticated,
        HttpStatusCode.Forbidden => GrpcStatusCode.PermissionDenied,
        HttpStatusCode.NotFound => GrpcStatusCode.Unimplemented,
        HttpStatusCode.TooManyRequests or HttpStatusCode.BadGateway or HttpStatusCode.ServiceUnavailable or HttpStatusCode.GatewayTimeout => GrpcStatusCode.Unavailable,
        _ => GrpcStatusCode.Unknown,
    };
}

/// <summary>Starts gRPC calls over <see cref="HttpMessageInvoker"/> HTTP/2; see <see cref="GrpcServerStreamingCall{TResponse}"/>.</summary>
public static class GrpcClient
{
    /// <summary>Starts the call and waits for the response headers.</summary>
    /// <typeparam name="TResponse">The response message type.</typeparam>
    /// <param name="invoker">An <see cref="HttpClient"/> or invoker over a <see cref="SocketsHttpHandler"/>.</param>
    /// <param name="baseAddress">The server, e.g. <c>http://127.0.0.1:15001</c>.</param>
    /// <param name="path">The method path, e.g. <see cref="GrpcProtocol.WatchPath"/>.</param>
    /// <param name="request">The request message.</param>
    /// <param name="parser">The response parser.</param>
    /// <param name="deadline">Sent as <c>grpc-timeout</c> when set (the server ends the call with DEADLINE_EXCEEDED).</param>
    /// <param name="maxMessageBytes">The largest response message accepted (RESOURCE_EXHAUSTED above it).</param>
    /// <param name="cancellationToken">Cancels the start.</param>
    /// <returns>The call, response headers received.</returns>
    /// <exception cref="GrpcCallException">A trailers-only error response, or a non-gRPC response.</exception>
    /// <exception cref="HttpRequestException">The connection failed.</exception>
    public static async Task<GrpcServerStreamingCall<TResponse>> StartServerStreamingAsync<TResponse>(
        HttpMessageInvoker invoker, Uri baseAddress, string path, IMessage request, MessageParser<TResponse> parser,
        TimeSpan? deadline, int maxMessageBytes, CancellationToken cancellationToken)
        where TResponse : class, IMessage<TResponse>
    {
        ArgumentNullException.ThrowIfNull(invoker);
        ArgumentNullException.ThrowIfNull(baseAddress);
        ArgumentNullException.ThrowIfNull(parser);
        using var message = new HttpRequestMessage(HttpMethod.Post, new Uri(baseAddress, path))
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent(GrpcFrameWriter.Encode(request)),
        };
        message.Content.Headers.ContentType = new MediaTypeHeaderValue(GrpcProtocol.ContentType);
        message.Headers.TryAddWithoutValidation("te", "trailers");
        if (deadline is { } d)
        {
            message.Headers.TryAddWithoutValidation(GrpcProtocol.TimeoutHeader, GrpcProtocol.FormatTimeout(d));
        }

        // HttpClient.SendAsync would buffer the whole (endless) response by default: ask for headers only.
        var response = invoker is HttpClient client
            ? await client.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false)
            : await invoker.SendAsync(message, cancellationToken).ConfigureAwait(false);
        try
        {
            // Trailers-only response: the status arrives in the headers, there is no body. A grpc-status there wins over the HTTP
            // status (grpc/doc/http-grpc-status-mapping.md: the HTTP mapping is only for responses without grpc-status).
            if (response.Headers.TryGetValues(GrpcProtocol.StatusHeader, out var statusValues))
            {
                GrpcServerStreamingCall<TResponse>.ThrowIfNotOk(statusValues.FirstOrDefault(), GrpcServerStreamingCall<TResponse>.HeaderValue(response.Headers, GrpcProtocol.MessageHeader), orEnded: true);
            }

            if (response.StatusCode != HttpStatusCode.OK)
            {
                throw new GrpcCallException(
                    GrpcServerStreamingCall<TResponse>.MapHttpStatus(response.StatusCode),
                    $"HTTP status {(int)response.StatusCode} from {baseAddress} without grpc-status (content type '{response.Content.Headers.ContentType?.ToString() ?? "none"}'): not a gRPC server, or a proxy's answer");
            }

            if (!GrpcProtocol.IsGrpcContentType(response.Content.Headers.ContentType?.MediaType))
            {
                throw new GrpcCallException(GrpcStatusCode.Internal, $"response content type '{response.Content.Headers.ContentType}' is not application/grpc");
            }

            var body = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
            return new GrpcServerStreamingCall<TResponse>(response, body, parser, maxMessageBytes);
        }
        catch
        {
            response.Dispose();
            throw;
        }
    }

}

using System.Diagnostics;
using System.Net;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Options;
using Polly;
using Polly.CircuitBreaker;
using Sharding.Keys;
using Sharding.Net;
using Sharding.Protocol;
using Sharding.Sidecar.Draining;
using Sharding.Sidecar.Hosting;
using Sharding.Sidecar.Routing;
using Sharding.Sidecar.Transport;

namespace Sharding.Sidecar.Forwarding;

/// <summary>The sidecar's internal headers on a forward to a peer sidecar.</summary>
internal readonly record struct InternalHeaders(string Hop, string Generation, string Key, string Proof);

/// <summary>Where one request goes: this pod's app or a peer sidecar.</summary>
/// <param name="BaseAddress">Scheme and authority, e.g. <c>http://127.0.0.1:8080</c>.</param>
/// <param name="Owner">The member that serves the request (circuit breakers are per owner).</param>
/// <param name="IsPeer">Whether it is another sidecar (HTTP/2, internal headers, its x-sharding-* response headers pass).</param>
/// <param name="BodyPrefix">Body bytes already read (JSON key extraction), sent before the rest.</param>
/// <param name="Internal">Internal headers for a peer.</param>
/// <param name="Generation">For the local app: the generation the request was routed with (sent as <c>x-sharding-generation</c>,
/// with <c>x-sharding-owner</c>, so the app knows what its sidecar decided).</param>
/// <param name="BodyGuard">For a JSON-body key: checks the rest of the body as it streams; the send fails when it objects.</param>
internal readonly record struct ForwardTarget(
    string BaseAddress, string Owner, bool IsPeer, ReadOnlyMemory<byte> BodyPrefix, InternalHeaders? Internal, string? Generation = null,
    JsonKeyPathGuard? BodyGuard = null);

/// <summary>A forward's outcome: the error (None when it went well) and, for 503s, when to retry.</summary>
internal readonly record struct ForwardResult(ForwarderError Error, TimeSpan RetryAfter = default, Exception? Exception = null);

/// <summary>
/// Forwards one request to its target and streams the response back, in the manner of YARP's HttpForwarder (own code).
/// </summary>
/// <remarks>
/// Steps: (1) build the upstream request (method, raw target, version); (2) attach the client's body as a streaming content
/// (after any prefix read for key extraction); (3) copy headers minus hop-by-hop and x-sharding-*, add x-forwarded-* and,
/// for peers, the internal headers; (4) send through the owner's Polly pipeline under the response-headers timeout;
/// (5) on failure before the response started, return the error (the caller answers 502/503/504); (6) copy status and
/// headers, (7) stream the body, flushing each write for unknown-length responses (SSE, gRPC), (8) copy trailers;
/// (9) a failure after the response started resets the HTTP/2 stream or aborts the connection, so a cut body never looks whole.
/// HTTP/1.1 upgrades (WebSocket) switch to two raw copies after the upstream's 101. A WebSocket over HTTP/2 (RFC 8441
/// extended CONNECT) goes upstream as an HTTP/1.1 upgrade, as YARP does: the app and the peers need only RFC 6455.
/// </remarks>
internal sealed partial class HttpForwarder : IDisposable
{
    private static readonly Version Http2 = HttpVersion.Version20;
    private static readonly Version Http11 = HttpVersion.Version11;

    private readonly HttpMessageInvoker _appInvoker;
    private readonly HttpMessageInvoker _appHttp1Invoker;
    private readonly HttpMessageInvoker _peerInvoker;
    private readonly OwnerResilience _resilience;
    private readonly SidecarMetrics _metrics;
    private readonly SidecarOptions _options;
    private readonly ILogger<HttpForwarder> _logger;
    private readonly StreamRegistry _streams;
    private readonly TimeProvider _time;

    public HttpForwarder(
        IOptions<SidecarOptions> options, OwnerResilience resilience, SidecarMetrics metrics, StreamRegistry streams, TimeProvider time,
        ILogger<HttpForwarder> logger, EpollLoops? loops = null)
    {
        _streams = streams;
        _time = time;
        _options = options.Value;
        _resilience = resilience;
        _metrics = metrics;
        _logger = logger;
        _appInvoker = new HttpMessageInvoker(CreateHandler(_options, _options.AppUnixSocket), disposeHandler: true);
        AppHttp1Handler = new DuplexHttp1Handler(_options.AppEndPoint(), _options.ConnectTimeout, time, loops);
        _appHttp1Invoker = new HttpMessageInvoker(AppHttp1Handler, disposeHandler: true);
        _peerInvoker = new HttpMessageInvoker(CreateHandler(_options, unixSocket: null), disposeHandler: true);
        resilience.AttachMetrics(metrics);
    }

    /// <summary>The app's HTTP/1.1 client (for tests).</summary>
    internal DuplexHttp1Handler AppHttp1Handler { get; }

    /// <summary>Tests: runs after the client got its switch (101, or 200 for an extended CONNECT) and before the copies start.</summary>
    internal Func<ShardRequestContext?, Task>? AfterClientSwitch { get; set; }

    /// <summary>The app's base address (a placeholder authority when the app listens on a Unix socket).</summary>
    public string AppBaseAddress => _options.AppUnixSocket is null
        ? string.Create(System.Globalization.CultureInfo.InvariantCulture, $"http://127.0.0.1:{_options.AppPort}")
        : "http://localhost";

    public void Dispose()
    {
        _appInvoker.Dispose();
        _appHttp1Invoker.Dispose();
        _peerInvoker.Dispose();
    }

    /// <summary>One long-lived handler: no proxy, redirects, decompression or cookies; pooled HTTP/2 (several connections).</summary>
    internal static SocketsHttpHandler CreateHandler(SidecarOptions options, string? unixSocket)
    {
        var handler = new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            UseCookies = false,
            EnableMultipleHttp2Connections = options.EnableMultipleHttp2Connections,
            ConnectTimeout = options.ConnectTimeout,
            ActivityHeadersPropagator = null, // transparent: no traceparent of ours
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(2),
            // Larger than the 64 KiB default so one stream can fill a fast link (a 100 MB body on loopback).
            InitialHttp2StreamWindowSize = 1024 * 1024,
            // Header bytes above 0x7F pass unchanged: Kestrel decoded the client's as UTF-8, and writes the response's as
            // Latin-1 (SidecarHost).
            RequestHeaderEncodingSelector = static (_, _) => System.Text.Encoding.UTF8,
            ResponseHeaderEncodingSelector = static (_, _) => System.Text.Encoding.Latin1,
        };
        if (unixSocket is not null)
        {
            handler.ConnectCallback = async (_, cancellationToken) =>
            {
                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new System.Net.Sockets.UnixDomainSocketEndPoint(unixSocket), cancellationToken).ConfigureAwait(false);
                    return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            };
        }
        else
        {
            handler.ConnectCallback = async (context, cancellationToken) =>
            {
                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    await socket.ConnectAsync(context.DnsEndPoint, cancellationToken).ConfigureAwait(false);
                    return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            };
        }

        return handler;
    }

    /// <summary>Forwards the request; see the remarks on <see cref="HttpForwarder"/> for the steps.</summary>
    /// <param name="context">The client's request.</param>
    /// <param name="target">Where it goes.</param>
    /// <param name="stream">Its routing decision, tracked by the stream registry (null: not drainable, e.g. direct tests).</param>
    public async ValueTask<ForwardResult> ForwardAsync(HttpContext context, ForwardTarget target, ShardRequestContext? stream = null)
    {
        var upgradeFeature = context.Features.Get<IHttpUpgradeFeature>();
        var extendedConnect = Http2WebSocket.Of(context);
        var isUpgrade = extendedConnect is not null || upgradeFeature?.IsUpgradableRequest == true;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
        var headersTimeout = _options.ResponseHeadersTimeout;
        if (headersTimeout > TimeSpan.Zero)
        {
            cts.CancelAfter(headersTimeout);
        }

        var activity = _options.ActivityTimeout > TimeSpan.Zero ? new ActivityTimeout(cts, _options.ActivityTimeout) : null;
        ActivityTimeout? headersDeadline = null;

        // An upgrade's drain cancels a source of its own from the start: before the 101 it cuts the send (a 503), after it
        // only the upstream-to-client copy, while cts stays live for the close frame 1012. Attaching that source only when
        // the copies started left a window (the 101 relayed, no copy yet) in which a drain cancelled cts instead: the close
        // frame could not be written and the client was cut without one.
        using var drain = isUpgrade ? CancellationTokenSource.CreateLinkedTokenSource(cts.Token) : null;
        stream?.AttachCancellation(drain ?? cts);

        // 1. The upstream request.
        var request = context.Request;
        using var message = new HttpRequestMessage(
            extendedConnect is null ? HttpMethod.Parse(request.Method) : HttpMethod.Get, new Uri(string.Concat(target.BaseAddress, RawTarget(context))));
        message.Version = target.IsPeer ? (isUpgrade ? Http11 : Http2) : AppVersion(request, isUpgrade);
        message.VersionPolicy = HttpVersionPolicy.RequestVersionExact;
        if (!target.IsPeer && context.Features.Get<EpollLoop>() is { } loop)
        {
            message.Options.Set(DuplexHttp1Handler.Loop, loop); // the app connection on the client connection's loop
        }

        // 2. The body, streamed.
        StreamCopyHttpContent? content = null;
        if (!isUpgrade && (HasBody(context) || !target.BodyPrefix.IsEmpty))
        {
            var source = target.BodyGuard is { } guard ? new GuardedBodyStream(request.Body, guard) : request.Body;

            // Without an activity timeout, the body's progress pushes the headers deadline back: it bounds the upstream's
            // answer, not the upload (a slow 100 MB upload, a gRPC client-streaming call).
            headersDeadline = activity is null && headersTimeout > TimeSpan.Zero ? ActivityTimeout.UntilResponse(cts, headersTimeout) : null;
            content = new StreamCopyHttpContent(source, target.BodyPrefix, autoFlush: request.ContentLength is null, activity ?? headersDeadline, cts.Token);
            message.Content = content;
        }

        // 3. Headers.
        HeaderRules.CopyRequestHeaders(request, message, isUpgrade);
        if (request.Headers.Host.Count > 0)
        {
            message.Headers.TryAddWithoutValidation("host", request.Headers.Host[0]);
        }

        var webSocketKey = extendedConnect is null ? null : Http2WebSocket.AddUpgradeHeaders(message);

        AddForwardedHeaders(context, message);
        if (target.Internal is { } internalHeaders)
        {
            message.Headers.TryAddWithoutValidation(HeaderRules.Hop, internalHeaders.Hop);
            message.Headers.TryAddWithoutValidation(HeaderRules.Generation, internalHeaders.Generation);
            if (internalHeaders.Key.Length > 0)
            {
                message.Headers.TryAddWithoutValidation(HeaderRules.Key, internalHeaders.Key); // none: the no-key fallback's forward
            }

            message.Headers.TryAddWithoutValidation(HeaderRules.Proof, internalHeaders.Proof);
        }
        else if (target.Generation is not null)
        {
            // For the app (never a peer): what the sidecar decided. Anything x-sharding-* from outside was dropped above.
            message.Headers.TryAddWithoutValidation(HeaderRules.Generation, target.Generation);
            message.Headers.TryAddWithoutValidation(HeaderRules.Owner, target.Owner);
        }

        // 4. Send.
        var start = Stopwatch.GetTimestamp();
        _metrics.StreamStarted();
        try
        {
            HttpResponseMessage response;
            try
            {
                // The app on loopback needs no breaker or retries (a refused connect is answered 503 at once); peers get
                // their owner's Polly pipeline. HTTP/1.1 to the app is duplex through our own client; upgrades keep
                // SocketsHttpHandler's 101 handling.
                var sendToken = (drain ?? cts).Token;
                response = target.IsPeer
                    ? await SendToPeerAsync(target.Owner, message, content, sendToken).ConfigureAwait(false)
                    : await (message.Version == Http11 && !isUpgrade ? _appHttp1Invoker : _appInvoker).SendAsync(message, sendToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                // 5. Failed before any response (or a drain ended a long poll that was still waiting).
                if (StreamEnder.IsDrained(context, stream))
                {
                    await StreamEnder.EndBeforeResponseAsync(context, stream!).ConfigureAwait(false);
                    return default;
                }

                return SendFailed(context, target, content, ex);
            }

            using (response)
            {
                _metrics.ForwardDuration(!target.IsPeer, start);

                // From here on the body's idle time counts, not the headers' deadline.
                if (activity is null)
                {
                    if (headersDeadline is not null)
                    {
                        headersDeadline.Stop();
                    }
                    else
                    {
                        cts.CancelAfter(Timeout.InfiniteTimeSpan);
                    }
                }
                else
                {
                    activity.Touch();
                }

                if (isUpgrade && response.StatusCode == HttpStatusCode.SwitchingProtocols)
                {
                    if (webSocketKey is not null && !Http2WebSocket.IsAccepted(response, webSocketKey))
                    {
                        return Fail(context, target, ForwarderError.Upgrade, new HttpRequestException("the upstream's 101 did not accept the WebSocket key"));
                    }

                    return await UpgradeAsync(context, upgradeFeature, extendedConnect, response, target, activity, cts, drain!, stream).ConfigureAwait(false);
                }

                if (drain is not null)
                {
                    // Refused (not a 101): an ordinary response, which a drain ends as any other (at once if one came meanwhile).
                    stream?.AttachCancellation(cts);
                }

                return await CopyResponseAsync(context, response, target, activity, stream, cts.Token).ConfigureAwait(false);
            }
        }
        finally
        {
            stream?.AttachCancellation(null);
            if (content is { Started: true } && !content.Completion.IsCompleted)
            {
                // The response ended while the body was still being sent (an early answer, a duplex call over HTTP/2): stop
                // the copy before the caller returns the body's prefix buffer to the pool and the client's body ends.
                await cts.CancelAsync().ConfigureAwait(false);
                await content.Completion.ConfigureAwait(false);
            }

            _metrics.StreamEnded();
            if (content is not null)
            {
                _metrics.RequestBytes(content.BytesSent);
            }
        }
    }

    private async ValueTask<HttpResponseMessage> SendToPeerAsync(string owner, HttpRequestMessage message, StreamCopyHttpContent? content, CancellationToken cancellationToken)
    {
        var resilienceContext = ResilienceContextPool.Shared.Get(cancellationToken);
        resilienceContext.Properties.Set(OwnerResilience.BodyKey, content);
        try
        {
            return await _resilience.For(owner).ExecuteAsync(
                static (ctx, state) => new ValueTask<HttpResponseMessage>(state.Invoker.SendAsync(state.Message, ctx.CancellationToken)),
                resilienceContext,
                (Invoker: _peerInvoker, Message: message)).ConfigureAwait(false);
        }
        finally
        {
            ResilienceContextPool.Shared.Return(resilienceContext);
        }
    }

    private ForwardResult SendFailed(HttpContext context, ForwardTarget target, StreamCopyHttpContent? content, Exception ex)
    {
        if (ex is BrokenCircuitException broken)
        {
            Log.CircuitOpen(_logger, target.Owner);
            return new ForwardResult(ForwarderError.OwnerUnavailable, broken.RetryAfter ?? _options.BreakerDuration, ex);
        }

        if (context.RequestAborted.IsCancellationRequested)
        {
            Log.ClientCanceled(_logger, target.Owner);
            return new ForwardResult(ForwarderError.RequestCanceled, default, ex);
        }

        if (content?.Result == StreamCopyResult.InputError)
        {
            // The client's doing (it went away mid-body, often a moment before RequestAborted says so, or sent a malformed
            // body): counted as bad_request, not an operator's warning.
            Log.ClientBodyFailed(_logger, target.Owner, ex);
            return new ForwardResult(ForwarderError.RequestBodyClient, default, ex);
        }

        if (ex is OperationCanceledException)
        {
            Log.ForwardFailed(_logger, target.Owner, ForwarderError.RequestTimedOut, ex);
            return new ForwardResult(ForwarderError.RequestTimedOut, default, ex);
        }

        if (OwnerResilience.IsConnectFailure(ex))
        {
            Log.OwnerUnreachable(_logger, target.Owner, target.BaseAddress, ex.Message);
            return new ForwardResult(ForwarderError.OwnerUnavailable, TimeSpan.FromSeconds(Math.Max(1, _options.RetryAfterSeconds)), ex);
        }

        var error = content?.Result == StreamCopyResult.OutputError ? ForwarderError.RequestBodyDestination : ForwarderError.Request;
        Log.ForwardFailed(_logger, target.Owner, error, ex);
        return new ForwardResult(error, default, ex);
    }

    private async ValueTask<ForwardResult> CopyResponseAsync(
        HttpContext context, HttpResponseMessage response, ForwardTarget target, ActivityTimeout? activity, ShardRequestContext? stream,
        CancellationToken cancellationToken)
    {
        // 6. Status and headers.
        var clientResponse = context.Response;
        if (CopyResponseHeaders(context, response, target, isUpgrade: false) is { } refused)
        {
            return refused;
        }

        clientResponse.StatusCode = (int)response.StatusCode;
        context.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();

        // 7. The body: unknown length means it may be a stream (SSE, gRPC, long poll): flush every write. Event streams and
        // gRPC also get their headers at once (a client waits on them); other responses send headers with the first bytes.
        var streaming = response.Content.Headers.ContentLength is null;
        var kind = streaming ? StreamEnder.KindOfResponse(response.Content.Headers.ContentType?.MediaType) : StreamKind.None;

        // A gRPC answer with grpc-status in its headers is trailers-only (one HEADERS frame that ends the stream, as grpc-go
        // sends early errors, without content-length): starting the response early would split it into headers and an empty
        // end of stream, and clients that read the status only at the end (grpc-go, C-core) would find none.
        var trailersOnly = kind == StreamKind.Grpc && response.Headers.NonValidated.Contains("grpc-status");
        try
        {
            if (kind != StreamKind.None)
            {
                if (stream is not null)
                {
                    _streams.MarkStreaming(stream, kind);
                }

                if (!trailersOnly)
                {
                    await clientResponse.StartAsync(cancellationToken).ConfigureAwait(false);
                }
            }
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or InvalidOperationException)
        {
            if (StreamEnder.IsDrained(context, stream) && StreamEnder.EndStartedResponse(context, stream!, atBoundary: true, fixedLength: false))
            {
                return default;
            }

            return Fail(context, target, ForwarderError.ResponseBodyClient, ex);
        }

        Stream upstream;
        try
        {
            upstream = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or HttpRequestException)
        {
            return Fail(context, target, ForwarderError.ResponseBodyDestination, ex);
        }

        await using (upstream.ConfigureAwait(false))
        {
            StreamCopyResult result;
            long bytes;
            Exception? error;
            var atBoundary = true;
            if (kind == StreamKind.Grpc && !trailersOnly)
            {
                // Whole gRPC messages only, so a drain can end the call with a clean status.
                var framed = await FramedCopier.CopyAsync(upstream, clientResponse.Body, FrameFormat.Grpc, activity, cancellationToken).ConfigureAwait(false);
                (result, bytes, error, atBoundary) = (framed.Result, framed.Bytes, framed.Error, framed.AtBoundary);
            }
            else
            {
                (result, bytes, error) = await StreamCopier.CopyAsync(upstream, clientResponse.Body, streaming && !trailersOnly, activity, cancellationToken).ConfigureAwait(false);
            }

            _metrics.ResponseBytes(bytes);
            if (result == StreamCopyResult.Canceled && StreamEnder.IsDrained(context, stream)
                && StreamEnder.EndStartedResponse(context, stream!, atBoundary, fixedLength: !streaming))
            {
                return default;
            }

            switch (result)
            {
                case StreamCopyResult.InputError:
                    return Fail(context, target, ForwarderError.ResponseBodyDestination, error);
                case StreamCopyResult.OutputError:
                    return Fail(context, target, ForwarderError.ResponseBodyClient, error);
                case StreamCopyResult.Canceled:
                    return Fail(context, target, context.RequestAborted.IsCancellationRequested ? ForwarderError.ResponseBodyClient : ForwarderError.ActivityTimedOut, error);
            }
        }

        // 8. Trailers (gRPC status).
        try
        {
            HeaderRules.CopyTrailers(response, clientResponse, target.IsPeer);
        }
        catch (InvalidOperationException ex)
        {
            return Fail(context, target, ForwarderError.ResponseHeaders, ex); // the body went out without them: reset
        }

        return default;
    }

    /// <summary>
    /// Copies the upstream's response headers; a value Kestrel refuses to send (a control character HttpClient let through)
    /// takes back what was copied and returns the error (a 502), instead of escaping as an unhandled exception (a bare 500).
    /// </summary>
    private ForwardResult? CopyResponseHeaders(HttpContext context, HttpResponseMessage response, ForwardTarget target, bool isUpgrade)
    {
        var headers = context.Response.Headers;
        var generation = headers[HeaderRules.Generation];
        try
        {
            HeaderRules.CopyResponseHeaders(response, context.Response, target.IsPeer, isUpgrade);
            return null;
        }
        catch (InvalidOperationException ex)
        {
            foreach (var header in response.Headers.NonValidated)
            {
                headers.Remove(header.Key);
            }

            foreach (var header in response.Content.Headers.NonValidated)
            {
                headers.Remove(header.Key);
            }

            headers[HeaderRules.Generation] = generation;
            return Fail(context, target, ForwarderError.ResponseHeaders, ex);
        }
    }

    private async ValueTask<ForwardResult> UpgradeAsync(
        HttpContext context, IHttpUpgradeFeature? upgradeFeature, IHttpExtendedConnectFeature? extendedConnect, HttpResponseMessage response,
        ForwardTarget target, ActivityTimeout? activity, CancellationTokenSource cts, CancellationTokenSource drain, ShardRequestContext? stream)
    {
        // HTTP/2 answers an accepted extended CONNECT with 200 and no connection-specific headers (RFC 8441 §5).
        if (CopyResponseHeaders(context, response, target, isUpgrade: extendedConnect is null) is { } refused)
        {
            return refused;
        }

        if (extendedConnect is not null)
        {
            context.Response.Headers.Remove(Http2WebSocket.AcceptHeader);
        }

        Stream client;
        Stream upstream;
        try
        {
            upstream = await response.Content.ReadAsStreamAsync(cts.Token).ConfigureAwait(false);
            client = extendedConnect is null
                ? await upgradeFeature!.UpgradeAsync().ConfigureAwait(false)
                : await extendedConnect.AcceptAsync().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or InvalidOperationException or HttpRequestException)
        {
            return Fail(context, target, ForwarderError.Upgrade, ex);
        }

        if (AfterClientSwitch is { } hook)
        {
            await hook(stream).ConfigureAwait(false);
        }

        await using (upstream.ConfigureAwait(false))
        {
            // A drain (attached since the send) stops only the upstream-to-client copy (at a frame boundary), so the sidecar
            // can add its close frame and the client's answer can still reach the app. One that came before this point
            // stops it at once, at the first frame boundary there is.
            var up = StreamCopier.CopyAsync(client, upstream, autoFlush: true, activity, cts.Token).AsTask();
            var down = FramedCopier.CopyAsync(upstream, client, FrameFormat.WebSocket, activity, drain.Token).AsTask();

            // When either side ends, end the other: a WebSocket's close handshake has already passed through by then.
            await Task.WhenAny(up, down).ConfigureAwait(false);
            if (down.IsCompleted && down.Result.Result == StreamCopyResult.Canceled && StreamEnder.IsDrained(context, stream))
            {
                try
                {
                    if (down.Result.AtBoundary)
                    {
                        await StreamEnder.CloseWebSocketAsync(client, stream!, down.Result.SawClose, cts.Token).ConfigureAwait(false);

                        // Bounded: the client answers the close (it goes up to the app) and hangs up, or we stop waiting.
                        await Task.WhenAny(up, Task.Delay(TimeSpan.FromSeconds(1), _time, cts.Token)).ConfigureAwait(false);
                    }
                }
                catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
                {
                    Log.ClientCanceled(_logger, target.Owner);
                }
            }

            stream?.AttachCancellation(null);
            await cts.CancelAsync().ConfigureAwait(false);
            var (upResult, upBytes, _) = await up.ConfigureAwait(false);
            var downResult = await down.ConfigureAwait(false);
            _metrics.RequestBytes(upBytes);
            _metrics.ResponseBytes(downResult.Bytes);
            Log.UpgradeEnded(_logger, target.Owner, upResult, downResult.Result);
        }

        return default;
    }

    private ForwardResult Fail(HttpContext context, ForwardTarget target, ForwarderError error, Exception? ex)
    {
        if (context.RequestAborted.IsCancellationRequested || error == ForwarderError.ResponseBodyClient)
        {
            Log.ClientCanceled(_logger, target.Owner);
        }
        else
        {
            Log.ForwardFailed(_logger, target.Owner, error, ex);
        }

        if (context.Response.HasStarted)
        {
            ResetOrAbort(context, isCancelled: error == ForwarderError.ResponseBodyClient);
        }

        return new ForwardResult(error, default, ex);
    }

    /// <summary>Ends a started response so the client cannot take a cut body for a whole one.</summary>
    internal static void ResetOrAbort(HttpContext context, bool isCancelled)
    {
        // RFC 9113 §7: CANCEL (0x8) when the stream is no longer needed, INTERNAL_ERROR (0x2) when we broke it.
        var reset = context.Features.Get<IHttpResetFeature>();
        if (reset is not null)
        {
            reset.Reset(isCancelled ? 0x8 : 0x2);
        }
        else
        {
            context.Abort();
        }
    }

    private Version AppVersion(HttpRequest request, bool isUpgrade)
    {
        if (isUpgrade)
        {
            return Http11;
        }

        return _options.AppProtocol switch
        {
            AppProtocol.Http2 => Http2,
            AppProtocol.Auto => HttpProtocol.IsHttp2(request.Protocol) ? Http2 : Http11,
            _ => IsGrpc(request) ? Http2 : Http11,
        };
    }

    private static bool IsGrpc(HttpRequest request) => GrpcProtocol.IsGrpc(request.ContentType);

    private static bool HasBody(HttpContext context)
    {
        if (context.Request.ContentLength is long length)
        {
            return length > 0;
        }

        return context.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody ?? false;
    }

    private static string RawTarget(HttpContext context)
    {
        var raw = context.Features.Get<IHttpRequestFeature>()?.RawTarget;
        if (raw is { Length: > 0 } && raw[0] == '/')
        {
            return raw;
        }

        var request = context.Request;
        return string.Concat(request.PathBase.ToUriComponent(), request.Path.ToUriComponent(), request.QueryString.ToUriComponent());
    }

    /// <summary>The client's address as text, formatted once per connection rather than once per request.</summary>
    private static string? RemoteAddressText(HttpContext context)
    {
        var connection = context.Features.Get<ConnectionState>();
        if (connection is null)
        {
            return ClientAddress.Of(context.Connection.RemoteIpAddress)?.ToString();
        }

        return connection.RemoteAddressText ??= ClientAddress.Of(context.Connection.RemoteIpAddress)?.ToString();
    }

    private static void AddForwardedHeaders(HttpContext context, HttpRequestMessage message)
    {
        // A client's x-forwarded-* that its Connection header names is hop-by-hop (CopyRequestHeaders dropped it): ours
        // replaces it.
        var request = context.Request;
        var headers = request.Headers;
        var remote = RemoteAddressText(context);
        if (remote is not null)
        {
            var existing = HeaderRules.IsNamedByConnection(headers, "x-forwarded-for") ? default : headers["x-forwarded-for"];
            message.Headers.Remove("x-forwarded-for");
            message.Headers.TryAddWithoutValidation("x-forwarded-for", existing.Count == 0 ? remote : string.Concat(existing.ToString(), ", ", remote));
        }

        if (!headers.ContainsKey("x-forwarded-proto") || HeaderRules.IsNamedByConnection(headers, "x-forwarded-proto"))
        {
            message.Headers.TryAddWithoutValidation("x-forwarded-proto", request.Scheme);
        }

        if ((!headers.ContainsKey("x-forwarded-host") || HeaderRules.IsNamedByConnection(headers, "x-forwarded-host")) && request.Host.HasValue)
        {
            message.Headers.TryAddWithoutValidation("x-forwarded-host", request.Host.Value);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 600, EventName = "ForwardFailed", Level = LogLevel.Warning, Message = "Forward to {Owner} failed: {Error}")]
        public static partial void ForwardFailed(ILogger logger, string owner, ForwarderError error, Exception? exception);

        [LoggerMessage(EventId = 601, EventName = "ClientCanceled", Level = LogLevel.Debug, Message = "The client went away during a forward to {Owner}")]
        public static partial void ClientCanceled(ILogger logger, string owner);

        [LoggerMessage(EventId = 602, EventName = "OwnerUnreachable", Level = LogLevel.Warning, Message = "Owner {Owner} at {Address} is unreachable after retries: {Reason}")]
        public static partial void OwnerUnreachable(ILogger logger, string owner, string address, string reason);

        [LoggerMessage(EventId = 603, EventName = "CircuitOpen", Level = LogLevel.Warning, Message = "The circuit to owner {Owner} is open: answering 503")]
        public static partial void CircuitOpen(ILogger logger, string owner);

        [LoggerMessage(EventId = 605, EventName = "ClientBodyFailed", Level = LogLevel.Debug, Message = "The client's request body failed (cut short or malformed) during a forward to {Owner}")]
        public static partial void ClientBodyFailed(ILogger logger, string owner, Exception exception);

        [LoggerMessage(EventId = 604, EventName = "UpgradeEnded", Level = LogLevel.Debug, Message = "Upgraded stream to {Owner} ended: client->upstream {Up}, upstream->client {Down}")]
        public static partial void UpgradeEnded(ILogger logger, string owner, StreamCopyResult up, StreamCopyResult down);
    }
}

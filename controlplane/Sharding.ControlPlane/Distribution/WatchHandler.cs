using System.Buffers;
using System.IO.Pipelines;
using Google.Protobuf;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Options;
using Sharding.ControlPlane.Hosting;
using Sharding.ControlPlane.Leadership;
using Sharding.Net;
using Sharding.Protocol;
using Sharding.Protocol.V1;

namespace Sharding.ControlPlane.Distribution;

/// <summary>Serves <c>sharding.v1.Assignments/Watch</c>: standard gRPC server streaming over Kestrel HTTP/2.</summary>
/// <remarks>
/// <list type="number">
/// <item>Checks HTTP/2 and <c>application/grpc</c>; reads the single request message (size-limited: RESOURCE_EXHAUSTED above it).</item>
/// <item>Unknown service once this replica is in sync → trailers-only NOT_FOUND naming the known services.</item>
/// <item>Sends headers, then for every followed service whose generation is newer than what the subscriber holds: the shared delta
///   frame when the subscriber holds exactly its base (generation and checksum), otherwise the shared snapshot frame. An all-services
///   subscriber gets one PING right after the first burst once this replica is in sync (its "in sync" marker), and no keep-alive
///   PING before it.</item>
/// <item>Waits for the next publication or the ping interval; pings keep dead streams detectable on both sides.</item>
/// <item>Frames go into <see cref="HttpResponse.BodyWriter"/> (a copy of the shared bytes, no per-subscriber encoding), then one flush
///   per wake-up. Every subscriber has its own loop, so a slow one never delays the others; it only skips generations (it gets the
///   newest as a delta or snapshot once it drains). A flush that stays blocked by HTTP/2 flow control for the stall timeout (four ping
///   intervals, at least <see cref="MinStallTimeout"/>) resets the stream with ENHANCE_YOUR_CALM, which gRPC clients read as
///   RESOURCE_EXHAUSTED: the subscriber reconnects and gets a snapshot, and the replica does not hold its buffers forever.</item>
/// <item>Ends with OK never by itself; DEADLINE_EXCEEDED at <c>grpc-timeout</c> (also when it expires before the request message; a
///   timeout beyond a timer's range, about 49.7 days, counts as none), UNAVAILABLE on shutdown (subscribers reconnect to another
///   replica), NOT_FOUND when a service asked for before this replica was in sync is not in its complete view, nothing when the
///   client reset the stream (RST_STREAM → RequestAborted).</item>
/// </list>
/// </remarks>
internal sealed partial class WatchHandler(
    ShardMapRegistry registry,
    ILeaderElector elector,
    ControlPlaneMetrics metrics,
    IOptions<ControlPlaneOptions> options,
    IHostApplicationLifetime lifetime,
    TimeProvider timeProvider,
    ILogger<WatchHandler> logger)
{
    /// <summary>The shortest stall timeout (a subscriber asking for very frequent pings is not cut for a short pause).</summary>
    internal static readonly TimeSpan MinStallTimeout = TimeSpan.FromSeconds(1);

    // RFC 9113 §7: ENHANCE_YOUR_CALM; grpc/doc/PROTOCOL-HTTP2.md maps it to RESOURCE_EXHAUSTED.
    private const int EnhanceYourCalm = 0xb;

    // The longest delay a CancellationTokenSource timer accepts (uint.MaxValue - 1 ms, about 49.7 days).
    private static readonly TimeSpan MaxDeadline = TimeSpan.FromMilliseconds(uint.MaxValue - 1);

    private const string ShuttingDown = "control plane replica shutting down; reconnect to another replica";

    private readonly ControlPlaneOptions _options = options.Value;

    private string UnknownService(string service) =>
        $"unknown service '{service}'; this control plane serves: {string.Join(", ", registry.Services.Order(StringComparer.Ordinal))}";

    public async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        var response = context.Response;
        if (!HttpProtocol.IsHttp2(request.Protocol))
        {
            response.StatusCode = StatusCodes.Status426UpgradeRequired;
            await response.WriteAsync("gRPC needs HTTP/2: use the control plane's gRPC port with HTTP/2 prior knowledge (h2c).\n", context.RequestAborted).ConfigureAwait(false);
            return;
        }

        if (!GrpcProtocol.IsGrpcContentType(request.ContentType))
        {
            response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
            return;
        }

        response.ContentType = GrpcProtocol.ContentType;
        using var deadline = new CancellationTokenSource(Timeout.InfiniteTimeSpan, timeProvider);
        if (request.Headers[GrpcProtocol.TimeoutHeader].ToString() is { Length: > 0 } timeoutText)
        {
            if (!GrpcProtocol.TryParseTimeout(timeoutText, out var timeout))
            {
                TrailersOnly(response, GrpcStatusCode.InvalidArgument, $"invalid grpc-timeout '{timeoutText}'");
                return;
            }

            // A deadline beyond what a timer accepts (about 49.7 days; e.g. 8640000S for 100 days) is as good as none.
            if (timeout <= MaxDeadline)
            {
                deadline.CancelAfter(timeout);
            }
        }

        using var linked = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, deadline.Token, lifetime.ApplicationStopping);
        var token = linked.Token;

        WatchRequest watch;
        try
        {
            var bytes = await new GrpcFrameReader(request.Body, _options.MaxRequestMessageBytes).ReadMessageAsync(token).ConfigureAwait(false)
                ?? throw new GrpcCallException(GrpcStatusCode.Internal, "the request has no message");
            watch = WatchRequest.Parser.ParseFrom(bytes);
        }
        catch (GrpcCallException ex)
        {
            TrailersOnly(response, ex.StatusCode, ex.Detail);
            return;
        }
        catch (InvalidProtocolBufferException ex)
        {
            TrailersOnly(response, GrpcStatusCode.Internal, "the WatchRequest could not be parsed: " + ex.Message);
            return;
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            // Before any message: a trailers-only status, unless the client is gone (nothing to answer).
            if (!context.RequestAborted.IsCancellationRequested)
            {
                if (deadline.IsCancellationRequested)
                {
                    metrics.StreamReset("deadline");
                    TrailersOnly(response, GrpcStatusCode.DeadlineExceeded, "grpc-timeout expired before the request message arrived");
                }
                else
                {
                    TrailersOnly(response, GrpcStatusCode.Unavailable, ShuttingDown);
                }
            }

            return;
        }

        var service = watch.Service;
        var all = string.IsNullOrEmpty(service);
        if (!all && registry.IsSynced && !registry.TryGet(service, out _))
        {
            TrailersOnly(response, GrpcStatusCode.NotFound, UnknownService(service));
            return;
        }

        var remote = ClientAddress.Of(context.Connection.RemoteIpAddress); // the manifests' [::] listener maps IPv4 subscribers
        if (!all && watch.KnownGeneration is > 0 and <= long.MaxValue && registry.NoteHeld(service, (long)watch.KnownGeneration, watch.KnownChecksum))
        {
            // Who made the claim: a raise of the leader's epoch follows from it, and the claim is not authenticated.
            Log.SubscriberHoldsUnpublished(logger, watch.Pod, service, (long)watch.KnownGeneration, remote);
        }

        var ping = watch.PingIntervalMs == 0
            ? _options.PingInterval
            : TimeSpan.FromMilliseconds(Math.Clamp(watch.PingIntervalMs, _options.MinPingInterval.TotalMilliseconds, TimeSpan.FromMinutes(1).TotalMilliseconds));
        metrics.SubscriberOpened();
        Log.SubscriberOpened(logger, watch.Pod, all ? "*" : service, (long)watch.KnownGeneration, remote);
        var reason = "error";
        try
        {
            response.StatusCode = StatusCodes.Status200OK;
            await response.StartAsync(token).ConfigureAwait(false);
            await response.BodyWriter.FlushAsync(token).ConfigureAwait(false);
            reason = await StreamAsync(response.BodyWriter, watch, all, ping, token).ConfigureAwait(false);
            if (reason == "ended")
            {
                // The loop saw the token cancelled without an exception: the same reasons as below.
                reason = context.RequestAborted.IsCancellationRequested ? "client_cancelled"
                    : deadline.IsCancellationRequested ? "deadline" : "shutdown";
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            reason = context.RequestAborted.IsCancellationRequested ? "client_cancelled"
                : deadline.IsCancellationRequested ? "deadline" : "shutdown";
        }
        catch (Exception ex) when (ex is IOException or InvalidOperationException)
        {
            reason = context.RequestAborted.IsCancellationRequested ? "client_cancelled" : "write_failed";
        }
        finally
        {
            metrics.SubscriberClosed();
            Log.SubscriberClosed(logger, watch.Pod, all ? "*" : service, reason);
        }

        switch (reason)
        {
            case "too_slow":
                metrics.StreamReset(reason);
                Log.SubscriberTooSlow(logger, watch.Pod, all ? "*" : service, remote);
                if (context.Features.Get<IHttpResetFeature>() is { } reset)
                {
                    reset.Reset(EnhanceYourCalm);
                }
                else
                {
                    context.Abort();
                }

                break;
            case "deadline":
                metrics.StreamReset(reason);
                response.AppendTrailer(GrpcProtocol.StatusHeader, ((int)GrpcStatusCode.DeadlineExceeded).ToString(System.Globalization.CultureInfo.InvariantCulture));
                response.AppendTrailer(GrpcProtocol.MessageHeader, GrpcProtocol.EncodeMessage("grpc-timeout expired"));
                break;
            case "shutdown":
                response.AppendTrailer(GrpcProtocol.StatusHeader, ((int)GrpcStatusCode.Unavailable).ToString(System.Globalization.CultureInfo.InvariantCulture));
                response.AppendTrailer(GrpcProtocol.MessageHeader, GrpcProtocol.EncodeMessage(ShuttingDown));
                break;
            case "cut_off":
                // This follower no longer hears the leader: what it holds may be stale. UNAVAILABLE, and GOAWAY on the connection,
                // so the subscriber reconnects over a new one, which the Service gives a ready replica.
                metrics.StreamReset(reason);
                response.AppendTrailer(GrpcProtocol.StatusHeader, ((int)GrpcStatusCode.Unavailable).ToString(System.Globalization.CultureInfo.InvariantCulture));
                response.AppendTrailer(GrpcProtocol.MessageHeader, GrpcProtocol.EncodeMessage(
                    $"control plane replica cut off from the leader ({registry.CutOff ?? "it hears it again"}); reconnect to another replica"));
                context.Features.Get<IConnectionLifetimeNotificationFeature>()?.RequestClose();
                break;
            case "service_removed":
                // Asked before this replica was in sync, and the service is not in the complete view: NOT_FOUND, as at the start.
                metrics.StreamReset(reason);
                response.AppendTrailer(GrpcProtocol.StatusHeader, ((int)GrpcStatusCode.NotFound).ToString(System.Globalization.CultureInfo.InvariantCulture));
                response.AppendTrailer(GrpcProtocol.MessageHeader, GrpcProtocol.EncodeMessage(UnknownService(service)));
                break;
            default:
                metrics.StreamReset(reason);
                break;
        }
    }

    private async Task<string> StreamAsync(PipeWriter body, WatchRequest watch, bool all, TimeSpan pingInterval, CancellationToken token)
    {
        // What the subscriber holds, per service: (generation, checksum).
        var held = new Dictionary<string, (long Generation, ulong Checksum)>(StringComparer.Ordinal);
        if (!all && watch.KnownGeneration > 0)
        {
            held[watch.Service] = ((long)watch.KnownGeneration, watch.KnownChecksum);
        }

        var stallTimeout = pingInterval * 4 < MinStallTimeout ? MinStallTimeout : pingInterval * 4;
        var first = true;
        for (long iteration = 0; iteration < long.MaxValue && !token.IsCancellationRequested; iteration++)
        {
            var changed = registry.Changed;
            if (registry.CutOff is not null)
            {
                return "cut_off";
            }

            var wrote = false;
            if (all)
            {
                foreach (var publication in registry.All)
                {
                    wrote |= WriteIfNewer(body, publication, held);
                }
            }
            else if (registry.TryGet(watch.Service, out var publication))
            {
                wrote |= WriteIfNewer(body, publication, held);
            }
            else if (registry.IsSynced)
            {
                return "service_removed";
            }

            if (first && all && registry.IsSynced)
            {
                first = false;
                WritePing(body);
                wrote = true;
            }

            if (wrote && !await FlushAsync(body, stallTimeout, token).ConfigureAwait(false))
            {
                return "too_slow";
            }

            try
            {
                await changed.WaitAsync(pingInterval, timeProvider, token).ConfigureAwait(false);
            }
            catch (TimeoutException) when (all && first)
            {
                // No keep-alive before the in-sync PING: an all-services subscriber (a follower's relay) takes the first PING as
                // "in sync", so a replica that has no complete view yet sends it nothing; the subscriber's idle timeout reconnects.
            }
            catch (TimeoutException)
            {
                WritePing(body);
                if (!await FlushAsync(body, stallTimeout, token).ConfigureAwait(false))
                {
                    return "too_slow";
                }
            }
        }

        return "ended";
    }

    /// <summary>
    /// One flush; false when HTTP/2 flow control keeps it blocked for <paramref name="stallTimeout"/>. The flush is left pending
    /// (not cancelled: Kestrel would abort the stream with INTERNAL_ERROR) so the caller can reset the stream with its own code.
    /// </summary>
    private async ValueTask<bool> FlushAsync(PipeWriter body, TimeSpan stallTimeout, CancellationToken token)
    {
        var flush = body.FlushAsync(token);
        FlushResult result;
        if (flush.IsCompletedSuccessfully)
        {
            result = flush.Result;
        }
        else
        {
            var pending = flush.AsTask();
            try
            {
                result = await pending.WaitAsync(stallTimeout, timeProvider, token).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                // Observe the flush's end (the reset completes it) so it never surfaces as an unobserved exception.
                _ = pending.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
                return false;
            }
        }

        return result.IsCanceled || result.IsCompleted
            ? throw new IOException("the response was completed (client gone) or its flush cancelled")
            : true;
    }

    private bool WriteIfNewer(PipeWriter body, Publication publication, Dictionary<string, (long Generation, ulong Checksum)> held)
    {
        var map = publication.Map;
        var has = held.TryGetValue(map.Service, out var h);
        if (has && h.Generation >= map.Generation)
        {
            return false;
        }

        var useDelta = has && publication.DeltaFrame is not null && publication.DeltaBaseGeneration == h.Generation && publication.DeltaBaseChecksum == h.Checksum;
        var frame = useDelta ? publication.DeltaFrame! : publication.SnapshotFrame;
        body.Write(frame);
        held[map.Service] = (map.Generation, map.Checksum);
        metrics.UpdateSent(useDelta ? "delta" : "snapshot", frame.Length);
        return true;
    }

    private void WritePing(PipeWriter body)
    {
        var frame = GrpcFrameWriter.Encode(new ShardMapUpdate
        {
            Kind = UpdateKind.Ping,
            LeaderEpoch = (ulong)Math.Max(0, elector.Current.Epoch),
            LeaderId = elector.Current.LeaderId ?? string.Empty,
            PublishedUnixMs = timeProvider.GetUtcNow().ToUnixTimeMilliseconds(),
        });
        body.Write(frame);
        metrics.UpdateSent("ping", frame.Length);
    }

    /// <summary>A trailers-only response: HTTP 200 with grpc-status in the headers and no body (gRPC's error shape before any message).</summary>
    private static void TrailersOnly(HttpResponse response, GrpcStatusCode status, string message)
    {
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = GrpcProtocol.ContentType;
        response.Headers[GrpcProtocol.StatusHeader] = ((int)status).ToString(System.Globalization.CultureInfo.InvariantCulture);
        response.Headers[GrpcProtocol.MessageHeader] = GrpcProtocol.EncodeMessage(message);
        response.HttpContext.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 401, EventName = "SubscriberOpened", Level = LogLevel.Debug, Message = "Watch opened by {Pod} for {Service} holding generation {KnownGeneration} from {RemoteAddress}")]
        public static partial void SubscriberOpened(ILogger logger, string pod, string service, long knownGeneration, System.Net.IPAddress? remoteAddress);

        [LoggerMessage(EventId = 402, EventName = "SubscriberClosed", Level = LogLevel.Debug, Message = "Watch of {Pod} for {Service} ended: {Reason}")]
        public static partial void SubscriberClosed(ILogger logger, string pod, string service, string reason);

        [LoggerMessage(EventId = 404, EventName = "SubscriberHoldsUnpublished", Level = LogLevel.Information, Message = "Watch by {Pod} for {Service} from {RemoteAddress} holds generation {KnownGeneration}, which this replica never published")]
        public static partial void SubscriberHoldsUnpublished(ILogger logger, string pod, string service, long knownGeneration, System.Net.IPAddress? remoteAddress);

        [LoggerMessage(EventId = 403, EventName = "SubscriberTooSlow", Level = LogLevel.Warning, Message = "Watch of {Pod} for {Service} from {RemoteAddress} read nothing for the stall timeout; resetting it (ENHANCE_YOUR_CALM) so it re-subscribes")]
        public static partial void SubscriberTooSlow(ILogger logger, string pod, string service, System.Net.IPAddress? remoteAddress);
    }
}

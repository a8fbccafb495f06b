using System.Buffers;
using System.IO.Pipelines;
using System.Reflection;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Sharding.Sidecar.PeerLink;

namespace Sharding.Sidecar.Hosting;

/// <summary>
/// HTTP/1.1 and HTTP/2 prior knowledge (h2c) on one cleartext port, like Envoy's codec auto-detection.
/// </summary>
/// <remarks>
/// Kestrel's <c>Http1AndHttp2</c> without TLS picks HTTP/1.1 for every connection (no ALPN to tell it otherwise). This
/// connection middleware runs before Kestrel's HTTP middleware: it peeks at the first bytes without consuming them; when
/// they are the HTTP/2 client preface (RFC 9113 §3.4, <c>PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n</c>) it sets Kestrel's per-connection
/// protocol override (its internal <c>HttpProtocolsFeature</c>, the one the TLS/SNI path uses) to HTTP/2, else leaves the
/// endpoint's HTTP/1.1. Decided at the first byte that differs from the preface, so HTTP/1.1 costs nothing extra.
/// The feature is internal to Kestrel, so it is found by reflection once at start; <see cref="IsSupported"/> says whether it
/// was found (the sidecar refuses to start otherwise rather than silently dropping h2c).
/// </remarks>
internal static class Http2PriorKnowledge
{
    private const string FeatureTypeName = "Microsoft.AspNetCore.Server.Kestrel.Core.Internal.HttpProtocolsFeature";

    private static ReadOnlySpan<byte> Preface => "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8;

    private static readonly (Type? Type, object? Http2) Feature = CreateFeature();

    /// <summary>Whether this Kestrel has the per-connection protocol override.</summary>
    public static bool IsSupported => Feature.Type is not null;

    /// <summary>Makes the endpoint accept HTTP/1.1 and h2c on the same port.</summary>
    /// <param name="listenOptions">The endpoint.</param>
    /// <param name="queueHttp2Output">Send HTTP/2 connections' output from a queue (<see cref="QueuedOutput"/>): for a
    /// transport with inline scheduling.</param>
    /// <param name="peerLink">Serves a peer link (an HTTP/2 connection whose first SETTINGS carry
    /// <see cref="LinkFrames.SettingPeerLink"/>) instead of Kestrel; null: every HTTP/2 connection is Kestrel's.</param>
    public static ListenOptions UseHttp1AndHttp2PriorKnowledge(this ListenOptions listenOptions, bool queueHttp2Output = false, Func<ConnectionContext, Task>? peerLink = null)
    {
        ArgumentNullException.ThrowIfNull(listenOptions);
        if (!IsSupported)
        {
            throw new InvalidOperationException(
                $"This Kestrel version has no {FeatureTypeName}; HTTP/1.1 and h2c cannot share a port. Use TLS (ALPN) or a separate HTTP/2 port.");
        }

        // The endpoint says HTTP/1.1 (so Kestrel does not warn that h2c needs TLS); the override below says HTTP/2 per connection.
        listenOptions.Protocols = HttpProtocols.Http1;
        // How long a connection may take to send enough bytes to tell the protocols apart: what Kestrel itself lets a new
        // connection wait for its first request (KeepAliveTimeout, read per connection as Kestrel does). A shorter bound of
        // our own cut pre-connected clients with a reset that Kestrel would have served.
        var limits = listenOptions.KestrelServerOptions.Limits;
        listenOptions.Use(next => connection => DetectAsync(connection, next, queueHttp2Output, limits.KeepAliveTimeout, peerLink));
        return listenOptions;
    }

    private static async Task DetectAsync(
        ConnectionContext connection, ConnectionDelegate next, bool queueHttp2Output, TimeSpan detectionTimeout, Func<ConnectionContext, Task>? peerLink)
    {
        var input = connection.Transport.Input;
        var isHttp2 = false;
        var isPeerLink = false;
        using (var timeout = new CancellationTokenSource(detectionTimeout.TotalMilliseconds < uint.MaxValue - 1 ? detectionTimeout : Timeout.InfiniteTimeSpan))
        using (timeout.Token.UnsafeRegister(static state => ((ConnectionContext)state!).Abort(new ConnectionAbortedException("no request bytes in time")), connection))
        {
            // Bounded: each turn sees more bytes, and 24 bytes or one mismatch or the end decides.
            while (true)
            {
                ReadResult result;
                try
                {
                    result = await input.ReadAsync(connection.ConnectionClosed).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is OperationCanceledException or IOException)
                {
                    // Gone before it said which protocol: aborted or timed out (ConnectionAbortedException), or reset by the
                    // client (ConnectionResetException, an IOException). Kestrel logs a reset at debug; letting it escape
                    // made Kestrel log "Unhandled exception while processing" at error for every client that reset early.
                    return;
                }

                var buffer = result.Buffer;
                var decision = Compare(buffer);

                // After an HTTP/2 preface, a peer link says so in its first SETTINGS (waited for only when links are served).
                var link = decision > 0 && peerLink is not null ? LinkFrames.IsPeerLink(buffer) : -1;
                if ((decision != 0 && link != 0) || result.IsCompleted || result.IsCanceled)
                {
                    isHttp2 = decision > 0;
                    isPeerLink = link > 0;
                    input.AdvanceTo(buffer.Start); // consume nothing: Kestrel parses from the first byte
                    break;
                }

                input.AdvanceTo(buffer.Start, buffer.End); // all examined: wait for more
            }
        }

        if (isPeerLink)
        {
            await peerLink!(connection).ConfigureAwait(false);
            return;
        }

        if (!isHttp2)
        {
            await next(connection).ConfigureAwait(false);
            return;
        }

        connection.Features[Feature.Type!] = Feature.Http2;
        await (queueHttp2Output ? QueuedOutput.RunAsync(connection, next) : next(connection)).ConfigureAwait(false);
    }

    /// <summary>1 = HTTP/2 preface, -1 = something else, 0 = a prefix of the preface so far.</summary>
    internal static int Compare(in ReadOnlySequence<byte> buffer)
    {
        var preface = Preface;
        var length = (int)Math.Min(buffer.Length, preface.Length);
        Span<byte> head = stackalloc byte[24];
        buffer.Slice(0, length).CopyTo(head);
        if (!head[..length].SequenceEqual(preface[..length]))
        {
            return -1;
        }

        return length == preface.Length ? 1 : 0;
    }

    private static (Type?, object?) CreateFeature()
    {
        var type = typeof(KestrelServerOptions).Assembly.GetType(FeatureTypeName, throwOnError: false);
        var constructor = type?.GetConstructor(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic, [typeof(HttpProtocols)]);
        return constructor is null ? (null, null) : (type, constructor.Invoke([HttpProtocols.Http2]));
    }
}

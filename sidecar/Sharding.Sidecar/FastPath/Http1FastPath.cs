using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Options;
using Sharding.Hashing;
using Sharding.Keys;
using Sharding.Mapping;
using Sharding.Metrics;
using Sharding.Net;
using Sharding.Sidecar.Draining;
using Sharding.Sidecar.Forwarding;
using Sharding.Sidecar.Hosting;
using Sharding.Sidecar.PeerLink;
using Sharding.Sidecar.Routing;
using Sharding.Sidecar.Transport;

namespace Sharding.Sidecar.FastPath;

/// <summary>
/// The HTTP/1.1 fast path: a connection middleware that serves plain HTTP/1.1 requests for keys this pod owns by relaying
/// bytes between the client connection and a kept-alive connection to the app, without a second HTTP stack (what nginx and
/// Envoy do). Everything else goes to Kestrel and the full router (<see cref="ShardRouter"/>), unchanged.
/// </summary>
/// <remarks>
/// <para>Per request: the head is parsed in place (<see cref="RequestHead"/>); a request qualifies when it is HTTP/1.1 in
/// origin form with a Host, has no Transfer-Encoding, Upgrade, Expect or internal hop header, is not gRPC or an event
/// stream, its key comes from the request line or headers (not the JSON body) and this pod owns it (or the no-key policy
/// serves it here). A request that does not qualify, and everything after it on that connection, is handed to Kestrel with
/// its bytes unread, so Kestrel parses it from its first byte.</para>
/// <para>The head goes to the app with the same header rules as the full path (hop-by-hop and <c>x-sharding-*</c> removed,
/// <c>x-forwarded-*</c>, <c>x-sharding-generation</c> and <c>x-sharding-owner</c> added), followed by the Content-Length body
/// streamed from the client. The response head comes back with the same rules plus <c>x-sharding-owner</c> and
/// <c>x-sharding-generation</c>; the body passes through as it is (Content-Length, chunked, or until close), flushed as it
/// arrives. Requests are tracked by the <see cref="StreamRegistry"/> like the full path's, so drains, shutdown and max age
/// end them the same way: 503 before the response, the chunked terminator at a chunk boundary, else the connection is cut.</para>
/// </remarks>
internal sealed partial class Http1FastPath : IDisposable
{
    private const int MaxRequestHeadBytes = 16 * 1024;

    /// <summary>Body bytes already received with the head that are sent in the same write as the head.</summary>
    private const int CoalescedBodyBytes = 16 * 1024;

    /// <summary>
    /// A kept app connection idle for less than this takes a bodiless request without a liveness poll (a syscall per request
    /// under load), as <see cref="DuplexHttp1Handler"/> does on the full path; after a longer pause it is checked first.
    /// </summary>
    private static readonly TimeSpan UncheckedIdle = TimeSpan.FromMilliseconds(100);

    /// <summary>After the app answered in full, how long the rest of the body may go without the app taking any of it.</summary>
    private static readonly TimeSpan BodyAfterResponseStall = TimeSpan.FromSeconds(5);

    private readonly ShardMapStore _store;
    private readonly StreamRegistry _streams;
    private readonly SidecarMetrics _metrics;
    private readonly SidecarOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger<Http1FastPath> _logger;
    private readonly UpstreamConnectionPool _appPool;
    private readonly ForwardingProof _proof;
    private readonly MapViews _views;
    private readonly OwnerCircuitStates _circuits;
    private readonly OwnerResilience _resilience;
    private readonly EpollLoops _loops;

    // Keep-alive connections to other sidecars, by address (null: not an IP endpoint, the full path resolves it).
    private readonly ConcurrentDictionary<string, UpstreamConnectionPool?> _peers = new(StringComparer.Ordinal);
    private KestrelServerLimits _limits = new();
    private ConnectionDelegate _kestrel = static _ => Task.CompletedTask;
    private readonly byte[] _retryAfter;

    public Http1FastPath(
        ShardMapStore store, MapViews views, StreamRegistry streams, SidecarMetrics metrics, ForwardingProof proof, OwnerCircuitStates circuits,
        OwnerResilience resilience, EpollLoops loops, IOptions<SidecarOptions> options, TimeProvider time, ILogger<Http1FastPath> logger)
    {
        _loops = loops;
        _views = views;
        _proof = proof;
        _circuits = circuits;
        _resilience = resilience;
        _store = store;
        _streams = streams;
        _metrics = metrics;
        _options = options.Value;
        _time = time;
        _logger = logger;
        _retryAfter = Encoding.ASCII.GetBytes(Math.Max(1, _options.RetryAfterSeconds).ToString(CultureInfo.InvariantCulture));
        _appPool = new UpstreamConnectionPool(_options.AppEndPoint(), _options.ConnectTimeout, time, loops);
        store.Changed += OnMapChanged;
    }

    /// <summary>Whether the fast path applies to this configuration: cleartext data port, HTTP/1.1 to the app, not turned off.</summary>
    public static bool AppliesTo(SidecarOptions options) =>
        options.Http1FastPath && options.TlsCertificatePath is null && options.AppProtocol == AppProtocol.Http1;

    /// <summary>The connection middleware (after h2c detection: an HTTP/2 preface is not a valid HTTP/1.1 head, so it falls through).</summary>
    /// <param name="limits">Kestrel's limits: its keep-alive and request-headers timeouts apply here too.</param>
    public Func<ConnectionDelegate, ConnectionDelegate> Middleware(KestrelServerLimits limits)
    {
        _limits = limits;
        return next =>
        {
            _kestrel = next;
            return connection => RunAsync(connection, next);
        };
    }

    /// <summary>
    /// Serves a peer link another sidecar opened (its preface and first SETTINGS unread in <paramref name="connection"/>):
    /// each stream is a client connection for a session, and for Kestrel when the session hands it over.
    /// </summary>
    public async Task ServePeerLinkAsync(ConnectionContext connection)
    {
        var loop = connection is EpollConnection epoll ? epoll.Loop : null;
        var link = LinkConnection.Accept(connection, loop, stream => _ = RunLinkStreamAsync(new LinkStreamConnection(stream, connection)), _metrics, _logger);

        // Shutdown, max age: no new streams; those under way end after their response (their lifetime is the link's).
        using var closing = connection.Features.Get<IConnectionLifetimeNotificationFeature>()?.ConnectionClosedRequested
            .UnsafeRegister(static state => ((LinkConnection)state!).GoAway(), link);
        await link.Closed.ConfigureAwait(false);
    }

    private async Task RunLinkStreamAsync(LinkStreamConnection connection)
    {
        try
        {
            await RunAsync(connection, _kestrel).ConfigureAwait(false); // runs inline up to its first wait
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            Log.LinkStreamFailed(_logger, ex);
        }
        finally
        {
            await connection.DisposeAsync().ConfigureAwait(false);
        }
    }

    public void Dispose()
    {
        _store.Changed -= OnMapChanged;
        _appPool.Dispose();
        foreach (var peer in _peers.Values)
        {
            peer?.Dispose();
        }
    }

    /// <summary>The keep-alive pool for another sidecar, or null when its address is not <c>ip:port</c>.</summary>
    private UpstreamConnectionPool? PeerPool(ShardMember owner) =>
        _peers.TryGetValue(owner.Address, out var pool) ? pool : _peers.GetOrAdd(owner.Address, CreatePeerPool);

    private UpstreamConnectionPool? CreatePeerPool(string address) =>
        IPEndPoint.TryParse(address, out var endPoint) && endPoint.Port > 0
            ? new UpstreamConnectionPool(endPoint, _options.ConnectTimeout, _time, _loops,
                _options.PeerLink && _loops.Enabled ? new PeerLinks(endPoint, _loops.Count, _options.ConnectTimeout, _time, _metrics, _logger) : null)
            : null;

    /// <summary>Members that left take their idle connections with them (on publication, not on a request's path).</summary>
    private void OnMapChanged(ShardMap map, ShardMap? previous)
    {
        foreach (var (address, pool) in _peers)
        {
            var present = false;
            foreach (var member in map.Members)
            {
                present |= string.Equals(member.Address, address, StringComparison.Ordinal);
            }

            if (!present && _peers.TryRemove(address, out _))
            {
                pool?.Dispose();
            }
        }
    }

    private async Task RunAsync(ConnectionContext connection, ConnectionDelegate next)
    {
        bool handOver;
        var session = new Session(this, connection);
        try
        {
            handOver = await session.RunAsync().ConfigureAwait(false);
        }
        finally
        {
            session.Dispose();
        }

        if (handOver)
        {
            await next(connection).ConfigureAwait(false);
        }
    }

    private MapView? StateFor(ShardMap? map) => map is null || map.IsEmpty ? null : _views.For(map);

    /// <summary>A request that qualified, as far as the async part needs it (the parsed head is a ref struct).</summary>
    private struct Accepted
    {
        public MapView State;
        public ShardMember Owner;
        public bool IsPeer;
        public UpstreamConnectionPool Pool;
        public int Hop;
        public long SenderGeneration;
        public ulong Hash;
        public bool HasKey;
        public long ContentLength;
        public bool IsHead;
        public bool Close;
        public int UpstreamLength;
    }

    /// <summary>One client connection on the fast path.</summary>
    private sealed class Session : IDisposable
    {
        private readonly Http1FastPath _owner;
        private readonly ConnectionContext _connection;
        private readonly PipeReader _input;
        private readonly PipeWriter _output;
        private readonly CancellationTokenSource _cts;
        private readonly ConnectionState? _connectionState;
        private readonly IConnectionLifetimeNotificationFeature? _lifetime;
        private readonly byte[] _forwardedFor;

        // The client connection's event loop. The first request is often read on the thread that started the session (its
        // bytes came with the connection), not on the loop: renting there would put the app connection or the tunnel on
        // another loop, and every request of the session would then wake two loop threads, and flush its tunnel at once.
        private readonly EpollLoop? _loop;
        private CancellationTokenRegistration _closeRequested;
        private byte[] _headBytes = ArrayPool<byte>.Shared.Rent(4096);
        private char[] _headChars = ArrayPool<char>.Shared.Rent(4096);
        private byte[] _sendBuffer = ArrayPool<byte>.Shared.Rent(8192);
        private readonly HeaderLine[] _headers = ArrayPool<HeaderLine>.Shared.Rent(RequestHead.MaxHeaders);
        private readonly Exchange _exchange = new();

        // Cancels a read of the request body that makes the body slower than Kestrel's MinRequestBodyDataRate (linked to
        // _cts; one per connection, made at its first body that is read at a pause, its timer reused).
        private CancellationTokenSource? _bodyRate;
        private UpstreamConnection? _upstream;
        private UpstreamConnectionPool? _upstreamPool;

        // An exchange began and has not finished cleanly: its app connection may be mid-request, never to be reused.
        private bool _exchanging;

        public Session(Http1FastPath owner, ConnectionContext connection)
        {
            _owner = owner;
            _connection = connection;
            _input = connection.Transport.Input;
            _output = connection is EpollConnection epoll ? new DirectOutput(epoll, connection.Transport.Output) : connection.Transport.Output;
            _loop = connection.Features.Get<EpollLoop>(); // a link stream's: its link's
            _cts = CancellationTokenSource.CreateLinkedTokenSource(connection.ConnectionClosed);
            _connectionState = connection.Features.Get<ConnectionState>();
            _lifetime = connection.Features.Get<IConnectionLifetimeNotificationFeature>();
            var remote = ClientAddress.Of(connection.RemoteEndPoint)?.ToString();
            if (_connectionState is not null)
            {
                _connectionState.RemoteAddressText ??= remote;
            }

            _forwardedFor = remote is null ? [] : Encoding.ASCII.GetBytes(remote);
            if (_lifetime is not null)
            {
                // A graceful close (drain, max age, shutdown) while waiting for the next request ends the wait.
                _closeRequested = _lifetime.ConnectionClosedRequested.UnsafeRegister(static state => ((PipeReader)state!).CancelPendingRead(), _input);
            }
        }

        private bool CloseRequested => _lifetime?.ConnectionClosedRequested.IsCancellationRequested == true;

        /// <summary>Serves requests until one does not qualify (true: hand the connection to Kestrel) or the connection ends.</summary>
        public async Task<bool> RunAsync()
        {
            // TryRead sees bytes that were examined but not consumed too: after a partial head, wait for more instead.
            var partialHead = false;

            // Bounded by the connection: every turn serves one request or ends.
            while (true)
            {
                if (CloseRequested)
                {
                    return false;
                }

                ReadResult result;
                try
                {
                    if (partialHead || !_input.TryRead(out result))
                    {
                        if (!partialHead)
                        {
                            _cts.CancelAfter(_owner._limits.KeepAliveTimeout);
                        }

                        result = await _input.ReadAsync(_cts.Token).ConfigureAwait(false);
                    }
                }
                catch (Exception ex) when (ex is OperationCanceledException or IOException)
                {
                    return false; // idle too long, or the connection closed (or was reset)
                }

                var buffer = result.Buffer;
                if (result.IsCanceled)
                {
                    _input.AdvanceTo(buffer.Start);
                    if (CloseRequested)
                    {
                        return false;
                    }

                    continue;
                }

                if (buffer.IsEmpty && result.IsCompleted)
                {
                    _input.AdvanceTo(buffer.End);
                    return false;
                }

                var headLength = FindHeadEnd(buffer);
                if (headLength < 0)
                {
                    if (buffer.Length > MaxRequestHeadBytes || result.IsCompleted)
                    {
                        _input.AdvanceTo(buffer.Start);
                        return HandOver(SidecarMetricNames.HandoverHeadSize); // Kestrel answers (431, 400) or sees the connection end
                    }

                    _input.AdvanceTo(buffer.Start, buffer.End);
                    if (!partialHead)
                    {
                        // Kestrel's deadline for the whole head, from its first bytes: more bytes must not move it, or a client
                        // sending a byte now and then (slowloris) would hold the connection for as long as it likes.
                        _cts.CancelAfter(_owner._limits.RequestHeadersTimeout);
                        partialHead = true;
                    }

                    continue;
                }

                partialHead = false;
                Accepted request = default;
                var reason = headLength > MaxRequestHeadBytes ? SidecarMetricNames.HandoverHeadSize : TryAccept(buffer, headLength, out request);
                if (reason is null && _upstream is { Requests: > 0 } kept
                    && (request.ContentLength > 0 || _owner._time.GetElapsedTime(kept.IdleSince) >= UncheckedIdle)
                    && !kept.IsOpen())
                {
                    // The kept connection has something to read: the app closed it while idle, or wrote bytes after its last
                    // response (a body on a HEAD or 204 answer, more than its Content-Length), which would be read as the
                    // start of this request's response. A body cannot be sent twice, so a body request always checks; a
                    // bodiless one checks after a pause, as the full path's client does (one closed at once is retried).
                    DropUpstream();
                }

                if (reason is null && (_upstream is null || !ReferenceEquals(_upstreamPool, request.Pool)))
                {
                    // Connect before taking the request: when the app or the owner is down, the full path answers it from its
                    // first byte (retries, circuit breaker, 503).
                    ReturnUpstream();
                    try
                    {
                        _upstream = await request.Pool!.RentAsync(_cts.Token, loop: _loop).ConfigureAwait(false);
                        _upstreamPool = request.Pool;
                    }
                    catch (Exception ex) when (ex is SocketException || (ex is OperationCanceledException && !_cts.IsCancellationRequested))
                    {
                        reason = SidecarMetricNames.HandoverConnect;
                    }
                }

                if (reason is not null)
                {
                    _input.AdvanceTo(buffer.Start);
                    return HandOver(reason);
                }

                // The head is copied (TryAccept built the app's head from it): consume it, the body stays in the pipe.
                _input.AdvanceTo(buffer.GetPosition(headLength));

                // The exchange is served here, not in a method of its own: its wait for the app's answer is then this
                // session-long state machine's, so a request boxes no state machine and resumes one, not four.
                var exchange = _exchange;
                var stream = BeginExchange(request);
                bool keepGoing;
                try
                {
                    try
                    {
                        if (stream.EndRequested)
                        {
                            exchange.Failure = Failure.Drained;
                        }
                        else
                        {
                            _cts.CancelAfter(ResponseHeadersTimeout);
                            var start = Stopwatch.GetTimestamp();
                            if (await SendRequestHeadAsync(exchange).ConfigureAwait(false))
                            {
                                // With the whole request sent, the app's first bytes are waited for here: the relay then
                                // completes at once (with a body still to send, it waits itself, sending the body meanwhile).
                                var app = _upstream!;
                                var answered = true;
                                if (exchange.BodySent == request.ContentLength && app.Pending.IsEmpty)
                                {
                                    try
                                    {
                                        await app.WaitReceivableAsync(_cts.Token).ConfigureAwait(false);
                                    }
                                    catch (Exception ex) when (IsReceiveError(ex, exchange, Failure.AppError))
                                    {
                                        answered = false;
                                    }
                                }

                                if (answered)
                                {
                                    await RelayRestAsync(exchange, stream, app, start).ConfigureAwait(false);
                                }
                            }
                        }
                    }
                    catch (OperationCanceledException)
                    {
                        OnCanceled(exchange, stream);
                    }
                    finally
                    {
                        EndRelay(exchange, stream);
                    }

                    keepGoing = await FinishAsync(exchange, stream).ConfigureAwait(false);
                    _exchanging = false;
                }
                finally
                {
                    _owner._streams.End(stream);
                }

                if (!keepGoing)
                {
                    return false;
                }
            }
        }

        private bool HandOver(string reason)
        {
            _owner._metrics.FastPathHandover(reason);
            return true;
        }

        private static int FindHeadEnd(in ReadOnlySequence<byte> buffer)
        {
            if (buffer.IsSingleSegment)
            {
                var index = buffer.FirstSpan.IndexOf("\r\n\r\n"u8);
                return index < 0 ? -1 : index + 4;
            }

            var reader = new SequenceReader<byte>(buffer);
            return reader.TryReadTo(out ReadOnlySequence<byte> _, "\r\n\r\n"u8, advancePastDelimiter: true) ? (int)reader.Consumed : -1;
        }

        /// <summary>Parses and routes the head; when it qualifies, writes the app's head into the upstream buffer.</summary>
        /// <returns>Null when it qualifies, else why not (a handover reason).</returns>
        private string? TryAccept(in ReadOnlySequence<byte> buffer, int headLength, out Accepted request)
        {
            request = default;
            if (headLength > _headBytes.Length)
            {
                Grow(ref _headBytes, headLength);
                Grow(ref _headChars, headLength);
            }

            var bytes = _headBytes.AsSpan(0, headLength);
            buffer.Slice(0, headLength).CopyTo(bytes);
            if (!System.Text.Unicode.Utf8.IsValid(bytes))
            {
                return SidecarMetricNames.HandoverProtocol; // Kestrel decodes header values as UTF-8 (and refuses what is not)
            }

            var chars = _headChars.AsSpan(0, headLength);
            Encoding.Latin1.GetChars(bytes, chars);
            var headers = _headers.AsSpan(0, RequestHead.MaxHeaders);
            if (!RequestHead.TryParse(chars, headers, out var head))
            {
                return SidecarMetricNames.HandoverProtocol;
            }

            if (head.RequestLineEnd > _owner._limits.MaxRequestLineSize)
            {
                return SidecarMetricNames.HandoverHeadSize; // Kestrel answers 414
            }

            var state = _owner.StateFor(_owner._store.Current);
            if (state?.Self is not { } self)
            {
                return SidecarMetricNames.HandoverNoMap; // the full path answers
            }

            request.State = state;
            request.Owner = self;
            request.SenderGeneration = -1;
            Span<char> key = stackalloc char[ShardKeyExtractor.MaxKeyLength];
            int keyLength;
            if (head.HopIndex >= 0)
            {
                // From another sidecar: served here only when its proof verifies on a map at least as new as the sender's and
                // the key is this pod's; anything else (403, skew wait, one more hop, loop 503) is the full path's.
                if (!TryVerifyForward(head, headers, state, key, out keyLength, out request.Hop, out request.SenderGeneration))
                {
                    return SidecarMetricNames.HandoverForwarded;
                }

                if (keyLength > 0)
                {
                    request.Hash = XxHash64.HashUtf8(key[..keyLength]);
                    request.HasKey = true;
                    if (!ReferenceEquals(state.Map.OwnerOf(request.Hash), self))
                    {
                        return SidecarMetricNames.HandoverForwarded;
                    }
                }
            }
            else
            {
                var keyRequest = new RequestHeadKeyRequest(head, headers);
                switch (state.Extractor.TryExtract(ref keyRequest, key, out keyLength))
                {
                    case ShardKeyStatus.Found:
                        request.Hash = XxHash64.HashUtf8(key[..keyLength]);
                        request.HasKey = true;
                        if (state.Map.OwnerOf(request.Hash) is { } owner && !ReferenceEquals(owner, self))
                        {
                            if (!_owner._options.Http1FastPathForwards
                                || (_owner._circuits.StateOf(owner.Name) is { } circuit && circuit != Polly.CircuitBreaker.CircuitState.Closed)
                                || _owner.PeerPool(owner) is not { } peer)
                            {
                                return SidecarMetricNames.HandoverNotOwner; // the full path answers 503 for an open circuit, or resolves the name
                            }

                            request.Owner = owner;
                            request.IsPeer = true;
                            request.Pool = peer;
                        }

                        break;
                    case ShardKeyStatus.NotFound when state.NoKeyServedHere:
                        break;
                    default:
                        return SidecarMetricNames.HandoverKey; // JSON body rule, too long, or a no-key answer: the full path's messages
                }
            }

            request.Pool ??= _owner._appPool;
            request.ContentLength = head.ContentLength < 0 ? 0 : head.ContentLength;
            request.IsHead = head.Method.SequenceEqual("HEAD");
            request.Close = (head.Traits & RequestTraits.Close) != 0;
            if (!request.IsPeer)
            {
                request.UpstreamLength = WriteUpstreamHead(head, headers, state.AppHeaders);
                return null;
            }

            var needed = PeerHeadersLength(state, keyLength);
            var rented = needed > 1024 ? ArrayPool<byte>.Shared.Rent(needed) : null;
            var peerHeaders = rented ?? stackalloc byte[1024];
            request.UpstreamLength = WriteUpstreamHead(head, headers, peerHeaders[..WritePeerHeaders(state, key[..keyLength], peerHeaders)]);
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }

            return null;
        }

        /// <summary>Checks a forward from another sidecar the way the full path does (ShardRouter.DecideForwarded).</summary>
        private bool TryVerifyForward(
            in RequestHead head, ReadOnlySpan<HeaderLine> headers, MapView state, Span<char> key, out int keyLength, out int hop, out long senderGeneration)
        {
            keyLength = 0;
            senderGeneration = -1;
            hop = 0;
            if (!int.TryParse(head.Value(headers[head.HopIndex]), NumberStyles.None, CultureInfo.InvariantCulture, out hop)
                || hop is < 1 or > ShardRouter.MaxHops
                || head.SenderGenerationIndex < 0
                || !long.TryParse(head.Value(headers[head.SenderGenerationIndex]), NumberStyles.None, CultureInfo.InvariantCulture, out senderGeneration)
                || senderGeneration > state.Map.Generation
                || (head.KeyIndex >= 0 && !KeyHeader.TryDecode(head.Value(headers[head.KeyIndex]), key, out keyLength))
                || head.ProofIndex < 0)
            {
                return false;
            }

            return _owner._proof.Verify(head.Value(headers[head.ProofIndex]), key[..keyLength], senderGeneration, hop) == ProofResult.Valid;
        }

        private static int PeerHeadersLength(MapView state, int keyLength) =>
            PeerHeaderNames.Length + state.GenerationText.Length + KeyHeader.MaxEncodedLength(keyLength) + ForwardingProof.MaxLength + 8;

        private static ReadOnlySpan<byte> PeerHeaderNames =>
            "x-sharding-hop: 1\r\nx-sharding-generation: \r\nx-sharding-key: \r\nx-sharding-proof: \r\n"u8;

        /// <summary>The internal headers of a first hop: hop 1, this map's generation, the key and its proof (no allocation).</summary>
        private int WritePeerHeaders(MapView state, ReadOnlySpan<char> key, Span<byte> destination)
        {
            var n = 0;
            Append(destination, ref n, "x-sharding-hop: 1\r\nx-sharding-generation: "u8);
            n += Encoding.ASCII.GetBytes(state.GenerationText, destination[n..]);
            Append(destination, ref n, "\r\nx-sharding-key: "u8);
            n += KeyHeader.Write(key, destination[n..]);
            Append(destination, ref n, "\r\nx-sharding-proof: "u8);
            n += _owner._proof.Write(key, state.Map.Generation, hop: 1, destination[n..]);
            Append(destination, ref n, "\r\n"u8);
            return n;
        }

        /// <summary>The head for the app or the owner's sidecar: the client's, minus hop-by-hop and internal headers, plus
        /// <c>x-forwarded-*</c> and the sidecar's <paramref name="sidecarHeaders"/>.</summary>
        private int WriteUpstreamHead(in RequestHead head, ReadOnlySpan<HeaderLine> headers, ReadOnlySpan<byte> sidecarHeaders)
        {
            var needed = head.Text.Length + _forwardedFor.Length + sidecarHeaders.Length + 128
                + (head.HostIndex >= 0 ? headers[head.HostIndex].ValueLength : 0);
            if (needed + CoalescedBodyBytes > _sendBuffer.Length)
            {
                Grow(ref _sendBuffer, needed + CoalescedBodyBytes);
            }

            var source = _headBytes.AsSpan();
            var destination = _sendBuffer.AsSpan();
            var written = 0;
            Append(destination, ref written, source[..head.RequestLineEnd]);
            var connection = head.ConnectionIndex >= 0 && (head.Traits & RequestTraits.ConnectionTokens) != 0
                ? head.Value(headers[head.ConnectionIndex])
                : [];
            for (var i = 0; i < head.HeaderCount; i++)
            {
                ref readonly var line = ref headers[i];
                var name = head.Name(line);
                // The full path's rules (HeaderRules), except that Host is copied as it is rather than set separately (so the
                // Connection header cannot take it away either, as it cannot take the body's framing).
                if (i == head.ForwardedForIndex || (i != head.HostIndex && !HeaderRules.ShouldCopyRequestHeader(name, isUpgrade: false))
                    || (!connection.IsEmpty && i != head.HostIndex && !HeaderRules.IsFraming(name) && HeaderTokens.Contains(connection, name)))
                {
                    continue;
                }

                Append(destination, ref written, source[line.LineStart..line.LineEnd]);
            }

            if ((head.Traits & RequestTraits.TeTrailers) != 0)
            {
                Append(destination, ref written, "te: trailers\r\n"u8);
            }

            // A client's x-forwarded-* that its Connection header names was dropped above (hop-by-hop): ours replaces it.
            if (_forwardedFor.Length > 0)
            {
                Append(destination, ref written, "x-forwarded-for: "u8);
                if (head.ForwardedForIndex >= 0 && !Named(connection, "x-forwarded-for"))
                {
                    ref readonly var existing = ref headers[head.ForwardedForIndex];
                    Append(destination, ref written, source.Slice(existing.ValueStart, existing.ValueLength));
                    Append(destination, ref written, ", "u8);
                }

                Append(destination, ref written, _forwardedFor);
                Append(destination, ref written, "\r\n"u8);
            }

            if ((head.Traits & RequestTraits.HasForwardedProto) == 0 || Named(connection, "x-forwarded-proto"))
            {
                Append(destination, ref written, "x-forwarded-proto: http\r\n"u8);
            }

            if ((head.Traits & RequestTraits.HasForwardedHost) == 0 || Named(connection, "x-forwarded-host"))
            {
                ref readonly var host = ref headers[head.HostIndex];
                Append(destination, ref written, "x-forwarded-host: "u8);
                Append(destination, ref written, source.Slice(host.ValueStart, host.ValueLength));
                Append(destination, ref written, "\r\n"u8);
            }

            Append(destination, ref written, sidecarHeaders);
            Append(destination, ref written, "\r\n"u8);
            return written;
        }

        /// <summary>An accepted request's exchange begins: its stream is tracked (drains see it) and counted.</summary>
        private ShardRequestContext BeginExchange(in Accepted request)
        {
            var stream = new ShardRequestContext
            {
                KeyHash = request.Hash,
                HasKey = request.HasKey,
                Owner = request.Owner,
                Map = request.State.Map,
                Kind = request.IsPeer ? RouteKind.Peer : RouteKind.Local,
                Hop = request.Hop,
                SenderGeneration = request.SenderGeneration,
                ConnectionId = _connection.ConnectionId,
                Protocol = "HTTP/1.1",
            };
            _owner._streams.Begin(stream, _connectionState, StreamKind.None);
            _owner._metrics.StreamStarted();
            _exchange.Reset(request);
            _exchanging = true;
            stream.AttachCancellation(_cts);
            return stream;
        }

        private TimeSpan ResponseHeadersTimeout =>
            _owner._options.ResponseHeadersTimeout > TimeSpan.Zero ? _owner._options.ResponseHeadersTimeout : Timeout.InfiniteTimeSpan;

        /// <summary>The exchange's cancellation fired: a drain, the client's going, or a timeout.</summary>
        private void OnCanceled(Exchange exchange, ShardRequestContext stream)
        {
            // (The body's send may have ended with the client's going first: that failure stands.)
            if (exchange.Failure == Failure.None)
            {
                exchange.Failure = stream.EndRequested && stream.Drain is not null ? Failure.Drained
                    : _connection.ConnectionClosed.IsCancellationRequested ? Failure.ClientGone
                    : exchange.ResponseStarted ? Failure.Activity : Failure.Timeout;
            }
        }

        /// <summary>The relay is over (whatever its outcome): a drain can no longer cancel it; its stream and bytes are counted.</summary>
        private void EndRelay(Exchange exchange, ShardRequestContext stream)
        {
            stream.AttachCancellation(null);
            var metrics = _owner._metrics;
            metrics.StreamEnded();
            metrics.RequestBytes(exchange.BodySent);
            metrics.ResponseBytes(exchange.ResponseBytes);
        }

        /// <summary>The whole relay of a request (a retry's, see <see cref="FinishAsync"/>; the first is in <see cref="RunAsync"/>).</summary>
        private async ValueTask RelayAsync(Exchange exchange, ShardRequestContext stream)
        {
            var start = Stopwatch.GetTimestamp();
            if (await SendRequestHeadAsync(exchange).ConfigureAwait(false))
            {
                await RelayRestAsync(exchange, stream, _upstream!, start).ConfigureAwait(false);
            }
        }

        /// <summary>1. The head (with whatever body arrived with it) to the app, on this connection's app connection.</summary>
        private ValueTask<bool> SendRequestHeadAsync(Exchange exchange)
        {
            // (A retry sends the first attempt's bytes again: they are still in the send buffer, the body's with them.)
            var request = exchange.Request;
            var upstreamLength = exchange.Retried ? exchange.SentLength : request.UpstreamLength + TakeBodyPrefix(exchange, request.UpstreamLength);
            exchange.SentLength = upstreamLength;
            return SendHeadAsync(exchange, upstreamLength);
        }

        /// <summary>Steps 2 to 4, once the head went: the rest of the body, and the app's response to the client.</summary>
        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
        private async ValueTask RelayRestAsync(Exchange exchange, ShardRequestContext stream, UpstreamConnection app, long start)
        {
            // 2. The rest of the body streams while the response is read: an app may answer before the body ended (a 413, a
            // 401) or answer as it reads (an echo, a streaming transform), and waiting for the whole body first would stall
            // both ends once the socket buffers fill.
            var request = exchange.Request;
            var body = exchange.BodySent < request.ContentLength ? SendBodyAsync(exchange, app) : new ValueTask<BodyOutcome>(BodyOutcome.Sent);
            var responded = false;
            try
            {
                await RelayResponseAsync(exchange, stream, app, start).ConfigureAwait(false);
                responded = exchange.Failure == Failure.None;
            }
            finally
            {
                await JoinBodyAsync(exchange, body, app, responded).ConfigureAwait(false);
            }
        }

        /// <summary>Steps 3 and 4 of <see cref="RelayRestAsync"/>: the app's response to the client.</summary>
        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
        private async ValueTask RelayResponseAsync(Exchange exchange, ShardRequestContext stream, UpstreamConnection app, long start)
        {
            var request = exchange.Request;
            var owner = _owner;

            // 3. The response head (1xx interim responses are dropped, as the full path's HTTP client does).
            ResponseHead response;
            int headLength;

            // Bounded: each turn reads more bytes (up to the head limit) or ends.
            while (true)
            {
                headLength = app.Pending.IndexOf("\r\n\r\n"u8);
                if (headLength >= 0)
                {
                    headLength += 4;
                    if (!ResponseHead.TryParse(app.Pending[..headLength], request.IsHead, out response))
                    {
                        exchange.Failure = Failure.BadResponse;
                        return;
                    }

                    if (response.StatusCode is >= 100 and < 200 and not 101)
                    {
                        app.Start += headLength;
                        continue;
                    }

                    if (response.StatusCode == 101)
                    {
                        exchange.Failure = Failure.BadResponse; // no upgrade was asked for
                        return;
                    }

                    break;
                }

                var read = await ReceiveAsync(app, exchange, Failure.AppError).ConfigureAwait(false);
                if (read == Failed)
                {
                    return;
                }

                if (read == 0)
                {
                    exchange.Failure = exchange.CanRetry(app) ? Failure.Stale : Failure.AppError;
                    return;
                }
            }

            owner._metrics.ForwardDuration(local: !request.IsPeer, start);
            if (request.IsPeer)
            {
                owner._resilience.RecordReached(request.Owner!.Name);
            }

            var activity = owner._options.ActivityTimeout;
            lock (exchange)
            {
                exchange.HeadReceived = true; // the body's sends stop pushing the headers deadline (PushHeadersDeadline)
                _cts.CancelAfter(activity > TimeSpan.Zero ? activity : Timeout.InfiniteTimeSpan);
            }

            if (response.IsEventStream)
            {
                owner._streams.MarkStreaming(stream, StreamKind.Sse);
            }

            // 4. The head to the client, with the body bytes that came with it, in one write.
            exchange.Response = response;
            // An app that closes its connection while the body is still coming will not read the rest: the client's connection
            // cannot go on after this response either (the rest of its body would be read as a request).
            exchange.Close |= request.Close || response.Framing == BodyFraming.UntilClose || CloseRequested
                || (response.UpstreamClose && exchange.BodyOutcome == BodyOutcome.Pending);
            var headSpan = app.Pending[..headLength];
            // The owner's sidecar adds its own x-sharding-owner/generation; this pod's app gets ours.
            var sidecarHeaders = request.IsPeer ? [] : request.State.ResponseHeaders;
            var maxHead = headSpan.Length + sidecarHeaders.Length + 32;
            var destination = _output.GetSpan(maxHead);
            var written = ResponseHead.WriteForClient(headSpan, sidecarHeaders, exchange.Close, request.IsPeer, destination);
            if (written < 0)
            {
                exchange.Failure = Failure.BadResponse;
                return;
            }

            _output.Advance(written);
            app.Start += headLength;
            exchange.ResponseStarted = true;
            stream.ResponseStarted = true;
            await CopyResponseBodyAsync(exchange).ConfigureAwait(false);
        }

        private static void Grow<T>(ref T[] array, int atLeast)
        {
            var larger = ArrayPool<T>.Shared.Rent(atLeast);
            ArrayPool<T>.Shared.Return(array);
            array = larger;
        }

        /// <summary>Body bytes already in the pipe go in the head's write (up to <see cref="CoalescedBodyBytes"/>).</summary>
        private int TakeBodyPrefix(Exchange exchange, int offset)
        {
            if (exchange.Request.ContentLength == 0 || !_input.TryRead(out var result))
            {
                return 0;
            }

            var take = (int)Math.Min(Math.Min(result.Buffer.Length, exchange.Request.ContentLength), CoalescedBodyBytes);
            result.Buffer.Slice(0, take).CopyTo(_sendBuffer.AsSpan(offset));
            _input.AdvanceTo(result.Buffer.GetPosition(take));
            exchange.BodySent += take;
            return take;
        }

        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
        private async ValueTask<bool> SendHeadAsync(Exchange exchange, int length)
        {
            // Bounded: at most one retry, on a new connection, when a kept-alive one turns out closed.
            for (var attempt = 0; ; attempt++)
            {
                try
                {
                    if (_upstream is null)
                    {
                        _upstream = await exchange.Request.Pool.RentAsync(_cts.Token, loop: _loop).ConfigureAwait(false);
                        _upstreamPool = exchange.Request.Pool;
                    }
                }
                catch (Exception ex) when (ex is SocketException || (ex is OperationCanceledException && !_cts.IsCancellationRequested))
                {
                    exchange.Failure = Failure.AppUnavailable;
                    exchange.Error = ex;
                    return false;
                }

                try
                {
                    _upstream.BeginExchange();
                    await _upstream.SendAsync(_sendBuffer.AsMemory(0, length), _cts.Token).ConfigureAwait(false);
                    return true;
                }
                catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
                {
                    var used = _upstream.Requests > 0 || _upstream.WasRefused; // a refused tunnel never took the request either
                    DropUpstream();
                    if (!used || attempt > 0)
                    {
                        exchange.Failure = Failure.AppError;
                        exchange.Error = ex;
                        return false;
                    }
                }
            }
        }

        /// <summary>
        /// Sends the rest of the client's body to the upstream, concurrently with the response's relay. It touches only the
        /// client's input, the upstream's send side and the exchange's body fields, and never throws: its outcome is merged by
        /// <see cref="JoinBodyAsync"/>.
        /// </summary>
        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
        private async ValueTask<BodyOutcome> SendBodyAsync(Exchange exchange, UpstreamConnection app)
        {
            var length = exchange.Request.ContentLength;
            exchange.BodyOutcome = BodyOutcome.Pending;
            BodyOutcome outcome;
            try
            {
                outcome = await SendBodyCoreAsync(exchange, app, length).ConfigureAwait(false);
            }
            catch (OperationCanceledException ex)
            {
                // The body's own rate deadline, not the exchange's: the client sends too slowly.
                var tooSlow = _bodyRate?.IsCancellationRequested == true && !_cts.IsCancellationRequested && !exchange.StopBody;
                (outcome, exchange.BodyError) = (tooSlow ? BodyOutcome.TooSlow : BodyOutcome.Canceled, ex);
            }
            catch (Exception ex) when (ex is IOException or InvalidOperationException)
            {
                // The client's connection was reset while its body was read.
                (outcome, exchange.BodyError) = (BodyOutcome.ClientGone, ex);
            }

            if (outcome is BodyOutcome.ClientGone or BodyOutcome.TooSlow)
            {
                app.Abort(); // the app waits for the rest of a body that will not come: end the response's wait as well
            }

            exchange.BodyOutcome = outcome;
            return outcome;
        }

        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
        private async ValueTask<BodyOutcome> SendBodyCoreAsync(Exchange exchange, UpstreamConnection app, long length)
        {
            // Kestrel's MinRequestBodyDataRate, as on the full path: counting only the time spent waiting for the client (not
            // for the app to take what came), the body must have reached the rate once the grace period is over.
            var rate = _owner._limits.MinRequestBodyDataRate;
            var waited = TimeSpan.Zero;

            // Bounded by the body: each turn sends at least one byte or ends.
            while (exchange.BodySent < length)
            {
                ReadResult result;
                if (rate is null)
                {
                    result = await _input.ReadAsync(_cts.Token).ConfigureAwait(false);
                }
                else if (!_input.TryRead(out result))
                {
                    var started = _owner._time.GetTimestamp();
                    result = await ReadBodyAtMinimumRateAsync(rate, exchange.BodySent, waited).ConfigureAwait(false);
                    waited += _owner._time.GetElapsedTime(started);
                }

                var buffer = result.Buffer;
                if (exchange.StopBody)
                {
                    _input.AdvanceTo(buffer.Start);
                    return BodyOutcome.Stopped;
                }

                if (buffer.IsEmpty && result.IsCompleted)
                {
                    _input.AdvanceTo(buffer.End);
                    return BodyOutcome.ClientGone;
                }

                var take = buffer.Slice(0, Math.Min(buffer.Length, length - exchange.BodySent));
                var taken = take.Length; // a sequence's length is not readable after AdvanceTo (its segments go back to the pool)
                try
                {
                    foreach (var segment in take)
                    {
                        await app.SendAsync(segment, _cts.Token).ConfigureAwait(false);
                    }
                }
                catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
                {
                    _input.AdvanceTo(take.End);
                    exchange.BodyError = ex;
                    return exchange.StopBody ? BodyOutcome.Stopped : BodyOutcome.AppError;
                }

                _input.AdvanceTo(take.End);
                exchange.BodySent += taken;
                PushHeadersDeadline(exchange);
            }

            return BodyOutcome.Sent;
        }

        /// <summary>
        /// A read of the request body that may wait only as long as Kestrel's <see cref="KestrelServerLimits.MinRequestBodyDataRate"/>
        /// allows: in all, the grace period or the time <paramref name="bytes"/> take at the rate, whichever is longer, of
        /// which <paramref name="waited"/> was spent already. Throws <see cref="OperationCanceledException"/> when it runs out.
        /// </summary>
        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
        private async ValueTask<ReadResult> ReadBodyAtMinimumRateAsync(MinDataRate rate, long bytes, TimeSpan waited)
        {
            var limit = TimeSpan.FromSeconds(Math.Max(rate.GracePeriod.TotalSeconds, bytes / rate.BytesPerSecond)) - waited;
            var source = _bodyRate ??= CancellationTokenSource.CreateLinkedTokenSource(_cts.Token);
            source.CancelAfter(limit > TimeSpan.Zero ? limit : TimeSpan.FromTicks(1));
            try
            {
                return await _input.ReadAsync(source.Token).ConfigureAwait(false);
            }
            finally
            {
                source.CancelAfter(Timeout.InfiniteTimeSpan);
            }
        }

        /// <summary>
        /// The body's progress pushes the response-headers deadline back until the response head came, as on the full path: it
        /// bounds the app's answer, not the upload (a slow client's large upload is not cut with a 504 while it flows).
        /// </summary>
        private void PushHeadersDeadline(Exchange exchange)
        {
            var options = _owner._options;
            if (options.ResponseHeadersTimeout <= TimeSpan.Zero || options.ActivityTimeout > TimeSpan.Zero)
            {
                return;
            }

            lock (exchange)
            {
                if (!exchange.HeadReceived)
                {
                    _cts.CancelAfter(options.ResponseHeadersTimeout);
                }
            }
        }

        /// <summary>
        /// Waits for the body's send to end and merges its outcome. After a whole response the rest of the body still goes to
        /// the app while it takes some at least every <see cref="BodyAfterResponseStall"/> (an app may answer first and read
        /// on); after a failed one, or once the app stops taking it, the send is stopped and both connections are not reused.
        /// </summary>
        private async ValueTask JoinBodyAsync(Exchange exchange, ValueTask<BodyOutcome> body, UpstreamConnection app, bool responded)
        {
            BodyOutcome outcome;
            if (body.IsCompleted)
            {
                outcome = body.Result;
            }
            else if (!responded)
            {
                StopBody(exchange, app);
                outcome = await body.ConfigureAwait(false);
            }
            else
            {
                var pending = body.AsTask(); // allocates, but only when the app answered in full before the body ended
                // Bounded: each turn waits for the body to end or to make progress, else stops it.
                while (true)
                {
                    var before = Volatile.Read(ref exchange.BodySent);
                    try
                    {
                        outcome = await pending.WaitAsync(BodyAfterResponseStall, _owner._time).ConfigureAwait(false);
                        break;
                    }
                    catch (TimeoutException) when (Volatile.Read(ref exchange.BodySent) == before)
                    {
                        StopBody(exchange, app);
                        outcome = await pending.ConfigureAwait(false);
                        break;
                    }
                    catch (TimeoutException)
                    {
                        // Still taking the body: wait on.
                    }
                }
            }

            switch (outcome)
            {
                case BodyOutcome.Sent:
                    return;
                case BodyOutcome.ClientGone:
                    exchange.Failure = Failure.ClientGone;
                    exchange.Error ??= exchange.BodyError;
                    return;
                case BodyOutcome.TooSlow when !responded:
                    exchange.Failure = Failure.BodyTooSlow; // (the app's connection was aborted for it: not the app's failure)
                    exchange.Error = exchange.BodyError;
                    exchange.Close = true;
                    return;
            }

            // The app stopped taking the body (it answered early and closed, or stopped reading), or the exchange was
            // canceled: its answer, when whole, is the client's. The rest of the body stays unread, so the client's connection
            // closes after it, and the app's is not reused.
            exchange.BodyCut = true;
            exchange.Close = true;
        }

        private void StopBody(Exchange exchange, UpstreamConnection app)
        {
            exchange.StopBody = true;
            _input.CancelPendingRead(); // a read of the client's body returns at once
            app.Abort();                // a send the app does not take fails at once
        }

        /// <summary>Copies the body as it is, by its framing, flushing whenever the app's bytes run out.</summary>
        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
        private async ValueTask CopyResponseBodyAsync(Exchange exchange)
        {
            var app = _upstream!;
            var framing = exchange.Response.Framing;
            var remaining = framing == BodyFraming.Length ? exchange.Response.ContentLength : long.MaxValue;

            // Bounded by the body: each turn passes on at least one byte or ends.
            while (true)
            {
                var pending = app.Pending;
                if (!pending.IsEmpty && framing != BodyFraming.None)
                {
                    int take;
                    if (framing == BodyFraming.Chunked)
                    {
                        take = exchange.Chunks.Scan(pending);
                        if (take < 0 || !CopyChunked(exchange, pending[..take]))
                        {
                            exchange.Failure = Failure.AppBodyError;
                            return;
                        }
                    }
                    else
                    {
                        take = (int)Math.Min(pending.Length, remaining);
                        _output.Write(pending[..take]);
                    }

                    app.Start += take;
                    exchange.ResponseBytes += take;
                    remaining -= take;
                }

                var done = framing switch
                {
                    BodyFraming.None => true,
                    BodyFraming.Length => remaining == 0,
                    BodyFraming.Chunked => exchange.Chunks.IsDone,
                    _ => false,
                };
                if (done)
                {
                    if (!app.Pending.IsEmpty)
                    {
                        exchange.Response.UpstreamClose = true; // bytes after the response: the connection is not clean
                    }

                    await FlushAsync(exchange).ConfigureAwait(false);
                    return;
                }

                // More is coming: what arrived goes out before waiting for the app.
                if (!await FlushAsync(exchange).ConfigureAwait(false))
                {
                    return;
                }

                app.Start = app.End = 0;
                var read = await ReceiveAsync(app, exchange, Failure.AppBodyError).ConfigureAwait(false);
                if (read == Failed)
                {
                    return;
                }

                if (read == 0)
                {
                    if (framing == BodyFraming.UntilClose)
                    {
                        return; // the body ended with the app's close; the client's connection closes too (Close was set)
                    }

                    exchange.Failure = Failure.AppBodyError;
                    return;
                }

                _cts.CancelAfter(_owner._options.ActivityTimeout > TimeSpan.Zero ? _owner._options.ActivityTimeout : Timeout.InfiniteTimeSpan);
            }
        }

        /// <summary>
        /// Passes on scanned chunked bytes: chunks as they are; the trailer section held until it is whole, then written by
        /// the response headers' rules (as the full path's trailers: no hop-by-hop fields, no <c>x-sharding-*</c> from the app).
        /// </summary>
        /// <returns>False when the trailer section is larger than a response head may be.</returns>
        private bool CopyChunked(Exchange exchange, ReadOnlySpan<byte> scanned)
        {
            var trailersAt = exchange.Chunks.TrailersAt;
            if (trailersAt < 0)
            {
                _output.Write(scanned);
                return true;
            }

            _output.Write(scanned[..trailersAt]);
            var section = scanned[trailersAt..];
            if (!exchange.IsHoldingTrailers && exchange.Chunks.IsDone)
            {
                ResponseHead.WriteTrailersForClient(section, exchange.Request.IsPeer, _output); // the usual case: all in one read
                return true;
            }

            if (!exchange.HoldTrailers(section))
            {
                return false;
            }

            if (exchange.Chunks.IsDone)
            {
                ResponseHead.WriteTrailersForClient(exchange.HeldTrailers, exchange.Request.IsPeer, _output);
                exchange.ReleaseTrailers();
            }

            return true;
        }

        /// <summary>Receives more from the upstream: the byte count (0 at its end), or <see cref="Failed"/> with <paramref name="failure"/> set.</summary>
        /// <remarks>Synchronous when bytes are there: after <see cref="RunAsync"/>'s wait for the app's answer, the usual case.</remarks>
        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
        private async ValueTask<int> ReceiveAsync(UpstreamConnection upstream, Exchange exchange, Failure failure)
        {
            try
            {
                return await upstream.ReceiveAsync(_cts.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (IsReceiveError(ex, exchange, failure))
            {
                return Failed;
            }
        }

        private const int Failed = -1;

        /// <summary>Whether <paramref name="ex"/> is the upstream's failure (and then records it as <paramref name="failure"/>).</summary>
        private static bool IsReceiveError(Exception ex, Exchange exchange, Failure failure)
        {
            if (ex is not (SocketException or InvalidOperationException or ObjectDisposedException))
            {
                return false;
            }

            exchange.Failure = failure;
            exchange.Error = ex;
            return true;
        }

        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
        private async ValueTask<bool> FlushAsync(Exchange exchange)
        {
            try
            {
                var flush = _output.FlushAsync(_cts.Token);
                var result = flush.IsCompleted || _owner._limits.MinResponseDataRate is not { } rate
                    ? await flush.ConfigureAwait(false)
                    : await FlushAtMinimumRateAsync(flush, rate, exchange.ResponseBytes - exchange.FlushedBytes).ConfigureAwait(false);
                exchange.FlushedBytes = exchange.ResponseBytes;
                if (result.IsCompleted || result.IsCanceled)
                {
                    exchange.Failure = Failure.ClientGone;
                    return false;
                }

                return true;
            }
            catch (Exception ex) when (ex is IOException or InvalidOperationException or ConnectionResetException)
            {
                exchange.Failure = Failure.ClientGone;
                return false;
            }
        }

        /// <summary>
        /// A flush the client holds up (it is not reading): as Kestrel's <see cref="KestrelServerLimits.MinResponseDataRate"/>
        /// on the full path, it may take the grace period, or as long as the rate allows for its bytes, and then the connection
        /// is aborted. Without this a client that stops reading holds its connection, and the app's, for good.
        /// </summary>
        private async ValueTask<FlushResult> FlushAtMinimumRateAsync(ValueTask<FlushResult> flush, MinDataRate rate, long bytes)
        {
            var allowed = TimeSpan.FromSeconds(Math.Max(rate.GracePeriod.TotalSeconds, bytes / rate.BytesPerSecond));
            var pending = flush.AsTask(); // allocates, but only for a flush that did not complete at once
            try
            {
                return await pending.WaitAsync(allowed, _owner._time).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                Log.ResponseTooSlow(_owner._logger, rate.BytesPerSecond);
                _connection.Abort(new ConnectionAbortedException("The client read the response slower than the minimum data rate."));
                try
                {
                    // The abort ends the socket's output, and with it the flush.
                    await pending.WaitAsync(TimeSpan.FromSeconds(5), _owner._time).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is IOException or InvalidOperationException or OperationCanceledException or TimeoutException)
                {
                }

                return new FlushResult(isCanceled: false, isCompleted: true);
            }
        }

        /// <summary>After the relay: keep or drop the app connection, answer failures, count the outcome.</summary>
        private async ValueTask<bool> FinishAsync(Exchange exchange, ShardRequestContext stream)
        {
            var owner = _owner;
            var metrics = owner._metrics;
            var failure = exchange.Failure;
            if (failure == Failure.Stale)
            {
                // A kept-alive connection the app had closed, or a tunnel the owner ended: the request goes again on a new one.
                DropUpstream();
                exchange.Failure = Failure.None;
                exchange.Retried = true;
                _cts.CancelAfter(ResponseHeadersTimeout);
                try
                {
                    await RelayAsync(exchange, stream).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (exchange.Failure == Failure.None)
                {
                    exchange.Failure = _connection.ConnectionClosed.IsCancellationRequested ? Failure.ClientGone : Failure.Timeout;
                }

                failure = exchange.Failure == Failure.Stale ? Failure.AppError : exchange.Failure;
            }

            if (failure == Failure.None)
            {
                if (_upstream is { } app)
                {
                    app.Requests++;
                    app.IdleSince = owner._time.GetTimestamp();
                    if (exchange.Response.UpstreamClose || exchange.BodyCut)
                    {
                        DropUpstream();
                    }
                }

                metrics.Request(exchange.Request.IsPeer ? SidecarMetricNames.OutcomeForwarded : SidecarMetricNames.OutcomeLocal);
                metrics.FastPathServed();
                return !exchange.Close;
            }

            // Anything else leaves the app connection mid-exchange.
            DropUpstream();
            switch (failure)
            {
                case Failure.ClientGone:
                    metrics.Request(SidecarMetricNames.OutcomeClientAborted);
                    _connection.Abort(new ConnectionAbortedException("the client went away"));
                    return false;
                case Failure.Drained:
                    return await EndDrainedAsync(exchange, stream).ConfigureAwait(false);
            }

            if (exchange.ResponseStarted)
            {
                // A cut body must not look whole.
                metrics.Request(SidecarMetricNames.OutcomeUpstreamError);
                Log.RelayFailed(owner._logger, failure, exchange.Error);
                _connection.Abort(new ConnectionAbortedException("the app's response was cut"));
                return false;
            }

            // The same answers as the full path's (ShardRouter.CompleteAsync).
            var target = exchange.Request.Owner;
            var who = ForwardFailureText.Who(target, isLocal: !exchange.Request.IsPeer);
            var (status, outcome, message, retryAfter) = failure switch
            {
                Failure.AppUnavailable => (StatusCodes.Status503ServiceUnavailable, SidecarMetricNames.OutcomeOwnerUnavailable,
                    ForwardFailureText.Unavailable(who), owner._retryAfter),
                Failure.Timeout => (StatusCodes.Status504GatewayTimeout, SidecarMetricNames.OutcomeUpstreamError,
                    ForwardFailureText.TimedOut(who, owner._options.ResponseHeadersTimeout), null),
                Failure.BodyTooSlow => (StatusCodes.Status400BadRequest, SidecarMetricNames.OutcomeBadRequest,
                    "reading the request body failed", null), // the full path's answer to Kestrel's cut
                _ => (StatusCodes.Status502BadGateway, SidecarMetricNames.OutcomeUpstreamError,
                    ForwardFailureText.Failed(who, failure.ToString()), (byte[]?)null),
            };
            metrics.Request(outcome);
            Log.RelayFailed(owner._logger, failure, exchange.Error);

            // The rest of an unsent body is still in the pipe, or a timeout spent the connection's cancellation (it cannot
            // serve another request): the connection cannot go on, and the answer says so.
            var close = exchange.Close || exchange.BodySent < exchange.Request.ContentLength || _cts.IsCancellationRequested;
            await WriteSimpleResponseAsync(status, message, retryAfter, exchange.Request.State.ResponseHeaders, close).ConfigureAwait(false);
            return !close;
        }

        /// <summary>A drain (moved key, shutdown, max age) ended the request: like the full path's <see cref="StreamEnder"/>.</summary>
        private async ValueTask<bool> EndDrainedAsync(Exchange exchange, ShardRequestContext stream)
        {
            var order = stream.Drain!;
            _owner._metrics.Request(exchange.Request.IsPeer ? SidecarMetricNames.OutcomeForwarded : SidecarMetricNames.OutcomeLocal);
            if (!exchange.ResponseStarted)
            {
                // As the full path's StreamEnder: the key's new owner (else the routed one) and the routed generation.
                var headers = Encoding.Latin1.GetBytes(
                    $"x-sharding-owner: {order.NewOwner ?? exchange.Request.Owner.Name}\r\nx-sharding-generation: {exchange.Request.State.GenerationText}\r\n");
                await WriteSimpleResponseAsync(StatusCodes.Status503ServiceUnavailable, order.Message, "0"u8.ToArray(), headers, close: true).ConfigureAwait(false);
                return false;
            }

            if (exchange.Response.Framing == BodyFraming.Chunked && exchange.Chunks.AtBoundary)
            {
                _output.Write("0\r\n\r\n"u8);
                await FlushQuietlyAsync().ConfigureAwait(false);
                return false;
            }

            if (exchange.Response.Framing == BodyFraming.UntilClose)
            {
                await FlushQuietlyAsync().ConfigureAwait(false);
                return false; // closing is the end of such a body
            }

            _connection.Abort(new ConnectionAbortedException(order.Message));
            return false;
        }

        private async ValueTask WriteSimpleResponseAsync(int status, string message, byte[]? retryAfter, byte[]? sidecarHeaders, bool close)
        {
            var body = Encoding.UTF8.GetBytes(string.Concat(message, "\n"));
            var text = new StringBuilder(256)
                .Append(CultureInfo.InvariantCulture, $"HTTP/1.1 {status} {Microsoft.AspNetCore.WebUtilities.ReasonPhrases.GetReasonPhrase(status)}\r\n")
                .Append(CultureInfo.InvariantCulture, $"date: {_owner._time.GetUtcNow():r}\r\n")
                .Append("content-type: text/plain; charset=utf-8\r\n")
                .Append(CultureInfo.InvariantCulture, $"content-length: {body.Length}\r\n");
            _output.Write(Encoding.Latin1.GetBytes(text.ToString()));
            if (sidecarHeaders is not null)
            {
                _output.Write(sidecarHeaders);
            }

            if (retryAfter is not null)
            {
                _output.Write("retry-after: "u8);
                _output.Write(retryAfter);
                _output.Write("\r\n"u8);
            }

            if (close)
            {
                _output.Write("connection: close\r\n"u8);
            }

            _output.Write("\r\n"u8);
            _output.Write(body);
            await FlushQuietlyAsync().ConfigureAwait(false);
        }

        private async ValueTask FlushQuietlyAsync()
        {
            try
            {
                await _output.FlushAsync(_connection.ConnectionClosed).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or OperationCanceledException or InvalidOperationException)
            {
                // The client is gone; nothing to tell it.
            }
        }

        private void ReturnUpstream()
        {
            if (_upstream is { } upstream)
            {
                _upstream = null;
                _upstreamPool!.Return(upstream);
            }
        }

        private void DropUpstream()
        {
            _upstream?.Dispose();
            _upstream = null;
        }

        private static bool Named(ReadOnlySpan<char> connection, string name) => !connection.IsEmpty && HeaderTokens.Contains(connection, name);

        private static void Append(Span<byte> destination, ref int written, ReadOnlySpan<byte> bytes)
        {
            bytes.CopyTo(destination[written..]);
            written += bytes.Length;
        }

        public void Dispose()
        {
            _closeRequested.Dispose();
            _bodyRate?.Dispose();
            _cts.Dispose();
            _exchange.ReleaseTrailers();
            if (_exchanging)
            {
                DropUpstream();
            }
            else
            {
                ReturnUpstream();
            }

            (_output as DirectOutput)?.Release();
            ArrayPool<byte>.Shared.Return(_headBytes);
            ArrayPool<char>.Shared.Return(_headChars);
            ArrayPool<byte>.Shared.Return(_sendBuffer);
            ArrayPool<HeaderLine>.Shared.Return(_headers);
        }
    }

    private enum Failure
    {
        None,
        AppUnavailable,
        AppError,
        Stale,
        BadResponse,
        AppBodyError,
        Timeout,
        Activity,
        ClientGone,
        Drained,
        BodyTooSlow,
    }

    private enum BodyOutcome
    {
        Sent,
        Pending,
        ClientGone,
        AppError,
        Stopped,
        Canceled,
        TooSlow,
    }

    /// <summary>One request's progress through the relay (one per connection, reset for each request).</summary>
    private sealed class Exchange
    {
        public Accepted Request;
        public ResponseHead Response;
        public ChunkedScanner Chunks;
        public Failure Failure;
        public Exception? Error;
        public bool ResponseStarted;
        public bool Close;
        public bool Retried;

        /// <summary>The response head came (set under the exchange's lock: the headers deadline is no longer pushed).</summary>
        public bool HeadReceived;

        /// <summary>Sending the body failed; the app's early answer was relayed instead (its connection is not reused).</summary>
        public bool BodyCut;

        /// <summary>How the body's send (concurrent with the response's relay) ended; Pending while it runs.</summary>
        public BodyOutcome BodyOutcome;

        public Exception? BodyError;

        /// <summary>Set to end the body's send (the response failed, or the app stopped taking the body).</summary>
        public volatile bool StopBody;

        public long BodySent;
        public long ResponseBytes;

        /// <summary>The response bytes already flushed to the client (those after it are the pending flush's).</summary>
        public long FlushedBytes;

        // A chunked body's trailer section that came in more than one read, held until it is whole.
        private byte[]? _trailers;
        private int _trailersLength;

        public bool IsHoldingTrailers => _trailers is not null;

        public ReadOnlySpan<byte> HeldTrailers => _trailers.AsSpan(0, _trailersLength);

        public bool HoldTrailers(ReadOnlySpan<byte> bytes)
        {
            var needed = _trailersLength + bytes.Length;
            if (needed > UpstreamConnection.MaxHeadBytes)
            {
                return false;
            }

            var held = _trailersLength;
            if (_trailers is null || needed > _trailers.Length)
            {
                var larger = ArrayPool<byte>.Shared.Rent(Math.Max(needed, 1024));
                HeldTrailers.CopyTo(larger);
                ReleaseTrailers(); // (resets the length: the held count is kept above)
                _trailers = larger;
            }

            bytes.CopyTo(_trailers.AsSpan(held));
            _trailersLength = needed;
            return true;
        }

        public void ReleaseTrailers()
        {
            if (_trailers is { } trailers)
            {
                _trailers = null;
                ArrayPool<byte>.Shared.Return(trailers);
            }

            _trailersLength = 0;
        }

        /// <summary>The bytes of the first send: the head, and the body when it came with it (at most <see cref="CoalescedBodyBytes"/>).</summary>
        public int SentLength;

        /// <summary>
        /// The upstream ended before any of the response, and the request may go again on a new connection, once. After a
        /// kept-alive connection closed, only a bodiless request: the app may have read one with a body before it went. After
        /// a tunnel the owner refused or ended (<see cref="UpstreamConnection.WasRefused"/>), any request the first send
        /// carried whole: the owner says it processed nothing unanswered.
        /// </summary>
        public bool CanRetry(UpstreamConnection app) => !Retried && app.Pending.IsEmpty
            && (app.WasRefused ? SentLength == Request.UpstreamLength + Request.ContentLength : app.Requests > 0 && Request.ContentLength == 0);

        public void Reset(in Accepted request)
        {
            Request = request;
            Response = default;
            Chunks = default;
            Failure = Failure.None;
            Error = null;
            ResponseStarted = Close = Retried = BodyCut = StopBody = HeadReceived = false;
            BodyOutcome = BodyOutcome.Sent;
            BodyError = null;
            BodySent = ResponseBytes = FlushedBytes = 0;
            ReleaseTrailers();
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 900, EventName = "FastPathRelayFailed", Level = LogLevel.Warning, Message = "Fast-path relay failed: {Failure}")]
        public static partial void RelayFailed(ILogger logger, Failure failure, Exception? exception);

        [LoggerMessage(EventId = 902, EventName = "PeerLinkStreamFailed", Level = LogLevel.Warning, Message = "A peer link stream failed")]
        public static partial void LinkStreamFailed(ILogger logger, Exception exception);

        [LoggerMessage(EventId = 901, EventName = "FastPathResponseTooSlow", Level = LogLevel.Information,
            Message = "A client read its response slower than the minimum data rate ({BytesPerSecond} bytes/s): connection closed")]
        public static partial void ResponseTooSlow(ILogger logger, double bytesPerSecond);
    }
}

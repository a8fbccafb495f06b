using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Sharding.Sidecar.Hosting;
using Sharding.Sidecar.Transport;

namespace Sharding.Sidecar.PeerLink;

/// <summary>
/// One peer link (<see cref="LinkFrames"/>): a connection between two sidecars that carries many tunnels
/// (<see cref="LinkStream"/>), each one kept-alive HTTP/1.1 connection of the fast path. The forwarding sidecar opens it
/// (<see cref="ConnectAsync"/>) and its streams; the owner's sidecar accepts it (<see cref="Accept"/>) and serves each
/// stream as a client connection.
/// </summary>
/// <remarks>
/// Why: a forward is two relays, each with a receive and a send per direction. On a link, frames written while an event
/// loop handles a batch of events are sent once, at the end of the batch (<see cref="IEndOfBatch"/>), so under load the
/// sidecar-to-sidecar leg costs a fraction of a send and a receive per request instead of one each. Off the loop thread (no
/// epoll transport, a timer) a write is flushed at once. Frames are written under one lock; the reader runs on the
/// connection's loop and hands DATA to the streams without holding it.
/// </remarks>
internal sealed partial class LinkConnection : IEndOfBatch
{
    /// <summary>Each stream's receive window (SETTINGS_INITIAL_WINDOW_SIZE): what one tunnel may have in flight.</summary>
    public const int StreamWindow = 1 << 20;

    /// <summary>Streams one link carries at most; a forwarding sidecar opens plain connections beyond that.</summary>
    public const int MaxStreams = 1000;

    /// <summary>The connection-level receive window, replenished as DATA arrives (streams' windows bound what is held).</summary>
    private const int ConnectionWindow = 1 << 30;

    /// <summary>
    /// DATA written but not yet handed to the socket's pipe beyond which senders wait for a flush: with the socket backed up
    /// (the other sidecar reads slowly), the streams' windows alone would let up to 1 MiB per stream pile up here. Control
    /// frames (WINDOW_UPDATE, RST_STREAM, PING) are never held.
    /// </summary>
    internal const int MaxUnsentBytes = 1 << 20;

    private readonly ConnectionContext _connection;
    private readonly PipeReader _input;
    private readonly PipeWriter _output;
    private readonly EpollLoop? _loop;
    private readonly bool _isClient;
    private readonly Action<LinkStream>? _onStream;
    private readonly ILogger _logger;
    private readonly SidecarMetrics? _metrics;
    private readonly Lock _lock = new();
    private readonly Dictionary<int, LinkStream> _streams = [];
    private readonly TaskCompletionSource<bool> _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _nextStreamId = 1;
    private int _lastPeerStreamId;
    private long _sendWindow = LinkFrames.DefaultWindow;
    private int _peerInitialWindow = LinkFrames.DefaultWindow;
    private long _receivedUnacknowledged;
    private bool _flushScheduled;
    private bool _flushing;
    private bool _outputFull;
    private bool _goingAway;
    private bool _isClosed;

    private LinkConnection(ConnectionContext connection, EpollLoop? loop, bool isClient, Action<LinkStream>? onStream, SidecarMetrics? metrics, ILogger logger)
    {
        _metrics = metrics;
        _connection = connection;
        _input = connection.Transport.Input;
        _output = connection.Transport.Output;
        _loop = loop;
        _isClient = isClient;
        _onStream = onStream;
        _logger = logger;
    }

    /// <summary>Completes when the link has ended (its streams are reset by then).</summary>
    public Task Closed => _closed.Task;

    /// <summary>Whether new streams may be opened on it.</summary>
    public bool IsUsable
    {
        get
        {
            lock (_lock)
            {
                return CanOpenStream();
            }
        }
    }

    /// <summary>With the lock held: not closed or going away, below <see cref="MaxStreams"/>, stream ids left.</summary>
    private bool CanOpenStream() => !_isClosed && !_goingAway && _streams.Count < MaxStreams && _nextStreamId < int.MaxValue - 2;

    /// <summary>Streams open now.</summary>
    public int StreamCount
    {
        get
        {
            lock (_lock)
            {
                return _streams.Count;
            }
        }
    }

    /// <summary>
    /// Connects to another sidecar on <paramref name="loop"/> and waits for its first SETTINGS: null when it does not
    /// speak the link (an older version, which answered as a plain HTTP/2 server).
    /// </summary>
    public static async Task<LinkConnection?> ConnectAsync(
        EndPoint endPoint, EpollLoop loop, TimeSpan timeout, SidecarMetrics? metrics, ILogger logger, CancellationToken cancellationToken)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        linked.CancelAfter(timeout);
        var socket = await EpollSocket.ConnectAsync(endPoint, loop, linked.Token).ConfigureAwait(false);
        var connection = new EpollConnection(socket, MemoryPool<byte>.Shared, maxReadBufferSize: 1 << 20, maxWriteBufferSize: 1 << 20, logger);
        connection.Start();
        var link = new LinkConnection(connection, loop, isClient: true, onStream: null, metrics, logger);
        link.Start();
        bool speaksLink;
        try
        {
            speaksLink = await link._ready.Task.WaitAsync(linked.Token).ConfigureAwait(false);
        }
        catch
        {
            link.Close(null);
            await link.Closed.ConfigureAwait(false);
            throw;
        }

        if (!speaksLink)
        {
            link.Close(null);
            await link.Closed.ConfigureAwait(false);
            return null;
        }

        return link;
    }

    /// <summary>
    /// Serves a link another sidecar opened on <paramref name="connection"/> (its preface and first SETTINGS unread):
    /// <paramref name="onStream"/> gets each new stream, on the reading thread.
    /// </summary>
    public static LinkConnection Accept(ConnectionContext connection, EpollLoop? loop, Action<LinkStream> onStream, SidecarMetrics? metrics, ILogger logger)
    {
        var link = new LinkConnection(connection, loop, isClient: false, onStream, metrics, logger);
        link.Start();
        return link;
    }

    /// <summary>Opens a tunnel; null when the link takes no more streams (closed, going away, full).</summary>
    public LinkStream? TryOpenStream()
    {
        LinkStream stream;
        bool flushNow;
        lock (_lock)
        {
            if (!_isClient || !CanOpenStream())
            {
                return null;
            }

            stream = new LinkStream(this, _nextStreamId, _peerInitialWindow, _loop?.Inline ?? false);
            _nextStreamId += 2;
            _streams.Add(stream.Id, stream);
            _metrics?.PeerLinkStreams(outgoing: true, 1);
            var block = LinkFrames.ConnectHeaderBlock;
            block.CopyTo(BeginFrame(block.Length, LinkFrames.Headers, LinkFrames.FlagEndHeaders, stream.Id));
            _output.Advance(LinkFrames.HeaderLength + block.Length);
            flushNow = ScheduleFlush();
        }

        if (flushNow)
        {
            Flush();
        }

        return stream;
    }

    /// <summary>No new streams (shutdown, max age): a GOAWAY to the other side; the link closes when its last stream ends.</summary>
    public void GoAway()
    {
        bool flushNow;
        lock (_lock)
        {
            if (_isClosed || _goingAway)
            {
                return;
            }

            _goingAway = true;
            var payload = BeginFrame(8, LinkFrames.GoAway, 0, 0);
            BinaryPrimitives.WriteInt32BigEndian(payload, _lastPeerStreamId);
            BinaryPrimitives.WriteUInt32BigEndian(payload[4..], LinkFrames.NoError);
            _output.Advance(LinkFrames.HeaderLength + 8);
            flushNow = ScheduleFlush();
        }

        if (flushNow)
        {
            Flush();
        }

        CloseIfIdleAndGoingAway();
    }

    /// <summary>
    /// Ends the link: every stream is reset. Without an error the close is graceful: what was written is still sent, then
    /// the connection's FIN; with one, the connection is aborted. <see cref="Closed"/> completes once the reader has stopped.
    /// </summary>
    public void Close(Exception? error)
    {
        LinkStream[] streams;
        lock (_lock)
        {
            if (_isClosed)
            {
                return;
            }

            _isClosed = true;
            streams = [.. _streams.Values];
            _streams.Clear();
            _metrics?.PeerLinkStreams(_isClient, -streams.Length);
            if (error is null)
            {
                try
                {
                    _output.Complete(); // commits what is unflushed; the send loop sends it, then shuts the socket down
                }
                catch (InvalidOperationException)
                {
                    // Already completed by the transport.
                }
            }
        }

        var reason = error ?? new ConnectionAbortedException("the peer link closed");
        foreach (var stream in streams)
        {
            stream.OnReset(reason, refused: false);
        }

        _ready.TrySetResult(false);
        if (error is not null)
        {
            _connection.Abort(new ConnectionAbortedException("the peer link closed", error));
        }

        _input.CancelPendingRead(); // the reader stops, and it alone finishes the connection (it may be using its input)
    }

    /// <summary>After the reader stopped: the input is done with, the forwarding side's own connection is disposed.</summary>
    private async Task FinishAsync()
    {
        try
        {
            await _input.CompleteAsync().ConfigureAwait(false);
            if (_isClient)
            {
                await _connection.DisposeAsync().ConfigureAwait(false); // the accepted side's connection is Kestrel's to dispose
            }
        }
        catch (Exception ex) when (ex is InvalidOperationException or IOException or ObjectDisposedException)
        {
            // Already completed or gone.
        }
        finally
        {
            _closed.TrySetResult();
        }
    }

    private void Start()
    {
        lock (_lock)
        {
            if (_isClient)
            {
                var preface = LinkFrames.Preface;
                preface.CopyTo(_output.GetSpan(preface.Length));
                _output.Advance(preface.Length);
            }

            // SETTINGS: the streams' window and the private id; then the connection's window up to its size.
            var settings = BeginFrame(12, LinkFrames.Settings, 0, 0);
            BinaryPrimitives.WriteUInt16BigEndian(settings, LinkFrames.SettingInitialWindowSize);
            BinaryPrimitives.WriteUInt32BigEndian(settings[2..], StreamWindow);
            BinaryPrimitives.WriteUInt16BigEndian(settings[6..], LinkFrames.SettingPeerLink);
            BinaryPrimitives.WriteUInt32BigEndian(settings[8..], 1);
            _output.Advance(LinkFrames.HeaderLength + 12);
            WriteWindowUpdate(0, ConnectionWindow - LinkFrames.DefaultWindow);
        }

        Flush();
        _ = ReadAsync();
    }

    private async Task ReadAsync()
    {
        Exception? error = null;
        try
        {
            if (!_isClient && !await SkipPrefaceAsync().ConfigureAwait(false))
            {
                return;
            }

            // Bounded by the peer: ends at its FIN, an error, or when the link closes.
            while (true)
            {
                var result = await _input.ReadAsync().ConfigureAwait(false);
                var buffer = result.Buffer;
                var consumed = HandleFrames(buffer);
                _input.AdvanceTo(consumed, buffer.End);
                if (result.IsCompleted || result.IsCanceled)
                {
                    break;
                }
            }
        }
        catch (Exception ex) when (ex is IOException or InvalidDataException or OperationCanceledException or ObjectDisposedException or SocketException
            or InvalidOperationException)
        {
            error = ex;
            if (ex is InvalidDataException)
            {
                Log.ProtocolError(_logger, ex.Message);
            }
        }
        finally
        {
            Close(error);
            await FinishAsync().ConfigureAwait(false);
        }
    }

    private async ValueTask<bool> SkipPrefaceAsync()
    {
        var length = LinkFrames.Preface.Length;

        // Bounded: detection already saw the preface; this waits for nothing in practice.
        while (true)
        {
            var result = await _input.ReadAsync().ConfigureAwait(false);
            if (result.Buffer.Length >= length)
            {
                _input.AdvanceTo(result.Buffer.GetPosition(length));
                return true;
            }

            _input.AdvanceTo(result.Buffer.Start, result.Buffer.End);
            if (result.IsCompleted || result.IsCanceled)
            {
                return false;
            }
        }
    }

    /// <summary>Handles every whole frame in <paramref name="buffer"/>; returns where the first incomplete one starts.</summary>
    private SequencePosition HandleFrames(in ReadOnlySequence<byte> buffer)
    {
        var remaining = buffer;
        Span<byte> header = stackalloc byte[LinkFrames.HeaderLength];

        // Bounded by the buffer: every turn consumes a frame or stops.
        while (remaining.Length >= LinkFrames.HeaderLength)
        {
            remaining.Slice(0, LinkFrames.HeaderLength).CopyTo(header);
            LinkFrames.ReadHeader(header, out var length, out var type, out var flags, out var streamId);
            if (length > LinkFrames.MaxPayload)
            {
                throw new InvalidDataException($"a {length}-byte frame is over the {LinkFrames.MaxPayload}-byte maximum");
            }

            if (remaining.Length < LinkFrames.HeaderLength + length)
            {
                break;
            }

            var payload = remaining.Slice(LinkFrames.HeaderLength, length);
            if (payload.IsSingleSegment)
            {
                HandleFrame(type, flags, streamId, payload.FirstSpan);
            }
            else
            {
                var copy = ArrayPool<byte>.Shared.Rent(length);
                try
                {
                    payload.CopyTo(copy);
                    HandleFrame(type, flags, streamId, copy.AsSpan(0, length));
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(copy);
                }
            }

            remaining = remaining.Slice(payload.End);
        }

        return remaining.Start;
    }

    private void HandleFrame(byte type, byte flags, int streamId, ReadOnlySpan<byte> payload)
    {
        switch (type)
        {
            case LinkFrames.Data:
                OnData(flags, streamId, payload);
                break;
            case LinkFrames.Headers:
                OnHeaders(flags, streamId);
                break;
            case LinkFrames.RstStream when payload.Length == 4:
                if (Remove(streamId) is { } reset)
                {
                    var refused = BinaryPrimitives.ReadUInt32BigEndian(payload) == LinkFrames.RefusedStream;
                    reset.OnReset(new ConnectionResetException("the other sidecar reset the link stream"), refused);
                }

                break;
            case LinkFrames.Settings:
                OnSettings(flags, payload);
                break;
            case LinkFrames.WindowUpdate:
                OnWindowUpdate(streamId, payload);
                break;
            case LinkFrames.Ping when (flags & LinkFrames.FlagAck) == 0 && payload.Length == 8:
                WriteControl(LinkFrames.Ping, LinkFrames.FlagAck, 0, payload);
                break;
            case LinkFrames.GoAway:
                lock (_lock)
                {
                    _goingAway = true;
                }

                CloseIfIdleAndGoingAway();
                break;
            default:
                break; // PRIORITY, PUSH_PROMISE (never sent here), unknown types: ignored (RFC 9113 §4.1)
        }
    }

    private void OnData(byte flags, int streamId, ReadOnlySpan<byte> payload)
    {
        // Flow control counts the whole payload, padding included (RFC 9113 §6.9.1).
        var frameLength = payload.Length;
        if ((flags & LinkFrames.FlagPadded) != 0)
        {
            if (payload.IsEmpty || payload[0] >= payload.Length)
            {
                throw new InvalidDataException("a DATA frame's padding is longer than the frame");
            }

            payload = payload[1..^payload[0]];
        }

        // The connection's window is replenished on receipt: the streams' windows bound what is held.
        ReplenishConnectionWindow(frameLength);
        LinkStream? stream;
        lock (_lock)
        {
            _streams.TryGetValue(streamId, out stream);
        }

        if (stream is null)
        {
            return; // a stream this side has reset or finished: its frames in flight are dropped
        }

        if (!stream.OnData(payload, frameLength - payload.Length, (flags & LinkFrames.FlagEndStream) != 0))
        {
            ResetStream(stream, LinkFrames.FlowControlError);
        }
    }

    private void OnHeaders(byte flags, int streamId)
    {
        if (_isClient)
        {
            return; // the owner's side never sends HEADERS
        }

        if ((flags & LinkFrames.FlagEndHeaders) == 0 || streamId % 2 == 0 || streamId <= _lastPeerStreamId)
        {
            throw new InvalidDataException($"HEADERS for stream {streamId} cannot open a tunnel");
        }

        LinkStream? stream = null;
        var flushNow = false;
        lock (_lock)
        {
            _lastPeerStreamId = streamId;

            // Up to twice the forwarding side's own limit: it forgets a stream when it sends RST_STREAM, this side when that
            // arrives. A refused stream is tried again on a new tunnel by the forwarding side.
            if (!_isClosed && !_goingAway && _streams.Count < 2 * MaxStreams)
            {
                stream = new LinkStream(this, streamId, _peerInitialWindow, _loop?.Inline ?? false);
                _streams.Add(streamId, stream);
                _metrics?.PeerLinkStreams(outgoing: false, 1);
            }
            else if (!_isClosed)
            {
                WriteRstStream(streamId, LinkFrames.RefusedStream);
                flushNow = ScheduleFlush();
            }
        }

        if (flushNow)
        {
            Flush();
        }

        if (stream is not null)
        {
            _onStream!(stream);
        }
    }

    private void OnSettings(byte flags, ReadOnlySpan<byte> payload)
    {
        if ((flags & LinkFrames.FlagAck) != 0)
        {
            return;
        }

        if (payload.Length % 6 != 0)
        {
            throw new InvalidDataException("a SETTINGS frame's length is not a multiple of 6");
        }

        var speaksLink = false;
        lock (_lock)
        {
            for (var i = 0; i < payload.Length; i += 6)
            {
                var id = BinaryPrimitives.ReadUInt16BigEndian(payload[i..]);
                var value = BinaryPrimitives.ReadUInt32BigEndian(payload[(i + 2)..]);
                if (id == LinkFrames.SettingPeerLink)
                {
                    speaksLink = value == 1;
                }
                else if (id == LinkFrames.SettingInitialWindowSize)
                {
                    if (value > int.MaxValue)
                    {
                        throw new InvalidDataException("SETTINGS_INITIAL_WINDOW_SIZE is over 2^31-1");
                    }

                    // RFC 9113 §6.9.2: the change applies to every open stream's window.
                    var delta = (int)value - _peerInitialWindow;
                    _peerInitialWindow = (int)value;
                    foreach (var stream in _streams.Values)
                    {
                        stream.SendWindow += delta;
                    }
                }
            }

            if (!_isClosed)
            {
                WriteControlLocked(LinkFrames.Settings, LinkFrames.FlagAck, 0, []);
            }
        }

        ScheduleOrFlush();
        if (_isClient)
        {
            _ready.TrySetResult(speaksLink);
        }

        WakeBlockedSenders();
    }

    private void OnWindowUpdate(int streamId, ReadOnlySpan<byte> payload)
    {
        if (payload.Length != 4)
        {
            throw new InvalidDataException("a WINDOW_UPDATE frame is not 4 bytes");
        }

        var increment = (int)(BinaryPrimitives.ReadUInt32BigEndian(payload) & int.MaxValue);
        if (streamId == 0)
        {
            lock (_lock)
            {
                _sendWindow += increment;
            }

            WakeBlockedSenders();
            return;
        }

        LinkStream? stream;
        lock (_lock)
        {
            if (_streams.TryGetValue(streamId, out stream))
            {
                stream.SendWindow += increment;
            }
        }

        stream?.WakeSender();
    }

    /// <summary>The connection's window or every stream's grew: each waiting sender tries again.</summary>
    private void WakeBlockedSenders()
    {
        LinkStream[] streams;
        lock (_lock)
        {
            streams = [.. _streams.Values];
        }

        foreach (var stream in streams)
        {
            stream.WakeSender();
        }
    }

    /// <summary>
    /// Writes as much of <paramref name="data"/> as the windows allow (END_STREAM after the last byte when
    /// <paramref name="endStream"/>); returns the bytes written, and when not all, a task that completes when the windows
    /// may have grown.
    /// </summary>
    internal int WriteData(LinkStream stream, ReadOnlySpan<byte> data, bool endStream, out Task? windowOpened)
    {
        windowOpened = null;
        var written = 0;
        bool flushNow;
        lock (_lock)
        {
            // A stream no longer in the table was reset (its OnReset may not have run yet): a waiter made now would never wake.
            if (_isClosed || stream.IsReset || !_streams.TryGetValue(stream.Id, out var open) || !ReferenceEquals(open, stream))
            {
                throw new SocketException((int)SocketError.ConnectionReset);
            }

            // Bounded by the data: every turn writes a frame or stops.
            while (true)
            {
                var left = data.Length - written;
                var take = (int)Math.Min(Math.Min(left, LinkFrames.MaxPayload), Math.Min(stream.SendWindow, _sendWindow));
                if (take > 0 && _output.UnflushedBytes >= MaxUnsentBytes)
                {
                    take = 0; // woken by Flushed
                    _outputFull = true;
                }

                if (take <= 0 && !(left == 0 && endStream))
                {
                    break;
                }

                take = Math.Max(take, 0);
                var last = take == left;
                var payload = BeginFrame(take, LinkFrames.Data, last && endStream ? LinkFrames.FlagEndStream : (byte)0, stream.Id);
                data.Slice(written, take).CopyTo(payload);
                _output.Advance(LinkFrames.HeaderLength + take);
                written += take;
                stream.SendWindow -= take;
                _sendWindow -= take;
                if (last)
                {
                    if (endStream)
                    {
                        stream.LocalEnded = true;
                    }

                    break;
                }
            }

            if (written < data.Length)
            {
                windowOpened = stream.WaitForWindow();
            }

            flushNow = ScheduleFlush();
        }

        if (flushNow)
        {
            Flush();
        }

        if (stream.LocalEnded && stream.RemoteEnded)
        {
            Remove(stream.Id);
        }

        return written;
    }

    /// <summary>Gives the other side <paramref name="bytes"/> more to send on <paramref name="stream"/> (they were consumed).</summary>
    internal void Credit(LinkStream stream, int bytes)
    {
        bool flushNow;
        lock (_lock)
        {
            if (_isClosed || !stream.TakeCredit(bytes, out var increment))
            {
                return;
            }

            WriteWindowUpdate(stream.Id, increment);
            flushNow = ScheduleFlush();
        }

        if (flushNow)
        {
            Flush();
        }
    }

    /// <summary>
    /// Resets a stream this side is done with before both directions ended (else only forgets it): with CANCEL, or with
    /// REFUSED_STREAM when the owner's side ends a tunnel (<see cref="LinkStream.Refuse"/>).
    /// </summary>
    internal void Release(LinkStream stream, uint errorCode = LinkFrames.Cancel)
    {
        if (Remove(stream.Id) is null)
        {
            return;
        }

        if (!(stream.LocalEnded && stream.RemoteEnded) && !stream.IsReset)
        {
            ResetStream(stream, errorCode);
            return;
        }

        stream.OnReset(new ConnectionAbortedException("the link stream was released"), refused: false);
    }

    private void ResetStream(LinkStream stream, uint errorCode)
    {
        Remove(stream.Id);
        lock (_lock)
        {
            if (!_isClosed)
            {
                WriteRstStream(stream.Id, errorCode);
            }
        }

        ScheduleOrFlush();
        stream.OnReset(new ConnectionAbortedException("the link stream was reset"), refused: false);
    }

    /// <summary>
    /// The other side ended its direction. The owner's side forgets a stream once both ended; the forwarding side at once:
    /// its tunnel, like a kept-alive connection the app closed, is done (a request sent on it after this fails and goes
    /// again on a new one), and the owner's side resets its end when its session is over.
    /// </summary>
    internal void OnRemoteEnded(LinkStream stream)
    {
        if (stream.LocalEnded || _isClient)
        {
            Remove(stream.Id);
        }
    }

    private LinkStream? Remove(int streamId)
    {
        LinkStream? stream;
        lock (_lock)
        {
            if (_streams.Remove(streamId, out stream))
            {
                _metrics?.PeerLinkStreams(_isClient, -1);
            }
        }

        if (stream is not null)
        {
            CloseIfIdleAndGoingAway();
        }

        return stream;
    }

    private void CloseIfIdleAndGoingAway()
    {
        bool close;
        lock (_lock)
        {
            close = _goingAway && _streams.Count == 0 && !_isClosed;
        }

        if (close)
        {
            Close(null);
        }
    }

    private void ReplenishConnectionWindow(int bytes)
    {
        bool flushNow;
        lock (_lock)
        {
            _receivedUnacknowledged += bytes;
            if (_isClosed || _receivedUnacknowledged < ConnectionWindow / 2)
            {
                return;
            }

            WriteWindowUpdate(0, (int)_receivedUnacknowledged);
            _receivedUnacknowledged = 0;
            flushNow = ScheduleFlush();
        }

        if (flushNow)
        {
            Flush();
        }
    }

    private void WriteControl(byte type, byte flags, int streamId, ReadOnlySpan<byte> payload)
    {
        lock (_lock)
        {
            if (_isClosed)
            {
                return;
            }

            WriteControlLocked(type, flags, streamId, payload);
        }

        ScheduleOrFlush();
    }

    private void WriteControlLocked(byte type, byte flags, int streamId, ReadOnlySpan<byte> payload)
    {
        payload.CopyTo(BeginFrame(payload.Length, type, flags, streamId));
        _output.Advance(LinkFrames.HeaderLength + payload.Length);
    }

    private void WriteRstStream(int streamId, uint errorCode)
    {
        var payload = BeginFrame(4, LinkFrames.RstStream, 0, streamId);
        BinaryPrimitives.WriteUInt32BigEndian(payload, errorCode);
        _output.Advance(LinkFrames.HeaderLength + 4);
    }

    private void WriteWindowUpdate(int streamId, int increment)
    {
        var payload = BeginFrame(4, LinkFrames.WindowUpdate, 0, streamId);
        BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)increment);
        _output.Advance(LinkFrames.HeaderLength + 4);
    }

    /// <summary>Starts a frame in the output (the lock held); the caller fills the payload and advances past both.</summary>
    private Span<byte> BeginFrame(int payloadLength, byte type, byte flags, int streamId)
    {
        var span = _output.GetSpan(LinkFrames.HeaderLength + payloadLength);
        LinkFrames.WriteHeader(span, payloadLength, type, flags, streamId);
        return span.Slice(LinkFrames.HeaderLength, payloadLength);
    }

    private void ScheduleOrFlush()
    {
        bool flushNow;
        lock (_lock)
        {
            flushNow = ScheduleFlush();
        }

        if (flushNow)
        {
            Flush();
        }
    }

    /// <summary>With the lock held, after writing: true when the caller flushes now (not on the link's loop thread).</summary>
    private bool ScheduleFlush()
    {
        if (_flushScheduled || _isClosed)
        {
            return false;
        }

        _flushScheduled = true;
        if (_loop is not null && EpollLoop.Current == _loop)
        {
            _loop.Defer(this);
            return false;
        }

        return true;
    }

    void IEndOfBatch.RunAtEndOfBatch() => Flush();

    private void Flush()
    {
        ValueTask<FlushResult> flush;
        lock (_lock)
        {
            _flushScheduled = false;
            if (_flushing || _isClosed)
            {
                return; // the flush under way sends this too when it completes
            }

            _flushing = true;
            try
            {
                flush = _output.FlushAsync();
            }
            catch (Exception ex) when (ex is InvalidOperationException or IOException)
            {
                _flushing = false;
                return; // the connection is closing: its reader ends the link
            }
        }

        if (!flush.IsCompleted)
        {
            _ = FlushLaterAsync(flush);
            return;
        }

        try
        {
            flush.GetAwaiter().GetResult();
        }
        catch (Exception ex) when (ex is InvalidOperationException or IOException or OperationCanceledException)
        {
            // The connection is closing: its reader ends the link.
        }

        Flushed();
    }

    private async Task FlushLaterAsync(ValueTask<FlushResult> flush)
    {
        try
        {
            await flush.ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is InvalidOperationException or IOException or OperationCanceledException)
        {
            // As above.
        }

        Flushed();
    }

    /// <summary>A flush completed: what was written meanwhile goes out now, and senders held by <see cref="MaxUnsentBytes"/> go on.</summary>
    private void Flushed()
    {
        bool more;
        lock (_lock)
        {
            _flushing = false;
            more = !_isClosed && _output.UnflushedBytes > 0;
        }

        if (more)
        {
            Flush(); // commits it to the socket's pipe even while that flush waits (the pipe's own limit holds it there)
        }

        bool wake;
        lock (_lock)
        {
            wake = _outputFull && (_isClosed || _output.UnflushedBytes < MaxUnsentBytes);
            _outputFull &= !wake;
        }

        if (wake)
        {
            WakeBlockedSenders();
        }
    }

    /// <summary>DATA written and not yet committed to the socket's pipe (for tests).</summary>
    internal long UnsentBytes
    {
        get
        {
            lock (_lock)
            {
                return _isClosed ? 0 : _output.UnflushedBytes;
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 950, EventName = "PeerLinkProtocolError", Level = LogLevel.Warning, Message = "Peer link closed on a protocol error: {Reason}")]
        public static partial void ProtocolError(ILogger logger, string reason);
    }
}

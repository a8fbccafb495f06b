using System.Buffers;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;
using Sharding.Sidecar.FastPath;
using Sharding.Sidecar.Transport;

namespace Sharding.Sidecar.Forwarding;

/// <summary>
/// The full path's HTTP/1.1 client to this pod's app, full duplex: the request body goes out in a concurrent task while the
/// response is read, so an app that answers before it has read the whole body (an early 401 or 413, an echo that streams
/// back as it reads) is relayed at once.
/// </summary>
/// <remarks>
/// SocketsHttpHandler reads an HTTP/1.1 response only once it has sent the whole request body (YARP inherits this), which
/// for such apps means a 504 after the headers timeout or a stall once the socket buffers fill. Upgrades (WebSocket) stay on
/// SocketsHttpHandler. Connections are the fast path's kept-alive <see cref="UpstreamConnection"/>s; the response head is
/// parsed by the fast path's <see cref="ResponseHead"/> (the same framing and validation rules). Errors take the shapes
/// SocketsHttpHandler gives, which <see cref="HttpForwarder"/> maps to statuses: a refused connect is an
/// <see cref="HttpRequestException"/> with <see cref="HttpRequestError.ConnectionError"/> (503), a bad or missing response
/// another <see cref="HttpRequestException"/> (502), the caller's cancellation an <see cref="OperationCanceledException"/>.
/// </remarks>
internal sealed class DuplexHttp1Handler : HttpMessageHandler
{
    /// <summary>Room for a chunk-size line or one trailer line (the fast path's head buffer bounds the trailers too).</summary>
    private const int MaxLineBytes = 8 * 1024;

    /// <summary>
    /// For a request without a body, a connection back in the pool for less than this is reused without a liveness poll
    /// (one syscall per request under load): an app closes an idle connection after seconds (Node's keep-alive default is
    /// 5 s), not milliseconds, and one that closed it anyway (shutting down) is caught by the stale-connection retry. A
    /// request with a body cannot be sent again once it started, so its connection is always checked.
    /// </summary>
    private static readonly TimeSpan UncheckedIdle = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// The event loop of the client connection a request came on: its app connection goes on the same loop, so the request's
    /// continuations run on the thread that serves its client, not on another loop or the runtime's socket threads.
    /// </summary>
    public static readonly HttpRequestOptionsKey<EpollLoop> Loop = new("Sharding.Sidecar.Loop");

    private readonly UpstreamConnectionPool _pool;

    /// <summary>Its connections (for tests).</summary>
    internal UpstreamConnectionPool Pool => _pool;

    /// <param name="app">The app's address.</param>
    /// <param name="connectTimeout">How long a connect may take.</param>
    /// <param name="time">The clock for idle times.</param>
    /// <param name="loops">The epoll transport's loops, when it is on: app connections are made on them.</param>
    public DuplexHttp1Handler(EndPoint app, TimeSpan connectTimeout, TimeProvider time, EpollLoops? loops = null) =>
        _pool = new UpstreamConnectionPool(app, connectTimeout, time, loops);

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _pool.Dispose();
        }

        base.Dispose(disposing);
    }

    protected override HttpResponseMessage Send(HttpRequestMessage request, CancellationToken cancellationToken) =>
        throw new NotSupportedException("the sidecar forwards asynchronously");

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var (head, headLength) = WriteHead(request, out var chunked, out var contentLength);
        request.Options.TryGetValue(Loop, out var loop);
        try
        {
            // Bounded: a second attempt only after a kept-alive connection turned out closed, and on a new connection.
            for (var fresh = false; ; fresh = true)
            {
                var connection = await AcquireAsync(fresh, request.Content is null ? UncheckedIdle : TimeSpan.Zero, loop, cancellationToken).ConfigureAwait(false);
                var reused = connection.Requests++ > 0;
                var exchange = new Exchange(_pool, connection, hasBody: request.Content is not null);
                try
                {
                    await exchange.SendHeadAsync(head.AsMemory(0, headLength), cancellationToken).ConfigureAwait(false);
                    if (request.Content is { } content)
                    {
                        exchange.StartBody(content, chunked, contentLength, cancellationToken);
                    }

                    return await exchange.ReadResponseAsync(request, cancellationToken).ConfigureAwait(false);
                }
                catch (Exception ex)
                {
                    exchange.Abandon();

                    // The app had closed the kept-alive connection before this request: nothing of it was taken, so a new
                    // connection is safe (a body once started cannot be sent again).
                    if (reused && exchange.LooksStale && (request.Content is null || !exchange.BodyStarted))
                    {
                        continue;
                    }

                    if (ex is SocketException socket)
                    {
                        throw new HttpRequestException(HttpRequestError.ConnectionError, $"cannot send the request to the app: {socket.Message}", socket);
                    }

                    throw;
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(head);
        }
    }

    /// <summary>A pooled connection (or, with <paramref name="fresh"/>, a new one); a failed connect is a connection error.</summary>
    private async ValueTask<UpstreamConnection> AcquireAsync(bool fresh, TimeSpan uncheckedIdle, EpollLoop? loop, CancellationToken cancellationToken)
    {
        try
        {
            return fresh
                ? await _pool.ConnectAsync(cancellationToken, loop).ConfigureAwait(false)
                : await _pool.RentAsync(cancellationToken, uncheckedIdle, loop).ConfigureAwait(false);
        }
        catch (Exception ex) when (IsConnectError(ex, cancellationToken))
        {
            throw ConnectFailed(ex);
        }
    }

    // A connect timeout surfaces as a cancellation the caller did not ask for.
    private static bool IsConnectError(Exception ex, CancellationToken cancellationToken) =>
        ex is SocketException || (ex is OperationCanceledException && !cancellationToken.IsCancellationRequested);

    private static HttpRequestException ConnectFailed(Exception ex) =>
        new(HttpRequestError.ConnectionError, $"cannot connect to the app: {ex.Message}", ex);

    /// <summary>The request line and headers as UTF-8 (Kestrel decoded the client's as UTF-8), in a rented buffer.</summary>
    private static (byte[] Buffer, int Length) WriteHead(HttpRequestMessage request, out bool chunked, out long contentLength)
    {
        var content = request.Content;
        contentLength = content?.Headers.ContentLength ?? -1;
        chunked = content is not null && contentLength < 0;
        var uri = request.RequestUri ?? throw new InvalidOperationException("the request has no URI");

        var head = new StringBuilder(512);
        head.Append(request.Method.Method).Append(' ').Append(uri.PathAndQuery).Append(" HTTP/1.1\r\n");
        if (!request.Headers.NonValidated.Contains("host"))
        {
            head.Append("host: ").Append(uri.Authority).Append("\r\n");
        }

        foreach (var header in request.Headers.NonValidated)
        {
            AppendHeader(head, header.Key, header.Value);
        }

        if (content is not null)
        {
            foreach (var header in content.Headers.NonValidated)
            {
                if (!header.Key.Equals("content-length", StringComparison.OrdinalIgnoreCase))
                {
                    AppendHeader(head, header.Key, header.Value);
                }
            }
        }

        if (chunked)
        {
            head.Append("transfer-encoding: chunked\r\n");
        }
        else if (contentLength >= 0)
        {
            head.Append("content-length: ").Append(contentLength.ToString(CultureInfo.InvariantCulture)).Append("\r\n");
        }
        else if (request.Method == HttpMethod.Post || request.Method == HttpMethod.Put || request.Method == HttpMethod.Patch)
        {
            head.Append("content-length: 0\r\n"); // as SocketsHttpHandler: a body method without a body says so
        }

        head.Append("\r\n");
        var buffer = ArrayPool<byte>.Shared.Rent(Encoding.UTF8.GetMaxByteCount(head.Length));
        var length = Encoding.UTF8.GetBytes(head.ToString(), buffer);
        return (buffer, length);
    }

    private static void AppendHeader(StringBuilder head, string name, HeaderStringValues values)
    {
        if (name.Equals("transfer-encoding", StringComparison.OrdinalIgnoreCase))
        {
            return; // framing is ours (HeaderRules drops the client's as hop-by-hop)
        }

        // One line per field, values joined as SocketsHttpHandler joins them (cookies with "; ", RFC 9113 §8.2.3).
        head.Append(name).Append(": ");
        var separator = name.Equals("cookie", StringComparison.OrdinalIgnoreCase) ? "; " : ", ";
        var first = true;
        foreach (var value in values)
        {
            if (value.AsSpan().IndexOfAny('\r', '\n', '\0') >= 0)
            {
                throw new HttpRequestException($"the request header {name} has a value with CR, LF or NUL");
            }

            head.Append(first ? string.Empty : separator).Append(value);
            first = false;
        }

        head.Append("\r\n");
    }

    /// <summary>One request on one connection: the body task and the response reader; the connection goes back to the pool
    /// only when both ended cleanly and the app keeps it alive, and is cut as soon as either side fails.</summary>
    private sealed class Exchange(UpstreamConnectionPool pool, UpstreamConnection connection, bool hasBody)
    {
        // The body task (when there is a body) and the response each release one part; the last one returns or disposes
        // the connection.
        private int _parts = hasBody ? 2 : 1;
        private int _aborted;
        private volatile bool _bodyIncomplete;
        private bool _reusable;
        private bool _sawInterim;

        public UpstreamConnection Connection => connection;

        /// <summary>The response, once its head arrived (its trailers are added as the body ends).</summary>
        public HttpResponseMessage? Response { get; private set; }

        public bool BodyStarted { get; private set; }

        /// <summary>The head could not be sent, or the connection ended before any byte of a response: what a kept-alive
        /// connection the app had already closed looks like.</summary>
        public bool LooksStale { get; private set; }

        public async ValueTask SendHeadAsync(ReadOnlyMemory<byte> head, CancellationToken cancellationToken)
        {
            try
            {
                await connection.SendAsync(head, cancellationToken).ConfigureAwait(false);
            }
            catch (SocketException)
            {
                LooksStale = true;
                throw;
            }
        }

        /// <summary>Starts sending the body; it runs on its own from its first send or read that has to wait. Started
        /// synchronously so the content counts as started (the forwarder then waits for it before it releases the client's
        /// body and the key's prefix buffer).</summary>
        public void StartBody(HttpContent content, bool chunked, long contentLength, CancellationToken cancellationToken)
        {
            BodyStarted = true;
            _ = SendBodyAsync(content, chunked, contentLength, cancellationToken);
        }

        private async Task SendBodyAsync(HttpContent content, bool chunked, long contentLength, CancellationToken cancellationToken)
        {
            var body = new RequestBodyStream(connection, chunked, contentLength);
            var success = false;
            try
            {
                await content.CopyToAsync(body, cancellationToken).ConfigureAwait(false);
                await body.EndAsync(cancellationToken).ConfigureAwait(false);
                success = true;
            }
            catch (Exception) when (body.SendFailed)
            {
                // The app stopped taking the body (it answered early and closed, or reset): its response may still be in the
                // receive buffer, so the reader carries on; the connection is not reused.
            }
            catch (Exception)
            {
                // The client's body failed or was canceled: cut the app's request so it never looks whole.
                Fail();
            }
            finally
            {
                _bodyIncomplete = !success;
                Release();
            }
        }

        public void ResponseEnded(bool reusable)
        {
            _reusable = reusable;
            Release();
        }

        /// <summary>Cuts the connection (either side failed, or the response was dropped before its end).</summary>
        public void Fail()
        {
            if (Interlocked.Exchange(ref _aborted, 1) == 0)
            {
                connection.Abort();
            }
        }

        /// <summary>No response will be returned: cut the connection and release the parts that will not end by themselves.</summary>
        public void Abandon()
        {
            Fail();
            if (hasBody && !BodyStarted)
            {
                Release();
            }

            Release();
        }

        private void Release()
        {
            if (Interlocked.Decrement(ref _parts) != 0)
            {
                return;
            }

            if (_reusable && !_bodyIncomplete && Volatile.Read(ref _aborted) == 0)
            {
                pool.Return(connection);
            }
            else
            {
                connection.Dispose();
            }
        }

        public async Task<HttpResponseMessage> ReadResponseAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var isHead = request.Method == HttpMethod.Head;

            // Bounded: each turn consumes one interim (1xx) response or returns.
            while (true)
            {
                var headLength = await ReceiveHeadAsync(cancellationToken).ConfigureAwait(false);
                var bytes = connection.Pending[..headLength];
                if (!ResponseHead.TryParse(bytes, isHead, out var parsed))
                {
                    throw new HttpRequestException(HttpRequestError.InvalidResponse, "the app sent an invalid HTTP/1.1 response head");
                }

                if (parsed.StatusCode is >= 100 and < 200)
                {
                    if (parsed.StatusCode == 101)
                    {
                        throw new HttpRequestException(HttpRequestError.InvalidResponse, "the app switched protocols on a request that asked for no upgrade");
                    }

                    connection.Start += headLength; // 100 Continue, 103 Early Hints: not passed on (as SocketsHttpHandler)
                    _sawInterim = true;
                    continue;
                }

                var body = new ResponseBodyStream(this, parsed);
                var response = new HttpResponseMessage((HttpStatusCode)parsed.StatusCode)
                {
                    Version = HttpVersion.Version11,
                    RequestMessage = request,
                    Content = new ResponseContent(body),
                };
                AddHeaders(bytes, response, lengthApplies: parsed.Framing is not (BodyFraming.Chunked or BodyFraming.UntilClose));
                connection.Start += headLength;
                Response = response;
                if (parsed.Framing == BodyFraming.None)
                {
                    body.Complete(); // nothing can fail after this: the response part is released by the body from here
                }

                return response;
            }
        }

        private async ValueTask<int> ReceiveHeadAsync(CancellationToken cancellationToken)
        {
            // Bounded by UpstreamConnection.MaxHeadBytes: ReceiveAsync throws once the buffer cannot grow.
            var scanned = 0;
            while (true)
            {
                var pending = connection.Pending;
                var end = pending[Math.Max(0, scanned - 3)..].IndexOf("\r\n\r\n"u8);
                if (end >= 0)
                {
                    return Math.Max(0, scanned - 3) + end + 4;
                }

                scanned = pending.Length;
                int read;
                try
                {
                    read = await connection.ReceiveAsync(cancellationToken).ConfigureAwait(false);
                }
                catch (InvalidOperationException ex)
                {
                    throw new HttpRequestException(HttpRequestError.ConfigurationLimitExceeded, ex.Message, ex);
                }
                catch (SocketException ex)
                {
                    LooksStale = connection.End == 0 && !_sawInterim;
                    throw new HttpRequestException(HttpRequestError.ResponseEnded, $"the app's connection failed before its response: {ex.Message}", ex);
                }

                if (read == 0)
                {
                    LooksStale = connection.End == 0 && !_sawInterim;
                    throw new HttpRequestException(HttpRequestError.ResponseEnded, "the app closed the connection before it sent a response");
                }
            }
        }

        /// <param name="head">The response head.</param>
        /// <param name="response">Gets its headers.</param>
        /// <param name="lengthApplies">False when a Transfer-Encoding frames the body: a Content-Length beside it is dropped
        /// (RFC 9112 §6.3), or the client would be told a length the body does not have.</param>
        private static void AddHeaders(ReadOnlySpan<byte> head, HttpResponseMessage response, bool lengthApplies)
        {
            // The head was validated by ResponseHead.TryParse: every line is "name:value", the values free of controls.
            var position = head.IndexOf("\r\n"u8) + 2;
            while (position < head.Length - 2)
            {
                var line = head[position..];
                line = line[..line.IndexOf("\r\n"u8)];
                position += line.Length + 2;
                var colon = line.IndexOf((byte)':');
                if (!lengthApplies && Ascii.EqualsIgnoreCase(line[..colon], "content-length"u8))
                {
                    continue;
                }

                var name = Encoding.ASCII.GetString(line[..colon]);
                var value = Encoding.Latin1.GetString(line[(colon + 1)..].Trim(" \t"u8));
                if (!response.Headers.TryAddWithoutValidation(name, value))
                {
                    response.Content.Headers.TryAddWithoutValidation(name, value);
                }
            }
        }
    }

    /// <summary>Frames the request body onto the connection: Content-Length bytes exactly, or chunks.</summary>
    private sealed class RequestBodyStream(UpstreamConnection connection, bool chunked, long contentLength) : Stream
    {
        private long _sent;

        /// <summary>A send to the app failed (the app's side, not the client's).</summary>
        public bool SendFailed { get; private set; }

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (buffer.IsEmpty)
            {
                return;
            }

            if (!chunked)
            {
                if (buffer.Length > contentLength - _sent)
                {
                    throw new IOException($"the request body is longer than its Content-Length ({contentLength})");
                }

                _sent += buffer.Length;
                await SendAsync(buffer, cancellationToken).ConfigureAwait(false);
                return;
            }

            // One send per chunk: size line, data and CRLF copied together.
            var frame = ArrayPool<byte>.Shared.Rent(buffer.Length + 20);
            try
            {
                buffer.Length.TryFormat(frame, out var written, "x", CultureInfo.InvariantCulture);
                "\r\n"u8.CopyTo(frame.AsSpan(written));
                buffer.Span.CopyTo(frame.AsSpan(written + 2));
                "\r\n"u8.CopyTo(frame.AsSpan(written + 2 + buffer.Length));
                await SendAsync(frame.AsMemory(0, written + 4 + buffer.Length), cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(frame);
            }
        }

        public ValueTask EndAsync(CancellationToken cancellationToken)
        {
            if (chunked)
            {
                return SendAsync("0\r\n\r\n"u8.ToArray(), cancellationToken);
            }

            return _sent == contentLength
                ? ValueTask.CompletedTask
                : throw new IOException($"the request body ended {contentLength - _sent} bytes short of its Content-Length ({contentLength})");
        }

        private async ValueTask SendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
        {
            try
            {
                await connection.SendAsync(data, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                SendFailed = true;
                throw new IOException($"the app stopped taking the request body: {ex.Message}", ex);
            }
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask; // every write is sent at once

        public override void Flush()
        {
        }

        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();
    }

    /// <summary>The response body, read once, as a stream.</summary>
    private sealed class ResponseContent(ResponseBodyStream body) : HttpContent
    {
        protected override Task<Stream> CreateContentReadStreamAsync() => Task.FromResult<Stream>(body);

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) => body.CopyToAsync(stream);

        protected override bool TryComputeLength(out long length)
        {
            length = -1;
            return false; // the Content-Length header, when the app sent one, is in Headers already
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                body.Dispose();
            }

            base.Dispose(disposing);
        }
    }

    /// <summary>
    /// Reads the body by its framing: Content-Length bytes, chunks (decoded; trailers go to the response's trailing headers)
    /// or until the app closes. A body that ends early is an <see cref="IOException"/>, never a short body that looks whole.
    /// </summary>
    private sealed class ResponseBodyStream(Exchange exchange, ResponseHead head) : Stream
    {
        private enum Chunk
        {
            Size,
            Data,
            DataEnd,
            Trailers,
        }

        private long _remaining = head.Framing == BodyFraming.Length ? head.ContentLength : 0;
        private Chunk _chunk;
        private bool _done;
        private bool _ended;

        private UpstreamConnection Connection => exchange.Connection;

        /// <summary>The body ended as its framing says: the connection may serve another request.</summary>
        public void Complete()
        {
            _done = true;
            End(reusable: !head.UpstreamClose);
        }

        private void End(bool reusable)
        {
            if (!_ended)
            {
                _ended = true;
                exchange.ResponseEnded(reusable);
            }
        }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            try
            {
                return await ReadCoreAsync(buffer, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                exchange.Fail();
                End(reusable: false);
                throw new IOException($"the app's connection failed during the response body: {ex.Message}", ex);
            }
            catch
            {
                exchange.Fail();
                End(reusable: false);
                throw;
            }
        }

        private async ValueTask<int> ReadCoreAsync(Memory<byte> buffer, CancellationToken cancellationToken)
        {
            // Bounded by the body: each turn consumes framing bytes, returns data, or ends.
            while (!_done)
            {
                if (buffer.IsEmpty)
                {
                    // A zero-byte read waits for data without a buffer (StreamCopier's idle wait).
                    if (Connection.Pending.IsEmpty)
                    {
                        await Connection.Socket!.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None, cancellationToken).ConfigureAwait(false);
                    }

                    return 0;
                }

                switch (head.Framing)
                {
                    case BodyFraming.Length:
                        if (_remaining == 0)
                        {
                            Complete();
                            return 0;
                        }

                        var read = await ReadDataAsync(buffer[..(int)Math.Min(buffer.Length, _remaining)], cancellationToken).ConfigureAwait(false);
                        if (read == 0)
                        {
                            throw new IOException($"the app closed the connection {_remaining} bytes before the end of its response body");
                        }

                        _remaining -= read;
                        return read;
                    case BodyFraming.UntilClose:
                        var untilClose = await ReadDataAsync(buffer, cancellationToken).ConfigureAwait(false);
                        if (untilClose == 0)
                        {
                            Complete();
                        }

                        return untilClose;
                    default:
                        var chunkRead = await ReadChunkedAsync(buffer, cancellationToken).ConfigureAwait(false);
                        if (chunkRead > 0)
                        {
                            return chunkRead;
                        }

                        break;
                }
            }

            return 0;
        }

        /// <summary>Body bytes: those already received first, else straight from the socket into the caller's buffer.</summary>
        private async ValueTask<int> ReadDataAsync(Memory<byte> buffer, CancellationToken cancellationToken)
        {
            var connection = Connection;
            if (connection.End > connection.Start)
            {
                var take = Math.Min(buffer.Length, connection.End - connection.Start);
                connection.Buffer.AsMemory(connection.Start, take).CopyTo(buffer);
                connection.Start += take;
                return take;
            }

            return await connection.Socket!.ReceiveAsync(buffer, SocketFlags.None, cancellationToken).ConfigureAwait(false);
        }

        /// <summary>One step of the chunked decoding; returns data bytes, or 0 after consuming framing (or at the end).</summary>
        private async ValueTask<int> ReadChunkedAsync(Memory<byte> buffer, CancellationToken cancellationToken)
        {
            switch (_chunk)
            {
                case Chunk.Size:
                    var line = await ReadLineAsync(cancellationToken).ConfigureAwait(false);
                    _remaining = ParseChunkSize(Connection.Buffer.AsSpan(Connection.Start, line));
                    Connection.Start += line + 2;
                    _chunk = _remaining == 0 ? Chunk.Trailers : Chunk.Data;
                    return 0;
                case Chunk.Data:
                    var read = await ReadDataAsync(buffer[..(int)Math.Min(buffer.Length, _remaining)], cancellationToken).ConfigureAwait(false);
                    if (read == 0)
                    {
                        throw new IOException("the app closed the connection inside a chunk of its response body");
                    }

                    _remaining -= read;
                    if (_remaining == 0)
                    {
                        _chunk = Chunk.DataEnd;
                    }

                    return read;
                case Chunk.DataEnd:
                    var empty = await ReadLineAsync(cancellationToken).ConfigureAwait(false);
                    if (empty != 0)
                    {
                        throw new IOException("the app's chunked response body has data beyond a chunk's size");
                    }

                    Connection.Start += 2;
                    _chunk = Chunk.Size;
                    return 0;
                default:
                    // Trailer lines until the empty one (RFC 9112 §7.1.2).
                    var trailer = await ReadLineAsync(cancellationToken).ConfigureAwait(false);
                    var text = Connection.Buffer.AsSpan(Connection.Start, trailer);
                    Connection.Start += trailer + 2;
                    if (trailer == 0)
                    {
                        Complete();
                        return 0;
                    }

                    AddTrailer(text);
                    return 0;
            }
        }

        /// <summary>Waits for a whole CRLF-ended line at the start of the pending bytes; returns its length without the CRLF.</summary>
        private async ValueTask<int> ReadLineAsync(CancellationToken cancellationToken)
        {
            // Bounded by MaxLineBytes.
            while (true)
            {
                var pending = Connection.Pending;
                var end = pending.IndexOf((byte)'\n');
                if (end >= 0)
                {
                    if (end == 0 || pending[end - 1] != '\r')
                    {
                        throw new IOException("the app's chunked response body has a line without CRLF");
                    }

                    return end - 1;
                }

                if (pending.Length > MaxLineBytes)
                {
                    throw new IOException($"a line of the app's chunked response body is longer than {MaxLineBytes} bytes");
                }

                if (await Connection.ReceiveAsync(cancellationToken).ConfigureAwait(false) == 0)
                {
                    throw new IOException("the app closed the connection inside its chunked response body");
                }
            }
        }

        private static long ParseChunkSize(ReadOnlySpan<byte> line)
        {
            var end = line.IndexOfAny((byte)';', (byte)' ', (byte)'\t');
            var digits = end < 0 ? line : line[..end];
            if (digits.IsEmpty || digits.Length > 15
                || !long.TryParse(digits, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var size))
            {
                throw new IOException("the app's chunked response body has an invalid chunk size");
            }

            return size;
        }

        private void AddTrailer(ReadOnlySpan<byte> line)
        {
            var colon = line.IndexOf((byte)':');
            if (colon <= 0 || !HttpToken.IsToken(line[..colon]))
            {
                throw new IOException("the app's chunked response body has an invalid trailer line");
            }

            var value = line[(colon + 1)..].Trim(" \t"u8);
            if (ResponseHead.HasControl(value))
            {
                throw new IOException("the app's trailer has a control character in its value");
            }

            var response = exchange.Response;
            response?.TrailingHeaders.TryAddWithoutValidation(Encoding.ASCII.GetString(line[..colon]), Encoding.Latin1.GetString(value));
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing && !_ended)
            {
                exchange.Fail(); // dropped before its end: the connection cannot carry another request
                End(reusable: false);
            }

            base.Dispose(disposing);
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}

using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Threading.Channels;
using Microsoft.Extensions.DependencyInjection;
using Sharding.Metrics;
using Sharding.Sidecar.Tests.Infrastructure;

namespace Sharding.Sidecar.Tests.FastPath;

/// <summary>One HTTP/1.1 response as it came off the wire.</summary>
internal sealed class RawResponse
{
    public required string StatusLine { get; init; }

    public required int Status { get; init; }

    /// <summary>The head exactly as received, up to and including its empty line.</summary>
    public required string Head { get; init; }

    public required IReadOnlyList<KeyValuePair<string, string>> Headers { get; init; }

    /// <summary>The body after de-chunking.</summary>
    public required byte[] Body { get; init; }

    /// <summary>The body bytes exactly as they were framed on the wire (chunk sizes, extensions, trailers).</summary>
    public required byte[] RawBody { get; init; }

    public required IReadOnlyList<KeyValuePair<string, string>> Trailers { get; init; }

    /// <summary>The body ended with the connection (no length, not chunked).</summary>
    public bool EndedByClose { get; init; }

    public string BodyText => Encoding.UTF8.GetString(Body);

    public IEnumerable<string> All(string name) =>
        Headers.Where(h => string.Equals(h.Key, name, StringComparison.OrdinalIgnoreCase)).Select(static h => h.Value);

    /// <summary>The single value of a header (fails when it appears more than once), null when absent.</summary>
    public string? Single(string name)
    {
        var values = All(name).ToList();
        Assert.True(values.Count <= 1, $"{name} appears {values.Count} times in\n{Head}");
        return values.Count == 0 ? null : values[0];
    }

    public bool Has(string name) => All(name).Any();

    public override string ToString() => Head + Encoding.Latin1.GetString(RawBody);
}

/// <summary>Bytes received on a socket and not yet consumed: the read side of <see cref="RawClient"/> and <see cref="FakeApp"/>.</summary>
internal sealed class ReceiveBuffer(Socket socket)
{
    private byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _end;

    public int Count => _end - _start;

    public ReadOnlySpan<byte> Pending => _buffer.AsSpan(_start, _end - _start);

    public string PendingText => Encoding.Latin1.GetString(Pending);

    public void Consume(int count) => _start += count;

    /// <summary>Reads more bytes; false at the end of the stream.</summary>
    public async Task<bool> FillAsync(CancellationToken token)
    {
        if (_start > 0)
        {
            Array.Copy(_buffer, _start, _buffer, 0, _end - _start);
            _end -= _start;
            _start = 0;
        }

        if (_end == _buffer.Length)
        {
            Array.Resize(ref _buffer, _buffer.Length * 2);
        }

        var read = await socket.ReceiveAsync(_buffer.AsMemory(_end), SocketFlags.None, token);
        _end += read;
        return read > 0;
    }

    /// <summary>One head up to and with its empty line, consumed; null when the stream ends before a whole head.</summary>
    public async Task<string?> ReadHeadAsync(CancellationToken token)
    {
        int headEnd;
        while ((headEnd = Pending.IndexOf("\r\n\r\n"u8)) < 0)
        {
            if (!await FillAsync(token))
            {
                return null;
            }
        }

        var head = Encoding.Latin1.GetString(_buffer, _start, headEnd + 4);
        Consume(headEnd + 4);
        return head;
    }
}

/// <summary>A client connection speaking exact bytes; every read is bounded by a timeout.</summary>
internal sealed class RawClient : IDisposable
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(15);

    private readonly Socket _socket;
    private readonly ReceiveBuffer _input;

    private RawClient(Socket socket)
    {
        _socket = socket;
        _input = new ReceiveBuffer(socket);
    }

    public static async Task<RawClient> ConnectAsync(int port, IPAddress? address = null)
    {
        address ??= IPAddress.Loopback;
        var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        using var timeout = new CancellationTokenSource(DefaultTimeout);
        await socket.ConnectAsync(new IPEndPoint(address, port), timeout.Token);
        return new RawClient(socket);
    }

    public Task SendAsync(string text) => SendAsync(Encoding.Latin1.GetBytes(text));

    public async Task SendAsync(ReadOnlyMemory<byte> bytes)
    {
        using var timeout = new CancellationTokenSource(DefaultTimeout);
        while (!bytes.IsEmpty)
        {
            var sent = await _socket.SendAsync(bytes, SocketFlags.None, timeout.Token);
            bytes = bytes[sent..];
        }
    }

    /// <summary>Shuts down the sending side (the server sees end of input) or the whole socket.</summary>
    public void Shutdown(SocketShutdown how) => _socket.Shutdown(how);

    /// <summary>Resets the connection (RST, no FIN): what a crashed client or a killed process does.</summary>
    public void Reset()
    {
        _socket.LingerState = new LingerOption(true, 0);
        _socket.Close();
    }

    /// <summary>Reads one response; <paramref name="headRequest"/>: it answers a HEAD (no body whatever the headers say).</summary>
    public async Task<RawResponse> ReadResponseAsync(bool headRequest = false, TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? DefaultTimeout);
        var token = cts.Token;
        var head = await _input.ReadHeadAsync(token)
            ?? throw new EndOfStreamException($"the connection closed before a response head; received: {_input.PendingText}");
        var lines = head[..^4].Split("\r\n");
        var statusLine = lines[0];
        Assert.True(statusLine.StartsWith("HTTP/1.1 ", StringComparison.Ordinal) && statusLine.Length >= 12, $"bad status line: {statusLine}");
        var status = int.Parse(statusLine.AsSpan(9, 3), CultureInfo.InvariantCulture);
        var headers = lines.Skip(1).Select(ParseField).ToList();
        var response = new RawResponseBuilder(statusLine, status, head, headers);
        string? Find(string name) => headers.Where(h => string.Equals(h.Key, name, StringComparison.OrdinalIgnoreCase)).Select(h => h.Value).LastOrDefault();

        if (headRequest || status is < 200 or 204 or 304)
        {
            return response.Build();
        }

        if (Find("transfer-encoding") is { } te && te.EndsWith("chunked", StringComparison.OrdinalIgnoreCase))
        {
            await ReadChunkedAsync(response, token);
            return response.Build();
        }

        if (Find("content-length") is { } length)
        {
            var bytes = await ReadExactlyAsync(int.Parse(length, CultureInfo.InvariantCulture), token);
            response.Body.Write(bytes);
            response.Raw.Write(bytes);
            return response.Build();
        }

        // Close-delimited.
        while (await _input.FillAsync(token))
        {
        }

        response.Body.Write(_input.Pending);
        response.Raw.Write(_input.Pending);
        _input.Consume(_input.Count);
        response.EndedByClose = true;
        return response.Build();
    }

    /// <summary>Reads a response head only (for responses whose body never ends).</summary>
    public async Task<string> ReadResponseHeadOnlyAsync(TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? DefaultTimeout);
        return await _input.ReadHeadAsync(cts.Token) ?? throw new EndOfStreamException("the connection closed before a response head");
    }

    /// <summary>True when the server closes the connection (FIN or reset) within the timeout with no further bytes.</summary>
    public async Task<bool> ClosesAsync(TimeSpan timeout)
    {
        Assert.True(_input.Count == 0, $"unexpected bytes: {_input.PendingText}");
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            if (!await _input.FillAsync(cts.Token))
            {
                return true;
            }

            Assert.Fail($"unexpected bytes instead of a close: {_input.PendingText}");
            return false;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (SocketException)
        {
            return true;
        }
    }

    /// <summary>Reads and discards until the server closes or resets the connection; the byte count, or a
    /// <see cref="TimeoutException"/> when it is still open after <paramref name="timeout"/>.</summary>
    public async Task<long> DrainUntilClosedAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        long total = _input.Count;
        _input.Consume(_input.Count);
        var buffer = new byte[256 * 1024];
        try
        {
            // Bounded by the timeout.
            int read;
            while ((read = await _socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token)) > 0)
            {
                total += read;
            }
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"the connection was still open after {timeout} and {total} bytes");
        }
        catch (SocketException)
        {
            // Reset: closed as well.
        }

        return total;
    }

    /// <summary>Whatever arrives within <paramref name="wait"/> (for checks that nothing more was sent).</summary>
    public async Task<string> DrainAvailableAsync(TimeSpan wait)
    {
        using var cts = new CancellationTokenSource(wait);
        try
        {
            while (await _input.FillAsync(cts.Token))
            {
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (SocketException)
        {
        }

        var text = _input.PendingText;
        _input.Consume(_input.Count);
        return text;
    }

    private async Task ReadChunkedAsync(RawResponseBuilder response, CancellationToken token)
    {
        while (true)
        {
            var line = await ReadLineAsync(response.Raw, token);
            var semicolon = line.IndexOf(';', StringComparison.Ordinal);
            var size = int.Parse(semicolon < 0 ? line : line[..semicolon], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            if (size == 0)
            {
                break;
            }

            var data = await ReadExactlyAsync(size, token);
            response.Body.Write(data);
            response.Raw.Write(data);
            var crlf = await ReadExactlyAsync(2, token);
            response.Raw.Write(crlf);
            Assert.Equal("\r\n", Encoding.Latin1.GetString(crlf));
        }

        while (true)
        {
            var trailer = await ReadLineAsync(response.Raw, token);
            if (trailer.Length == 0)
            {
                return;
            }

            response.Trailers.Add(ParseField(trailer));
        }
    }

    private async Task<string> ReadLineAsync(MemoryStream raw, CancellationToken token)
    {
        int end;
        while ((end = _input.Pending.IndexOf("\r\n"u8)) < 0)
        {
            if (!await _input.FillAsync(token))
            {
                throw new EndOfStreamException("the connection closed inside a chunked body; raw so far: " + Encoding.Latin1.GetString(raw.ToArray()));
            }
        }

        var line = Encoding.Latin1.GetString(_input.Pending[..end]);
        raw.Write(_input.Pending[..(end + 2)]);
        _input.Consume(end + 2);
        return line;
    }

    private async Task<byte[]> ReadExactlyAsync(int count, CancellationToken token)
    {
        var result = new byte[count];
        var copied = 0;
        while (copied < count)
        {
            if (_input.Count == 0 && !await _input.FillAsync(token))
            {
                throw new EndOfStreamException($"the connection closed after {copied} of {count} body bytes");
            }

            var take = Math.Min(count - copied, _input.Count);
            _input.Pending[..take].CopyTo(result.AsSpan(copied));
            copied += take;
            _input.Consume(take);
        }

        return result;
    }

    internal static KeyValuePair<string, string> ParseField(string line)
    {
        var colon = line.IndexOf(':', StringComparison.Ordinal);
        Assert.True(colon > 0, $"not a field line: {line}");
        return new(line[..colon], line[(colon + 1)..].Trim(' ', '\t'));
    }

    public void Dispose() => _socket.Dispose();

    private sealed class RawResponseBuilder(string statusLine, int status, string head, List<KeyValuePair<string, string>> headers)
    {
        public MemoryStream Body { get; } = new();

        public MemoryStream Raw { get; } = new();

        public List<KeyValuePair<string, string>> Trailers { get; } = [];

        public bool EndedByClose { get; set; }

        public RawResponse Build() => new()
        {
            StatusLine = statusLine,
            Status = status,
            Head = head,
            Headers = headers,
            Body = Body.ToArray(),
            RawBody = Raw.ToArray(),
            Trailers = Trailers,
            EndedByClose = EndedByClose,
        };
    }
}

/// <summary>A request as a <see cref="FakeApp"/> received it.</summary>
internal sealed class FakeRequest
{
    public required int Connection { get; init; }

    /// <summary>The request's index on its connection (0 for the first).</summary>
    public required int Index { get; init; }

    public required string RequestLine { get; init; }

    public required string Method { get; init; }

    public required string Target { get; init; }

    /// <summary>Every header line as received, in order.</summary>
    public required IReadOnlyList<KeyValuePair<string, string>> Headers { get; init; }

    public required string Head { get; init; }

    public required byte[] Body { get; init; }

    public string Sha256 => Convert.ToHexStringLower(SHA256.HashData(Body));

    public string? Header(string name)
    {
        var values = Headers.Where(h => string.Equals(h.Key, name, StringComparison.OrdinalIgnoreCase)).Select(h => h.Value).ToList();
        Assert.True(values.Count <= 1, $"{name} appears {values.Count} times in\n{Head}");
        return values.Count == 0 ? null : values[0];
    }

    public bool Has(string name) => Headers.Any(h => string.Equals(h.Key, name, StringComparison.OrdinalIgnoreCase));
}

/// <summary>The app side of one connection accepted by a <see cref="FakeApp"/>.</summary>
internal sealed class FakeAppConnection(Socket socket, int id)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    public int Id { get; } = id;

    public Socket Socket { get; } = socket;

    /// <summary>Set by a handler: close the connection after this response (without saying so).</summary>
    public bool CloseAfterResponse { get; set; }

    public Task SendAsync(string text) => SendAsync(Encoding.Latin1.GetBytes(text));

    /// <summary>Closes the connection after a while (FIN, no reset), as an app's keep-alive timeout does.</summary>
    public async Task CloseGracefullyAfterAsync(TimeSpan delay)
    {
        await Task.Delay(delay);
        try
        {
            Socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
        }

        Socket.Dispose();
    }

    public async Task SendAsync(ReadOnlyMemory<byte> bytes)
    {
        using var timeout = new CancellationTokenSource(Timeout);
        while (!bytes.IsEmpty)
        {
            var sent = await Socket.SendAsync(bytes, SocketFlags.None, timeout.Token);
            bytes = bytes[sent..];
        }
    }

    /// <summary>Waits for the sidecar to close this connection (end of stream or reset); false on timeout or data.</summary>
    public async Task<bool> WaitForCloseAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        var buffer = new byte[256];
        try
        {
            return await Socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token) == 0;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (SocketException)
        {
            return true;
        }
    }
}

/// <summary>
/// A raw-socket HTTP/1.1 app on 127.0.0.1: parses each request head and its Content-Length body, records it, and lets the
/// test's handler write exactly the bytes it wants (interim responses, framings, closes, long polls).
/// </summary>
internal sealed class FakeApp : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentBag<Socket> _sockets = [];
    private readonly List<Task> _tasks = [];
    private readonly Task _acceptLoop;
    private int _connections;

    private FakeApp(Func<FakeRequest, FakeAppConnection, Task> handler)
    {
        Handler = handler;
        _listener = LoopbackListener.Listen();
        Port = ((IPEndPoint)_listener.LocalEndPoint!).Port;
        _acceptLoop = LoopbackListener.AcceptAllAsync(_listener, OnAccepted, _stop.Token);
    }

    public int Port { get; }

    /// <summary>What answers each request (replaceable between requests).</summary>
    public Func<FakeRequest, FakeAppConnection, Task> Handler { get; set; }

    public Channel<FakeRequest> Requests { get; } = Channel.CreateUnbounded<FakeRequest>();

    /// <summary>Connections the app saw closed by the sidecar (their ids).</summary>
    public Channel<int> ClosedBySidecar { get; } = Channel.CreateUnbounded<int>();

    public int Connections => Volatile.Read(ref _connections);

    public static FakeApp Start(Func<FakeRequest, FakeAppConnection, Task>? handler = null) => new(handler ?? EchoAsync);

    /// <summary>The default answer: Content-Length body <c>{method} {target} {body bytes} {sha256}</c>.</summary>
    public static Task EchoAsync(FakeRequest request, FakeAppConnection connection)
    {
        var body = $"{request.Method} {request.Target} {request.Body.Length} {request.Sha256}";
        return connection.SendAsync($"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {Encoding.UTF8.GetByteCount(body)}\r\n\r\n{body}");
    }

    public async Task<FakeRequest> NextRequestAsync(TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(15));
        return await Requests.Reader.ReadAsync(cts.Token);
    }

    public async Task<int> NextClosedAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        return await ClosedBySidecar.Reader.ReadAsync(cts.Token);
    }

    /// <summary>Stops accepting and closes every connection (the app went away).</summary>
    public async Task StopAsync()
    {
        await _stop.CancelAsync();
        _listener.Dispose();
        foreach (var socket in _sockets)
        {
            socket.Dispose();
        }

        try
        {
            await _acceptLoop.WaitAsync(TimeSpan.FromSeconds(5));
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }

        Task[] tasks;
        lock (_tasks)
        {
            tasks = [.. _tasks];
        }

        try
        {
            await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(5));
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException or TimeoutException or IOException)
        {
        }
    }

    private void OnAccepted(Socket socket)
    {
        _sockets.Add(socket);
        var id = Interlocked.Increment(ref _connections);
        lock (_tasks)
        {
            _tasks.Add(ServeAsync(new FakeAppConnection(socket, id)));
        }
    }

    private async Task ServeAsync(FakeAppConnection connection)
    {
        var socket = connection.Socket;
        var input = new ReceiveBuffer(socket);
        var index = 0;
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                var head = await input.ReadHeadAsync(_stop.Token);
                if (head is null)
                {
                    if (input.Count == 0)
                    {
                        ClosedBySidecar.Writer.TryWrite(connection.Id);
                    }

                    socket.Dispose();
                    return;
                }

                var lines = head[..^4].Split("\r\n");
                var parts = lines[0].Split(' ');
                var headers = lines.Skip(1).Select(RawClient.ParseField).ToList();
                var length = headers.Where(h => string.Equals(h.Key, "content-length", StringComparison.OrdinalIgnoreCase)).Select(h => long.Parse(h.Value, CultureInfo.InvariantCulture)).FirstOrDefault();
                Assert.False(headers.Any(h => string.Equals(h.Key, "transfer-encoding", StringComparison.OrdinalIgnoreCase)), "the fake app reads Content-Length bodies only");
                using var body = new MemoryStream();
                while (body.Length < length)
                {
                    if (input.Count == 0 && !await input.FillAsync(_stop.Token))
                    {
                        socket.Dispose();
                        return;
                    }

                    var take = (int)Math.Min(length - body.Length, input.Count);
                    body.Write(input.Pending[..take]);
                    input.Consume(take);
                }

                var request = new FakeRequest
                {
                    Connection = connection.Id,
                    Index = index++,
                    RequestLine = lines[0],
                    Method = parts[0],
                    Target = parts[1],
                    Headers = headers,
                    Head = head,
                    Body = body.ToArray(),
                };
                Requests.Writer.TryWrite(request);
                await Handler(request, connection);
                if (connection.CloseAfterResponse)
                {
                    socket.Shutdown(SocketShutdown.Both);
                    socket.Dispose();
                    return;
                }
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or OperationCanceledException)
        {
            socket.Dispose();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _stop.Dispose();
    }
}

/// <summary>One sidecar's fast-path counters, read from its own meter (other hosts in this process count separately).</summary>
internal sealed class FastPathCounters : IDisposable
{
    private readonly MeterListener _listener;
    private readonly ConcurrentDictionary<string, long> _handovers = new(StringComparer.Ordinal);
    private long _served;

    public FastPathCounters(TestSidecar sidecar)
    {
        var factory = sidecar.Services.GetRequiredService<IMeterFactory>();
        _listener = new MeterListener
        {
            InstrumentPublished = (instrument, listener) =>
            {
                if (ReferenceEquals(instrument.Meter.Scope, factory)
                    && instrument.Name is SidecarMetricNames.FastPathRequests or SidecarMetricNames.FastPathHandovers)
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            },
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            if (instrument.Name == SidecarMetricNames.FastPathRequests)
            {
                Interlocked.Add(ref _served, value);
                return;
            }

            foreach (var tag in tags)
            {
                if (tag.Key == SidecarMetricNames.ReasonTag)
                {
                    _handovers.AddOrUpdate((string)tag.Value!, value, (_, old) => old + value);
                }
            }
        });
        _listener.Start();
    }

    public long Served => Interlocked.Read(ref _served);

    public long Handovers(string reason) => _handovers.GetValueOrDefault(reason);

    public long TotalHandovers => _handovers.Values.Sum();

    public string Describe() =>
        $"served {Served}; handovers {string.Join(", ", _handovers.OrderBy(static p => p.Key, StringComparer.Ordinal).Select(static p => $"{p.Key}={p.Value}"))}";

    /// <summary>Waits until the condition holds (counters are updated after the response is flushed), then returns.</summary>
    public async Task WaitForAsync(Func<FastPathCounters, bool> condition, string what)
    {
        var deadline = Stopwatch.GetTimestamp() + (Stopwatch.Frequency * 10);
        while (!condition(this))
        {
            Assert.True(Stopwatch.GetTimestamp() < deadline, $"fast-path counters never reached: {what} ({Describe()})");
            await Task.Delay(20);
        }
    }

    public void Dispose() => _listener.Dispose();
}

/// <summary>A sidecar alone in its map (it owns every key) in front of a <see cref="FakeApp"/>; the map file can be rewritten.</summary>
internal sealed class SoloSidecar : IAsyncDisposable
{
    private bool _stopped;

    private SoloSidecar(string directory, TestSidecar sidecar, int port)
    {
        Directory = directory;
        Sidecar = sidecar;
        Port = port;
    }

    public string Directory { get; }

    public TestSidecar Sidecar { get; }

    public int Port { get; }

    public string MapFile => Path.Combine(Directory, "map.yaml");

    public static async Task<SoloSidecar> StartAsync(
        int appPort, IDictionary<string, string?>? settings = null, string rules = "[\"header:x-shard-key\"]", Action<Microsoft.AspNetCore.Builder.WebApplicationBuilder>? configure = null)
    {
        var directory = System.IO.Directory.CreateTempSubdirectory("sharding-fastpath-").FullName;
        var port = TestSidecar.FreePort();
        await File.WriteAllTextAsync(Path.Combine(directory, "map.yaml"), Yaml(1, [("pod-0", port)], rules));
        var sidecar = await TestSidecar.StartAsync("pod-0", port, appPort, Path.Combine(directory, "map.yaml"), settings, configure: configure);
        return new SoloSidecar(directory, sidecar, port);
    }

    public static string Yaml(long generation, IReadOnlyList<(string Name, int Port)> members, string rules = "[\"header:x-shard-key\"]")
    {
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"generation: {generation}\nservice: echo\nalgorithm: maglev\nmembers:\n");
        foreach (var (name, port) in members)
        {
            text.Append(CultureInfo.InvariantCulture, $"  - name: {name}\n    address: 127.0.0.1:{port}\n");
        }

        text.Append(CultureInfo.InvariantCulture, $"keys:\n  rules: {rules}\n");
        return text.ToString();
    }

    /// <summary>Rewrites the map file and waits until the sidecar runs the new generation.</summary>
    public async Task ChangeMapAsync(long generation, IReadOnlyList<(string Name, int Port)> members)
    {
        var temp = MapFile + ".tmp";
        await File.WriteAllTextAsync(temp, Yaml(generation, members));
        File.Move(temp, MapFile, overwrite: true);
        var deadline = Stopwatch.GetTimestamp() + (Stopwatch.Frequency * 10);
        while (Sidecar.Store.Generation < generation)
        {
            Assert.True(Stopwatch.GetTimestamp() < deadline, "the sidecar did not load the new map within 10 s");
            await Task.Delay(10);
        }
    }

    /// <summary>Stops and disposes the sidecar (what a pod's shutdown does); <see cref="DisposeAsync"/> does not do it again.</summary>
    public async Task StopSidecarAsync()
    {
        if (!_stopped)
        {
            _stopped = true;
            await Sidecar.DisposeAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopSidecarAsync();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

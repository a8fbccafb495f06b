using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Sharding.Sidecar.PeerLink;
using Sharding.Sidecar.Transport;

namespace Sharding.Sidecar.Tests.PeerLink;

/// <summary>
/// The peer link between two real loopback endpoints on an epoll loop: tunnels keep their bytes apart, flow control stops
/// one stream without stopping the others, resets, GOAWAY and a closing link reach both sides, and a plain HTTP/2 server
/// (a sidecar that does not serve links) is told apart.
/// </summary>
public sealed class LinkConnectionTests : IAsyncLifetime
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    private readonly EpollLoop _loop = new("link-test-io", 0, inline: false);
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private readonly Channel<LinkStream> _accepted = Channel.CreateUnbounded<LinkStream>();
    private LinkConnection _client = null!;
    private LinkConnection _server = null!;
    private EpollConnection _serverConnection = null!;

    public async Task InitializeAsync()
    {
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen();
        var connecting = LinkConnection.ConnectAsync(_listener.LocalEndPoint!, _loop, Timeout, metrics: null, NullLogger.Instance, CancellationToken.None);
        var socket = await _listener.AcceptAsync().WaitAsync(Timeout);
        _serverConnection = new EpollConnection(EpollSocket.Attach(socket, _loop), MemoryPool<byte>.Shared, 1 << 20, 1 << 20, NullLogger.Instance);
        _serverConnection.Start();
        _server = LinkConnection.Accept(_serverConnection, _loop, stream => _accepted.Writer.TryWrite(stream), metrics: null, NullLogger.Instance);
        _client = await connecting.WaitAsync(Timeout) ?? throw new InvalidOperationException("the server did not answer as a link");
    }

    public async Task DisposeAsync()
    {
        _client.Close(null);
        _server.Close(null);
        await _client.Closed.WaitAsync(Timeout);
        await _serverConnection.DisposeAsync();
        _listener.Dispose();
        _loop.Dispose();
    }

    [Fact]
    public async Task Tunnels_carry_their_own_bytes_both_ways_and_end_cleanly()
    {
        var streams = new List<(LinkStream Client, LinkStream Server)>();
        for (var i = 0; i < 20; i++)
        {
            var client = _client.TryOpenStream()!;
            await client.SendAsync(System.Text.Encoding.ASCII.GetBytes($"request {i};"));
            streams.Add((client, await _accepted.Reader.ReadAsync().AsTask().WaitAsync(Timeout)));
        }

        Assert.Equal(20, _client.StreamCount);
        for (var i = 0; i < streams.Count; i++)
        {
            var (client, server) = streams[i];
            Assert.Equal($"request {i};", await ReadTextAsync(server.Input, $"request {i};".Length));
            await server.SendAsync(System.Text.Encoding.ASCII.GetBytes($"response {i}"));
            await server.EndAsync();
            server.Release(); // the owner's session is over (as LinkStreamConnection does when it is disposed)

            var received = new byte[64];
            var length = 0;
            int read;
            while ((read = await client.ReceiveAsync(received.AsMemory(length), CancellationToken.None).AsTask().WaitAsync(Timeout)) > 0)
            {
                length += read;
            }

            Assert.Equal($"response {i}", System.Text.Encoding.ASCII.GetString(received, 0, length));
            client.Release();
        }

        // Ended and released on both sides: every stream is forgotten on both sides.
        await WaitUntilAsync(() => _client.StreamCount == 0 && _server.StreamCount == 0);
    }

    [Fact]
    public async Task A_stream_nobody_reads_stops_its_sender_at_the_window_and_the_other_streams_go_on()
    {
        var body = RandomNumberGenerator.GetBytes(4 * LinkConnection.StreamWindow);
        var slow = _client.TryOpenStream()!;
        var sending = slow.SendAsync(body).AsTask();
        var slowServer = await _accepted.Reader.ReadAsync().AsTask().WaitAsync(Timeout);
        await Task.Delay(300);
        Assert.False(sending.IsCompleted, "the sender went past the stream's window");

        var other = _client.TryOpenStream()!;
        await other.SendAsync("ping"u8.ToArray());
        var otherServer = await _accepted.Reader.ReadAsync().AsTask().WaitAsync(Timeout);
        Assert.Equal("ping", await ReadTextAsync(otherServer.Input, 4));

        // Reading the slow stream credits its window back: the whole body arrives intact and the send completes.
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long total = 0;
        while (total < body.Length)
        {
            var result = await slowServer.Input.ReadAsync().AsTask().WaitAsync(Timeout);
            var length = (int)result.Buffer.Length;
            foreach (var segment in result.Buffer)
            {
                hash.AppendData(segment.Span);
            }

            total += length;
            slowServer.Input.AdvanceTo(result.Buffer.End);
            slowServer.Consumed(length);
        }

        await sending.WaitAsync(Timeout);
        Assert.Equal(SHA256.HashData(body), hash.GetHashAndReset());
    }

    [Fact]
    public async Task Releasing_a_stream_before_it_ended_resets_it_on_the_other_side()
    {
        var client = _client.TryOpenStream()!;
        await client.SendAsync("half a request"u8.ToArray());
        var server = await _accepted.Reader.ReadAsync().AsTask().WaitAsync(Timeout);
        var aborted = server.Aborted;
        Assert.Equal("half a request", await ReadTextAsync(server.Input, 14));

        client.Release();
        await Assert.ThrowsAnyAsync<IOException>(async () => await server.Input.ReadAsync().AsTask().WaitAsync(Timeout));
        await WaitUntilAsync(() => aborted.IsCancellationRequested);
        await Assert.ThrowsAsync<SocketException>(async () => await server.SendAsync("late"u8.ToArray()));
        await WaitUntilAsync(() => _server.StreamCount == 0);
    }

    [Fact]
    public async Task The_owners_clean_end_delivers_its_answer_then_says_what_came_after_was_not_processed()
    {
        var client = _client.TryOpenStream()!;
        await client.SendAsync("request 1"u8.ToArray());
        var server = new LinkStreamConnection(await _accepted.Reader.ReadAsync().AsTask().WaitAsync(Timeout), _serverConnection);
        Assert.Equal("request 1", await ReadTextAsync(server.Transport.Input, 9));
        await server.Transport.Output.WriteAsync("answer 1"u8.ToArray());

        // The owner's session ends (a drain, max age) as request 2 arrives: unread, so not processed.
        await client.SendAsync("request 2"u8.ToArray());
        await server.DisposeAsync();

        Assert.Equal("answer 1", await ReadTextAsync(client.Input, 8));
        Assert.Equal(0, await client.ReceiveAsync(new byte[16], CancellationToken.None).AsTask().WaitAsync(Timeout)); // a clean end
        Assert.True(client.Refused);
        await WaitUntilAsync(() => _client.StreamCount == 0 && _server.StreamCount == 0);
    }

    [Fact]
    public async Task A_closing_link_resets_its_streams_and_takes_no_new_ones()
    {
        var client = _client.TryOpenStream()!;
        await client.SendAsync("x"u8.ToArray());
        await _accepted.Reader.ReadAsync().AsTask().WaitAsync(Timeout);

        _server.Close(null);
        await _client.Closed.WaitAsync(Timeout);
        var error = await Assert.ThrowsAsync<SocketException>(async () => await client.ReceiveAsync(new byte[16], CancellationToken.None));
        Assert.Equal(SocketError.ConnectionReset, error.SocketErrorCode);
        Assert.Null(_client.TryOpenStream());
        Assert.False(_client.IsUsable);
    }

    [Fact]
    public async Task GoAway_refuses_new_streams_lets_open_ones_finish_and_closes_the_link_after_the_last()
    {
        var client = _client.TryOpenStream()!;
        await client.SendAsync("before"u8.ToArray());
        var server = await _accepted.Reader.ReadAsync().AsTask().WaitAsync(Timeout);

        _server.GoAway();
        await WaitUntilAsync(() => !_client.IsUsable);
        Assert.Null(_client.TryOpenStream());

        // The open stream still works both ways.
        Assert.Equal("before", await ReadTextAsync(server.Input, 6));
        await server.SendAsync("answer"u8.ToArray());
        await server.EndAsync();
        server.Release();
        var buffer = new byte[16];
        Assert.Equal(6, await client.ReceiveAsync(buffer, CancellationToken.None).AsTask().WaitAsync(Timeout));
        Assert.Equal(0, await client.ReceiveAsync(buffer, CancellationToken.None).AsTask().WaitAsync(Timeout));
        client.Release();

        // Its last stream is over: the link closes, and what was written before (the answer, its end) was not lost.
        await _client.Closed.WaitAsync(Timeout);
    }

    [Fact]
    public async Task A_plain_http2_server_is_not_a_link()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Protocols = HttpProtocols.Http2));
        await using var app = builder.Build();
        app.Run(context => context.Response.WriteAsync("h2"));
        await app.StartAsync();
        var address = new Uri(app.Urls.First());

        var link = await LinkConnection.ConnectAsync(new IPEndPoint(IPAddress.Loopback, address.Port), _loop, Timeout, metrics: null, NullLogger.Instance, CancellationToken.None);
        Assert.Null(link);
    }

    [Fact]
    public async Task A_stream_the_other_side_refuses_ends_cleanly_and_says_it_was_refused()
    {
        // A peer written frame by frame: it answers the link's SETTINGS as a link, then refuses the first stream (as an
        // owner does for a stream that crossed its GOAWAY): nothing sent on it was seen, so the request may go again.
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        var peer = Task.Run(async () =>
        {
            using var socket = await listener.AcceptAsync();
            var settings = new byte[LinkFrames.HeaderLength + 6];
            LinkFrames.WriteHeader(settings, 6, LinkFrames.Settings, 0, 0);
            settings[LinkFrames.HeaderLength] = 0xf5;
            settings[LinkFrames.HeaderLength + 1] = 0xa1;
            settings[LinkFrames.HeaderLength + 5] = 1;
            await socket.SendAsync(settings);

            // Bounded by the timeout: reads frames until the first HEADERS.
            var received = new List<byte>();
            var buffer = new byte[4096];
            var offset = LinkFrames.Preface.Length;
            while (true)
            {
                var read = await socket.ReceiveAsync(buffer, SocketFlags.None).WaitAsync(Timeout);
                Assert.True(read > 0, "the link closed before opening a stream");
                received.AddRange(buffer.AsSpan(0, read));
                while (received.Count >= offset + LinkFrames.HeaderLength)
                {
                    LinkFrames.ReadHeader(received.ToArray().AsSpan(offset), out var length, out var type, out _, out var streamId);
                    if (type == LinkFrames.Headers)
                    {
                        var reset = new byte[LinkFrames.HeaderLength + 4];
                        LinkFrames.WriteHeader(reset, 4, LinkFrames.RstStream, 0, streamId);
                        reset[^1] = (byte)LinkFrames.RefusedStream;
                        await socket.SendAsync(reset);
                        await Task.Delay(Timeout); // keeps the link open while the test looks
                        return;
                    }

                    offset += LinkFrames.HeaderLength + length;
                }
            }
        });

        var link = await LinkConnection.ConnectAsync(listener.LocalEndPoint!, _loop, Timeout, metrics: null, NullLogger.Instance, CancellationToken.None);
        Assert.NotNull(link);
        var stream = link.TryOpenStream()!;
        Assert.Equal(0, await stream.ReceiveAsync(new byte[16], CancellationToken.None).AsTask().WaitAsync(Timeout));
        Assert.True(stream.Refused);
        await Assert.ThrowsAsync<SocketException>(async () => await stream.SendAsync("GET / HTTP/1.1\r\n\r\n"u8.ToArray()));
        link.Close(null);
        await link.Closed.WaitAsync(Timeout);
        Assert.False(peer.IsFaulted, peer.Exception?.ToString());
    }

    [Fact]
    public async Task A_peer_that_stops_reading_holds_the_senders_at_a_bounded_buffer_and_every_byte_arrives_once_it_reads()
    {
        // A peer written frame by frame: it grants every stream a 16 MiB window and the connection 1 GiB, then reads nothing
        // for a while. The windows would let 32 MiB pile up in the link's buffer; the senders must wait at MaxUnsentBytes.
        const int streams = 32;
        const int perStream = 1 << 20;
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        var reading = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var received = new Dictionary<int, long>();
        var peer = Task.Run(async () =>
        {
            using var socket = await listener.AcceptAsync();
            var setup = new byte[(LinkFrames.HeaderLength + 12) + (LinkFrames.HeaderLength + 4)];
            LinkFrames.WriteHeader(setup, 12, LinkFrames.Settings, 0, 0);
            BinaryPrimitives.WriteUInt16BigEndian(setup.AsSpan(LinkFrames.HeaderLength), LinkFrames.SettingPeerLink);
            BinaryPrimitives.WriteUInt32BigEndian(setup.AsSpan(LinkFrames.HeaderLength + 2), 1);
            BinaryPrimitives.WriteUInt16BigEndian(setup.AsSpan(LinkFrames.HeaderLength + 6), LinkFrames.SettingInitialWindowSize);
            BinaryPrimitives.WriteUInt32BigEndian(setup.AsSpan(LinkFrames.HeaderLength + 8), 16 << 20);
            LinkFrames.WriteHeader(setup.AsSpan(LinkFrames.HeaderLength + 12), 4, LinkFrames.WindowUpdate, 0, 0);
            BinaryPrimitives.WriteUInt32BigEndian(setup.AsSpan(2 * LinkFrames.HeaderLength + 12), 1 << 30);
            await socket.SendAsync(setup);
            await reading.Task.WaitAsync(Timeout);

            // Bounded by the timeout on every read: counts DATA bytes per stream until every stream's arrived.
            var buffer = new byte[1 << 20];
            int filled = 0, offset = LinkFrames.Preface.Length;
            long total = 0;
            while (total < (long)streams * perStream)
            {
                var read = await socket.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None).AsTask().WaitAsync(Timeout);
                Assert.True(read > 0, "the link closed early");
                filled += read;
                while (filled - offset >= LinkFrames.HeaderLength)
                {
                    LinkFrames.ReadHeader(buffer.AsSpan(offset), out var length, out var type, out _, out var streamId);
                    if (filled - offset < LinkFrames.HeaderLength + length)
                    {
                        break;
                    }

                    if (type == LinkFrames.Data)
                    {
                        received[streamId] = received.GetValueOrDefault(streamId) + length;
                        total += length;
                    }

                    offset += LinkFrames.HeaderLength + length;
                }

                buffer.AsSpan(offset, filled - offset).CopyTo(buffer);
                filled -= offset;
                offset = 0;
            }
        });

        var link = await LinkConnection.ConnectAsync(listener.LocalEndPoint!, _loop, Timeout, metrics: null, NullLogger.Instance, CancellationToken.None);
        Assert.NotNull(link);
        var payload = new byte[perStream];
        var sends = Enumerable.Range(0, streams).Select(_ => link.TryOpenStream()!).Select(s => Task.Run(async () => await s.SendAsync(payload))).ToArray();

        // The socket's buffers and its pipe fill up; what the senders wrote beyond that waits in the link, bounded.
        var unsent = 0L;
        var started = System.Diagnostics.Stopwatch.StartNew();
        while (started.Elapsed < TimeSpan.FromSeconds(1.5))
        {
            unsent = Math.Max(unsent, link.UnsentBytes);
            await Task.Delay(10);
        }

        Assert.Contains(sends, send => !send.IsCompleted); // held, so the bound was reached
        Assert.InRange(unsent, 1, LinkConnection.MaxUnsentBytes + LinkFrames.HeaderLength + LinkFrames.MaxPayload);

        reading.SetResult();
        await Task.WhenAll(sends).WaitAsync(Timeout);
        await peer.WaitAsync(Timeout);
        Assert.Equal(streams, received.Count);
        Assert.All(received.Values, bytes => Assert.Equal(perStream, bytes));
        link.Close(null);
        await link.Closed.WaitAsync(Timeout);
    }

    [Theory]
    [InlineData(true, 1)]
    [InlineData(false, -1)]
    public void The_first_settings_frame_tells_a_link_from_an_http2_client(bool withPrivateSetting, int expected)
    {
        var frame = new List<byte>(LinkFrames.Preface.ToArray());
        var settings = withPrivateSetting
            ? new byte[] { 0x00, 0x04, 0x00, 0x10, 0x00, 0x00, 0xf5, 0xa1, 0x00, 0x00, 0x00, 0x01 }
            : new byte[] { 0x00, 0x04, 0x00, 0x10, 0x00, 0x00 };
        var header = new byte[LinkFrames.HeaderLength];
        LinkFrames.WriteHeader(header, settings.Length, LinkFrames.Settings, 0, 0);
        frame.AddRange(header);
        frame.AddRange(settings);
        var bytes = frame.ToArray();

        Assert.Equal(expected, LinkFrames.IsPeerLink(new ReadOnlySequence<byte>(bytes)));
        Assert.Equal(0, LinkFrames.IsPeerLink(new ReadOnlySequence<byte>(bytes[..^1]))); // the frame is not all here yet
        Assert.Equal(0, LinkFrames.IsPeerLink(new ReadOnlySequence<byte>(bytes[..30])));
    }

    private static async Task<string> ReadTextAsync(PipeReader input, int length)
    {
        // Bounded by the timeout on every read.
        while (true)
        {
            var result = await input.ReadAsync().AsTask().WaitAsync(Timeout);
            if (result.Buffer.Length >= length || result.IsCompleted)
            {
                var text = System.Text.Encoding.ASCII.GetString(result.Buffer.Slice(0, Math.Min(length, result.Buffer.Length)).ToArray());
                input.AdvanceTo(result.Buffer.GetPosition(Math.Min(length, result.Buffer.Length)));
                return text;
            }

            input.AdvanceTo(result.Buffer.Start, result.Buffer.End);
        }
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        var started = System.Diagnostics.Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(started.Elapsed < Timeout, "condition not met in time");
            await Task.Delay(20);
        }
    }
}

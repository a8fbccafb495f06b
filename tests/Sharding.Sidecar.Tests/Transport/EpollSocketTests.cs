using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Sharding.Sidecar.Transport;

namespace Sharding.Sidecar.Tests.Transport;

/// <summary>The epoll socket against real loopback peers: readiness after a drained receive, ends, errors, cancellation and backpressure.</summary>
public sealed class EpollSocketTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    private readonly EpollLoop _loop = new("test-io", 0, inline: false);
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);

    public EpollSocketTests()
    {
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen();
    }

    public void Dispose()
    {
        _listener.Dispose();
        _loop.Dispose();
    }

    [Fact]
    public async Task A_receive_that_drained_the_socket_waits_for_the_next_bytes_and_then_gets_them()
    {
        var (client, server) = await ConnectAsync();
        using (client)
        using (server)
        {
            await server.SendAsync("hello"u8.ToArray());
            var buffer = new byte[1024];
            Assert.Equal(5, await client.ReceiveAsync(buffer).AsTask().WaitAsync(Timeout));

            var next = client.ReceiveAsync(buffer).AsTask();
            await Task.Delay(100);
            Assert.False(next.IsCompleted);

            await server.SendAsync("abc"u8.ToArray());
            Assert.Equal(3, await next.WaitAsync(Timeout));
            Assert.Equal("abc"u8.ToArray(), buffer[..3]);
        }
    }

    [Fact]
    public async Task A_receive_that_filled_its_buffer_reads_the_rest_without_waiting_for_an_edge()
    {
        var (client, server) = await ConnectAsync();
        using (client)
        using (server)
        {
            await server.SendAsync("0123456789"u8.ToArray());
            await Task.Delay(50); // all ten bytes queued
            var buffer = new byte[4];
            Assert.Equal(4, await client.ReceiveAsync(buffer).AsTask().WaitAsync(Timeout));
            var second = client.ReceiveAsync(buffer);
            Assert.True(second.IsCompleted, "the buffer was full, so more may be queued: the receive must try at once");
            Assert.Equal(4, await second);
            Assert.Equal(2, await client.ReceiveAsync(buffer).AsTask().WaitAsync(Timeout));
            Assert.Equal("89"u8.ToArray(), buffer[..2]);
        }
    }

    [Fact]
    public async Task The_end_of_the_stream_is_zero_every_time()
    {
        var (client, server) = await ConnectAsync();
        using (client)
        using (server)
        {
            var buffer = new byte[16];
            var pending = client.ReceiveAsync(buffer).AsTask();
            server.Shutdown(SocketShutdown.Send);
            Assert.Equal(0, await pending.WaitAsync(Timeout));
            Assert.Equal(0, await client.ReceiveAsync(buffer).AsTask().WaitAsync(Timeout));
        }
    }

    [Fact]
    public async Task An_end_that_arrived_with_the_last_bytes_is_seen_after_they_are_read()
    {
        var (client, server) = await ConnectAsync();
        using (client)
        using (server)
        {
            // Bytes and FIN arrive while nobody receives: the loop sees their one edge before the receive that drains them.
            await server.SendAsync("last"u8.ToArray());
            server.Shutdown(SocketShutdown.Send);
            await Task.Delay(100);
            var buffer = new byte[1024];
            Assert.Equal(4, await client.ReceiveAsync(buffer).AsTask().WaitAsync(Timeout));
            Assert.Equal(0, await client.ReceiveAsync(buffer).AsTask().WaitAsync(Timeout));
        }
    }

    [Fact]
    public async Task A_reset_by_the_peer_is_a_connection_reset()
    {
        var (client, server) = await ConnectAsync();
        using (client)
        {
            var pending = client.ReceiveAsync(new byte[16]).AsTask();
            server.LingerState = new LingerOption(true, 0);
            server.Dispose();
            var error = await Assert.ThrowsAsync<SocketException>(() => pending.WaitAsync(Timeout));
            Assert.Equal(SocketError.ConnectionReset, error.SocketErrorCode);
        }
    }

    [Fact]
    public async Task A_cancelled_receive_throws_and_the_next_receive_still_gets_the_bytes()
    {
        var (client, server) = await ConnectAsync();
        using (client)
        using (server)
        {
            using var cancel = new CancellationTokenSource();
            var buffer = new byte[16];
            var pending = client.ReceiveAsync(buffer, cancel.Token).AsTask();
            await Task.Delay(50);
            await cancel.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pending.WaitAsync(Timeout));

            await server.SendAsync("after"u8.ToArray());
            Assert.Equal(5, await client.ReceiveAsync(buffer).AsTask().WaitAsync(Timeout));
        }
    }

    [Fact]
    public async Task Disposing_fails_a_pending_receive_instead_of_leaving_it_waiting()
    {
        var (client, server) = await ConnectAsync();
        using (server)
        {
            var pending = client.ReceiveAsync(new byte[16]).AsTask();
            await Task.Delay(50);
            client.Dispose();
            await Assert.ThrowsAsync<ObjectDisposedException>(() => pending.WaitAsync(Timeout));
        }
    }

    [Fact]
    public async Task A_send_larger_than_the_kernel_buffers_waits_for_the_reader_and_loses_nothing()
    {
        var (client, server) = await ConnectAsync();
        using (client)
        using (server)
        {
            var data = RandomNumberGenerator.GetBytes(16 * 1024 * 1024);
            var sending = client.SendAsync(data).AsTask();
            await Task.Delay(100);
            Assert.False(sending.IsCompleted, "16 MiB cannot fit in loopback socket buffers before the reader reads");

            var received = await ReadExactlyAsync(server, data.Length);
            await sending.WaitAsync(Timeout);
            Assert.True(data.AsSpan().SequenceEqual(received));
        }
    }

    [Fact]
    public async Task A_sequence_of_more_segments_than_one_call_takes_arrives_whole_and_in_order()
    {
        var (client, server) = await ConnectAsync();
        using (client)
        using (server)
        {
            var segments = Enumerable.Range(0, 40).Select(i => RandomNumberGenerator.GetBytes(100 + (i * 37))).ToArray();
            await client.SendAsync(Sequence(segments)).AsTask().WaitAsync(Timeout);
            var expected = segments.SelectMany(static s => s).ToArray();
            Assert.Equal(expected, await ReadExactlyAsync(server, expected.Length));
        }
    }

    [Fact]
    public async Task Connect_reaches_a_listener_and_a_refused_port_is_connection_refused()
    {
        using var connected = await EpollSocket.ConnectAsync(_listener.LocalEndPoint!, _loop, CancellationToken.None);
        using var server = await _listener.AcceptAsync().WaitAsync(Timeout);
        await connected.SendAsync("ping"u8.ToArray());
        Assert.Equal("ping"u8.ToArray(), await ReadExactlyAsync(server, 4));

        var closed = new IPEndPoint(IPAddress.Loopback, Sharding.Testing.LoopbackPorts.Free());
        var error = await Assert.ThrowsAsync<SocketException>(() => EpollSocket.ConnectAsync(closed, _loop, CancellationToken.None).AsTask().WaitAsync(Timeout));
        Assert.Equal(SocketError.ConnectionRefused, error.SocketErrorCode);
    }

    [Fact]
    public async Task Connect_works_over_a_unix_socket()
    {
        var path = Path.Combine(Path.GetTempPath(), $"epoll-{Guid.NewGuid():N}.sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen();
        try
        {
            using var connected = await EpollSocket.ConnectAsync(new UnixDomainSocketEndPoint(path), _loop, CancellationToken.None).AsTask().WaitAsync(Timeout);
            using var server = await listener.AcceptAsync().WaitAsync(Timeout);
            await server.SendAsync("unix"u8.ToArray());
            var buffer = new byte[8];
            Assert.Equal(4, await connected.ReceiveAsync(buffer).AsTask().WaitAsync(Timeout));
        }
        finally
        {
            File.Delete(path);
        }
    }

    private async Task<(EpollSocket Client, Socket Server)> ConnectAsync()
    {
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(_listener.LocalEndPoint!);
        var server = await _listener.AcceptAsync().WaitAsync(Timeout);
        return (EpollSocket.Attach(client, _loop), server);
    }

    internal static async Task<byte[]> ReadExactlyAsync(Socket socket, int length)
    {
        var buffer = new byte[length];
        using var timeout = new CancellationTokenSource(Timeout);
        var read = 0;
        while (read < length)
        {
            var n = await socket.ReceiveAsync(buffer.AsMemory(read), timeout.Token);
            Assert.NotEqual(0, n);
            read += n;
        }

        return buffer;
    }

    private static ReadOnlySequence<byte> Sequence(byte[][] parts)
    {
        var first = new Segment(parts[0], 0);
        var last = first;
        foreach (var part in parts.Skip(1))
        {
            last = last.Append(part);
        }

        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}

using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Sharding.Sidecar.FastPath;
using Sharding.Sidecar.Transport;

namespace Sharding.Sidecar.Tests.Transport;

/// <summary>
/// The fast path's writer against a real epoll connection and a loopback peer: straight to the socket while the send loop is
/// idle (the output pipe rents no block), through the pipe and in order while the peer does not read, and never around a
/// transport that is not the connection's own.
/// </summary>
public sealed class DirectOutputTests : IAsyncDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    private readonly EpollLoop _loop = new("direct-test-io", 0, inline: true);
    private readonly CountingPool _pool = new();
    private readonly Socket _peer;
    private readonly EpollConnection _connection;

    public DirectOutputTests()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        _peer = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _peer.Connect(listener.LocalEndPoint!);
        var accepted = listener.Accept();
        _connection = new EpollConnection(EpollSocket.Attach(accepted, _loop), _pool, 1 << 20, 64 * 1024, NullLogger.Instance);
        _connection.Start();
    }

    public async ValueTask DisposeAsync()
    {
        _peer.Dispose();
        await _connection.DisposeAsync();
        _loop.Dispose();
    }

    [Fact]
    public async Task Flushes_while_the_send_loop_is_idle_go_straight_to_the_socket()
    {
        var output = new DirectOutput(_connection, _connection.Transport.Output);
        await Task.Delay(100); // the send loop reaches its first wait (the receive loop holds a block of its own)
        var before = _pool.Rented;
        for (var i = 0; i < 3; i++)
        {
            output.Write("hello "u8);
            var result = await output.FlushAsync();
            Assert.False(result.IsCompleted);
        }

        Assert.Equal("hello hello hello "u8.ToArray(), await EpollSocketTests.ReadExactlyAsync(_peer, 18));
        Assert.Equal(before, _pool.Rented); // not one block for the output pipe
        output.Release();
    }

    [Fact]
    public async Task A_peer_that_reads_late_gets_every_byte_in_order_and_later_flushes_go_straight_again()
    {
        const int Chunk = 64 * 1024;
        const int Chunks = 128; // 8 MiB: far more than the socket buffers hold
        var output = new DirectOutput(_connection, _connection.Transport.Output);
        await Task.Delay(100);
        var before = _pool.Rented;
        var reading = Task.Run(async () =>
        {
            await Task.Delay(300); // the kernel's buffers fill first: the rest must queue in the pipe, behind what went
            return await EpollSocketTests.ReadExactlyAsync(_peer, (Chunk * Chunks) + 4);
        });

        for (var i = 0; i < Chunks; i++)
        {
            Pattern(output.GetSpan(Chunk)[..Chunk], i * Chunk);
            output.Advance(Chunk);
            var result = await output.FlushAsync().AsTask().WaitAsync(Timeout);
            Assert.False(result.IsCompleted);
        }

        Assert.True(_pool.Rented > before, "the backlog went through the pipe");
        await Task.Delay(300); // the send loop sends the backlog and waits again
        var rented = _pool.Rented;
        output.Write("tail"u8);
        await output.FlushAsync().AsTask().WaitAsync(Timeout);

        var received = await reading.WaitAsync(Timeout);
        var expected = new byte[Chunk * Chunks];
        Pattern(expected, 0);
        Assert.True(received.AsSpan(0, expected.Length).SequenceEqual(expected), "the bytes arrived out of order or changed");
        Assert.Equal("tail"u8.ToArray(), received[^4..]);
        Assert.Equal(rented, _pool.Rented); // the tail went straight to the socket again
        output.Release();
    }

    [Fact]
    public async Task A_transport_that_is_not_the_connections_own_is_written_through()
    {
        // As with TLS in between: the bytes must go through that writer, never around it to the socket.
        var other = new Pipe();
        var output = new DirectOutput(_connection, other.Writer);
        await Task.Delay(100);
        output.Write("secret"u8);
        await output.FlushAsync();

        var read = await other.Reader.ReadAsync().AsTask().WaitAsync(Timeout);
        Assert.Equal("secret"u8.ToArray(), read.Buffer.ToArray());
        other.Reader.AdvanceTo(read.Buffer.End);
        _peer.ReceiveTimeout = 200;
        Assert.Throws<SocketException>(() => _peer.Receive(new byte[16])); // nothing reached the socket
        output.Release();
    }

    private static void Pattern(Span<byte> destination, long offset)
    {
        for (var i = 0; i < destination.Length; i++)
        {
            destination[i] = (byte)((offset + i) * 31 % 251);
        }
    }

    /// <summary>A memory pool that counts its rents (the pipes' blocks).</summary>
    private sealed class CountingPool : MemoryPool<byte>
    {
        private int _rented;

        public int Rented => Volatile.Read(ref _rented);

        public override int MaxBufferSize => 4096;

        public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
        {
            Interlocked.Increment(ref _rented);
            return Shared.Rent(Math.Max(minBufferSize, 4096));
        }

        protected override void Dispose(bool disposing)
        {
        }
    }
}

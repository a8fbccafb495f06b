using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Sharding.Sidecar.Tests.Infrastructure;

/// <summary>
/// A bare h2c server that answers every request as a gRPC server like grpc-go does on an early error: one trailers-only
/// HEADERS frame (END_STREAM) with <c>:status 200</c>, <c>content-type: application/grpc</c>, <c>grpc-status</c> and
/// <c>grpc-message</c>, and no content-length (which Kestrel would add).
/// </summary>
internal sealed class TrailersOnlyGrpcApp : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;

    public TrailersOnlyGrpcApp(string status, string message)
    {
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _accepting = AcceptAsync(status, message);
    }

    public int Port { get; }

    private async Task AcceptAsync(string status, string message)
    {
        try
        {
            while (true)
            {
                var client = await _listener.AcceptTcpClientAsync(_stop.Token);
                _ = ServeAsync(client, status, message);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }
    }

    private async Task ServeAsync(TcpClient client, string status, string message)
    {
        using var _ = client;
        var stream = client.GetStream();
        var write = new SemaphoreSlim(1);
        try
        {
            await stream.WriteAsync(new byte[] { 0, 0, 0, 4, 0, 0, 0, 0, 0 }, _stop.Token); // SETTINGS (none)
            var preface = new byte[24];
            await stream.ReadExactlyAsync(preface, _stop.Token);
            var head = new byte[9];
            while (true)
            {
                await stream.ReadExactlyAsync(head, _stop.Token);
                var length = (head[0] << 16) | (head[1] << 8) | head[2];
                var type = head[3];
                var flags = head[4];
                var streamId = BinaryPrimitives.ReadInt32BigEndian(head.AsSpan(5)) & 0x7FFFFFFF;
                var payload = new byte[length];
                await stream.ReadExactlyAsync(payload, _stop.Token);
                switch (type)
                {
                    case 4 when (flags & 1) == 0: // SETTINGS: ack
                        await stream.WriteAsync(new byte[] { 0, 0, 0, 4, 1, 0, 0, 0, 0 }, _stop.Token);
                        break;
                    case 6 when (flags & 1) == 0: // PING: ack
                        var pong = new byte[9 + 8];
                        pong[2] = 8;
                        pong[3] = 6;
                        pong[4] = 1;
                        payload.CopyTo(pong, 9);
                        await stream.WriteAsync(pong, _stop.Token);
                        break;
                    case 7: // GOAWAY
                        return;
                    case 0 or 1 when (flags & 1) != 0: // the request's END_STREAM (DATA or HEADERS): answer trailers-only
                        await stream.WriteAsync(TrailersOnly(streamId, status, message), _stop.Token);
                        break;
                }
            }
        }
        catch (Exception ex) when (ex is IOException or OperationCanceledException or EndOfStreamException or ObjectDisposedException)
        {
        }
    }

    private static byte[] TrailersOnly(int streamId, string status, string message)
    {
        var block = new List<byte> { 0x88 }; // :status: 200 (static table index 8)
        Literal(block, "content-type", "application/grpc");
        Literal(block, "grpc-status", status);
        Literal(block, "grpc-message", message);
        var frame = new byte[9 + block.Count];
        frame[0] = (byte)(block.Count >> 16);
        frame[1] = (byte)(block.Count >> 8);
        frame[2] = (byte)block.Count;
        frame[3] = 1; // HEADERS
        frame[4] = 0x5; // END_STREAM | END_HEADERS
        BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(5), streamId);
        block.CopyTo(frame, 9);
        return frame;
    }

    private static void Literal(List<byte> block, string name, string value)
    {
        // Literal header field without indexing, new name, no Huffman (lengths < 127).
        block.Add(0);
        block.Add((byte)name.Length);
        block.AddRange(Encoding.ASCII.GetBytes(name));
        block.Add((byte)value.Length);
        block.AddRange(Encoding.ASCII.GetBytes(value));
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        await _accepting;
        _stop.Dispose();
    }
}

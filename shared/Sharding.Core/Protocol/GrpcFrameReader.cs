using System.Buffers;
using System.Buffers.Binary;

namespace Sharding.Protocol;

/// <summary>
/// Reads gRPC length-prefixed messages from a stream (request body on the server, response body on the client) or from a buffer.
/// </summary>
/// <remarks>
/// Errors map to gRPC statuses as gRPC implementations do: a message above the limit → <see cref="GrpcStatusCode.ResourceExhausted"/>
/// (checked from the prefix, before anything is buffered); a compressed message → <see cref="GrpcStatusCode.Unimplemented"/> (we never
/// negotiate an encoding); a stream that ends inside a frame → <see cref="GrpcStatusCode.Internal"/>.
/// </remarks>
public sealed class GrpcFrameReader
{
    private readonly Stream _stream;
    private readonly int _maxMessageBytes;
    private readonly byte[] _header = new byte[GrpcProtocol.FrameHeaderLength];

    /// <summary>Creates a reader over a stream.</summary>
    /// <param name="stream">The body stream.</param>
    /// <param name="maxMessageBytes">The largest message accepted.</param>
    public GrpcFrameReader(Stream stream, int maxMessageBytes = GrpcProtocol.DefaultMaxMessageBytes)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxMessageBytes);
        _stream = stream;
        _maxMessageBytes = maxMessageBytes;
    }

    /// <summary>Bytes read so far, prefixes included.</summary>
    public long BytesRead { get; private set; }

    /// <summary>Reads the next message; null at a clean end of stream (between frames).</summary>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The serialized message (a new array), or null at the end.</returns>
    /// <exception cref="GrpcCallException">Too large, compressed or truncated.</exception>
    public async ValueTask<byte[]?> ReadMessageAsync(CancellationToken cancellationToken)
    {
        var read = await ReadAtLeastAsync(_header, cancellationToken).ConfigureAwait(false);
        if (read == 0)
        {
            return null;
        }

        if (read < GrpcProtocol.FrameHeaderLength)
        {
            throw new GrpcCallException(GrpcStatusCode.Internal, "the stream ended inside a gRPC message prefix");
        }

        var length = CheckHeader(_header, _maxMessageBytes);
        var message = new byte[length];
        if (length > 0 && await ReadAtLeastAsync(message, cancellationToken).ConfigureAwait(false) < length)
        {
            throw new GrpcCallException(GrpcStatusCode.Internal, $"the stream ended inside a gRPC message of {length} bytes");
        }

        BytesRead += GrpcProtocol.FrameHeaderLength + length;
        return message;
    }

    /// <summary>
    /// Takes one complete frame from the front of <paramref name="buffer"/> (for pipe readers); false when more bytes are needed.
    /// </summary>
    /// <param name="buffer">The buffered bytes; advanced past the frame on success.</param>
    /// <param name="maxMessageBytes">The largest message accepted.</param>
    /// <param name="message">The message bytes on success (a slice of the buffer: copy or parse before advancing the pipe).</param>
    /// <returns>Whether a whole frame was available.</returns>
    /// <exception cref="GrpcCallException">Too large or compressed.</exception>
    public static bool TryReadFrame(ref ReadOnlySequence<byte> buffer, int maxMessageBytes, out ReadOnlySequence<byte> message)
    {
        message = default;
        if (buffer.Length < GrpcProtocol.FrameHeaderLength)
        {
            return false;
        }

        Span<byte> header = stackalloc byte[GrpcProtocol.FrameHeaderLength];
        buffer.Slice(0, GrpcProtocol.FrameHeaderLength).CopyTo(header);
        var length = CheckHeader(header, maxMessageBytes);
        if (buffer.Length < GrpcProtocol.FrameHeaderLength + (long)length)
        {
            return false;
        }

        message = buffer.Slice(GrpcProtocol.FrameHeaderLength, length);
        buffer = buffer.Slice(GrpcProtocol.FrameHeaderLength + (long)length);
        return true;
    }

    private static int CheckHeader(ReadOnlySpan<byte> header, int maxMessageBytes)
    {
        if (header[0] != 0)
        {
            throw new GrpcCallException(
                header[0] == 1 ? GrpcStatusCode.Unimplemented : GrpcStatusCode.Internal,
                header[0] == 1 ? "compressed gRPC messages are not supported (only grpc-encoding identity)" : $"invalid gRPC compressed flag {header[0]}");
        }

        var length = BinaryPrimitives.ReadUInt32BigEndian(header[1..]);
        if (length > (uint)maxMessageBytes)
        {
            throw new GrpcCallException(
                GrpcStatusCode.ResourceExhausted, $"received message larger than max ({length} vs. {maxMessageBytes} bytes)");
        }

        return (int)length;
    }

    private async ValueTask<int> ReadAtLeastAsync(byte[] buffer, CancellationToken cancellationToken) =>
        await _stream.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false, cancellationToken).ConfigureAwait(false);
}

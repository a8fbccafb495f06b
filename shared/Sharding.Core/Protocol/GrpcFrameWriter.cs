using System.Buffers.Binary;
using Google.Protobuf;

namespace Sharding.Protocol;

/// <summary>Writes gRPC length-prefixed messages: 1 byte compressed flag (always 0 here), 4 bytes big-endian length, the message.</summary>
/// <remarks>
/// Encode once with <see cref="Encode(IMessage)"/> and write the same bytes to many streams when fanning out (the control plane shares
/// one encoded snapshot or delta among all its subscribers).
/// </remarks>
public static class GrpcFrameWriter
{
    /// <summary>Encodes a message as one complete frame.</summary>
    /// <param name="message">The message.</param>
    /// <returns>Prefix and message bytes.</returns>
    public static byte[] Encode(IMessage message)
    {
        ArgumentNullException.ThrowIfNull(message);
        var size = message.CalculateSize();
        var frame = new byte[GrpcProtocol.FrameHeaderLength + size];
        WriteHeader(frame, size);
        message.WriteTo(frame.AsSpan(GrpcProtocol.FrameHeaderLength));
        return frame;
    }

    /// <summary>Wraps already serialized message bytes in a frame.</summary>
    /// <param name="payload">The serialized message.</param>
    /// <returns>Prefix and message bytes.</returns>
    public static byte[] Encode(ReadOnlySpan<byte> payload)
    {
        var frame = new byte[GrpcProtocol.FrameHeaderLength + payload.Length];
        WriteHeader(frame, payload.Length);
        payload.CopyTo(frame.AsSpan(GrpcProtocol.FrameHeaderLength));
        return frame;
    }

    /// <summary>Writes the 5-byte prefix for an uncompressed message of <paramref name="length"/> bytes.</summary>
    /// <param name="destination">At least 5 bytes.</param>
    /// <param name="length">The message length.</param>
    public static void WriteHeader(Span<byte> destination, int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        destination[0] = 0;
        BinaryPrimitives.WriteUInt32BigEndian(destination[1..], (uint)length);
    }

    /// <summary>Writes one message as a frame and flushes.</summary>
    /// <param name="stream">The request or response body.</param>
    /// <param name="message">The message.</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>The number of bytes written.</returns>
    public static async ValueTask<int> WriteAsync(Stream stream, IMessage message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(stream);
        var frame = Encode(message);
        await stream.WriteAsync(frame, cancellationToken).ConfigureAwait(false);
        await stream.FlushAsync(cancellationToken).ConfigureAwait(false);
        return frame.Length;
    }
}

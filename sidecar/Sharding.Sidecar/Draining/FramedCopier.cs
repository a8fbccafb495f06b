using System.Buffers;
using System.Buffers.Binary;
using Sharding.Sidecar.Forwarding;

namespace Sharding.Sidecar.Draining;

/// <summary>The framing of a response the sidecar may have to end in the middle: gRPC messages or WebSocket frames.</summary>
internal enum FrameFormat
{
    /// <summary>gRPC: 1 flag byte, 4-byte big-endian length, message.</summary>
    Grpc,

    /// <summary>WebSocket frames from a server (RFC 6455 §5.2), unmasked (a mask is honoured if present).</summary>
    WebSocket,
}

/// <summary>The outcome of a framed copy.</summary>
/// <param name="Result">As for <see cref="StreamCopier"/>.</param>
/// <param name="Bytes">Bytes written.</param>
/// <param name="Error">The failure, if any.</param>
/// <param name="AtBoundary">Whether the client got whole frames only (the sidecar may add its own: trailers, a close frame).</param>
/// <param name="SawClose">Whether a WebSocket close frame went to the client.</param>
internal readonly record struct FramedCopyResult(StreamCopyResult Result, long Bytes, Exception? Error, bool AtBoundary, bool SawClose);

/// <summary>
/// Copies a framed body and writes whole frames only, keeping a partial frame back until the rest arrives, so that a drain that
/// cancels the copy leaves the client at a frame boundary (a frame larger than the buffer is streamed through as it comes).
/// </summary>
internal static class FramedCopier
{
    public static async ValueTask<FramedCopyResult> CopyAsync(
        Stream source, Stream destination, FrameFormat format, ActivityTimeout? activity, CancellationToken cancellationToken)
    {
        long total = 0;
        long remaining = 0; // bytes of a frame larger than the buffer still to pass through
        var carry = 0;
        var sawClose = false;
        var reading = true;
        byte[]? buffer = null;
        try
        {
            // Bounded by the body: each turn reads at least one byte or ends.
            while (true)
            {
                reading = true;
                if (carry == 0)
                {
                    // Nothing held back: wait for data with a zero-byte read and no buffer, as StreamCopier does, so an idle
                    // stream (a watch between events) keeps no 64 KiB. Whatever it returns, the read below says what came.
                    var idle = source.ReadAsync(Memory<byte>.Empty, cancellationToken);
                    if (!idle.IsCompleted)
                    {
                        reading = false;
                        await destination.FlushAsync(cancellationToken).ConfigureAwait(false);
                        reading = true;
                        if (buffer is not null)
                        {
                            ArrayPool<byte>.Shared.Return(buffer);
                            buffer = null;
                        }
                    }

                    await idle.ConfigureAwait(false);
                }

                buffer ??= ArrayPool<byte>.Shared.Rent(StreamCopier.BufferSize);
                var pending = source.ReadAsync(buffer.AsMemory(carry), cancellationToken);
                if (!pending.IsCompleted)
                {
                    reading = false;
                    await destination.FlushAsync(cancellationToken).ConfigureAwait(false);
                    reading = true;
                }

                var read = await pending.ConfigureAwait(false);
                activity?.Touch();
                if (read == 0)
                {
                    if (carry > 0)
                    {
                        reading = false;
                        await destination.WriteAsync(buffer.AsMemory(0, carry), cancellationToken).ConfigureAwait(false);
                        total += carry;
                    }

                    return new FramedCopyResult(StreamCopyResult.Success, total, null, carry == 0 && remaining == 0, sawClose);
                }

                var filled = carry + read;
                var position = 0;
                var closing = false; // a close frame is among the bytes about to be written
                if (remaining > 0)
                {
                    var take = (int)Math.Min(remaining, filled);
                    position = take;
                    remaining -= take;
                }

                // Bounded: each turn passes one whole frame or stops.
                while (remaining == 0 && position < filled)
                {
                    var length = FrameLength(buffer.AsSpan(position, filled - position), format, out var isClose);
                    if (length < 0 || position + length > filled)
                    {
                        if (length > 0 && position == 0 && filled == buffer.Length)
                        {
                            // A frame larger than the buffer: stream it through.
                            remaining = length - filled;
                            position = filled;
                            closing |= isClose;
                        }

                        break;
                    }

                    closing |= isClose;
                    position += (int)length;
                }

                if (position > 0)
                {
                    reading = false;
                    await destination.WriteAsync(buffer.AsMemory(0, position), cancellationToken).ConfigureAwait(false);

                    // Only now did the close go to the client: a drain that cancels this write (Kestrel then writes
                    // nothing) must still send its own close frame.
                    sawClose |= closing;
                    activity?.Touch();
                    total += position;
                }

                carry = filled - position;
                if (carry > 0 && position > 0)
                {
                    buffer.AsSpan(position, carry).CopyTo(buffer);
                }
            }
        }
        catch (OperationCanceledException ex)
        {
            return new FramedCopyResult(StreamCopyResult.Canceled, total, ex, remaining == 0, sawClose);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or InvalidOperationException or HttpRequestException
                                       or Microsoft.AspNetCore.Http.BadHttpRequestException or System.Net.Sockets.SocketException)
        {
            return new FramedCopyResult(reading ? StreamCopyResult.InputError : StreamCopyResult.OutputError, total, ex, remaining == 0, sawClose);
        }
        finally
        {
            if (buffer is not null)
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }

    /// <summary>The whole length of the frame starting <paramref name="data"/>, or -1 when its header is not complete yet.</summary>
    internal static long FrameLength(ReadOnlySpan<byte> data, FrameFormat format, out bool isClose)
    {
        isClose = false;
        if (format == FrameFormat.Grpc)
        {
            return data.Length < 5 ? -1 : 5L + BinaryPrimitives.ReadUInt32BigEndian(data[1..]);
        }

        if (data.Length < 2)
        {
            return -1;
        }

        isClose = (data[0] & 0x0F) == 0x8;
        var masked = (data[1] & 0x80) != 0;
        var length7 = data[1] & 0x7F;
        var header = 2 + (masked ? 4 : 0);
        long payload;
        if (length7 == 126)
        {
            if (data.Length < 4)
            {
                return -1;
            }

            header += 2;
            payload = BinaryPrimitives.ReadUInt16BigEndian(data[2..]);
        }
        else if (length7 == 127)
        {
            if (data.Length < 10)
            {
                return -1;
            }

            header += 8;
            payload = (long)(BinaryPrimitives.ReadUInt64BigEndian(data[2..]) & long.MaxValue);
        }
        else
        {
            payload = length7;
        }

        return header + payload;
    }

    /// <summary>A server-to-client close frame (unmasked) with the code and a reason cut to the 123 bytes RFC 6455 allows.</summary>
    internal static byte[] CloseFrame(ushort code, string reason)
    {
        var reasonBytes = System.Text.Encoding.UTF8.GetBytes(reason);
        var length = Math.Min(reasonBytes.Length, 123);
        var frame = new byte[4 + length];
        frame[0] = 0x88; // FIN + close
        frame[1] = (byte)(2 + length);
        BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(2), code);
        reasonBytes.AsSpan(0, length).CopyTo(frame.AsSpan(4));
        return frame;
    }
}

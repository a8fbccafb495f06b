using System.Buffers;
using System.Buffers.Binary;

namespace Sharding.Sidecar.PeerLink;

/// <summary>
/// The peer link's wire format: HTTP/2 framing (RFC 9113 §4) between sidecars, recognized by a private SETTINGS id in the
/// first SETTINGS frame of each side. Each stream is a tunnel (a CONNECT, RFC 9113 §8.5) for the bytes of one kept-alive
/// HTTP/1.1 connection: DATA in both directions, END_STREAM for a half-close, RST_STREAM for an abort (REFUSED_STREAM: "what
/// you sent that I did not answer was not processed", also the owner's clean end of a tunnel), per-stream and
/// per-connection flow control, GOAWAY when a side stops taking new streams.
/// </summary>
internal static class LinkFrames
{
    public const int HeaderLength = 9;

    /// <summary>SETTINGS_MAX_FRAME_SIZE's default, which neither side raises.</summary>
    public const int MaxPayload = 16_384;

    /// <summary>The flow-control windows' initial size before SETTINGS say otherwise.</summary>
    public const int DefaultWindow = 65_535;

    public const byte Data = 0x0;
    public const byte Headers = 0x1;
    public const byte RstStream = 0x3;
    public const byte Settings = 0x4;
    public const byte Ping = 0x6;
    public const byte GoAway = 0x7;
    public const byte WindowUpdate = 0x8;

    public const byte FlagEndStream = 0x1;
    public const byte FlagAck = 0x1;
    public const byte FlagEndHeaders = 0x4;
    public const byte FlagPadded = 0x8;

    public const ushort SettingInitialWindowSize = 0x4;

    /// <summary>Private setting (in the range RFC 9113 leaves to extensions): "this side speaks the sidecar peer link".</summary>
    public const ushort SettingPeerLink = 0xf5a1;

    public const uint NoError = 0x0;
    public const uint ProtocolError = 0x1;
    public const uint FlowControlError = 0x3;
    public const uint RefusedStream = 0x7;
    public const uint Cancel = 0x8;

    public static ReadOnlySpan<byte> Preface => "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8;

    /// <summary>
    /// The header block that opens a tunnel: <c>:method CONNECT</c> and <c>:authority sidecar</c>, each a literal without
    /// indexing whose name is the static table's (RFC 7541 §6.2.2), so the block needs no HPACK state on either side.
    /// </summary>
    public static ReadOnlySpan<byte> ConnectHeaderBlock => [0x02, 0x07, (byte)'C', (byte)'O', (byte)'N', (byte)'N', (byte)'E', (byte)'C', (byte)'T',
        0x01, 0x07, (byte)'s', (byte)'i', (byte)'d', (byte)'e', (byte)'c', (byte)'a', (byte)'r'];

    public static void WriteHeader(Span<byte> destination, int length, byte type, byte flags, int streamId)
    {
        destination[0] = (byte)(length >> 16);
        destination[1] = (byte)(length >> 8);
        destination[2] = (byte)length;
        destination[3] = type;
        destination[4] = flags;
        BinaryPrimitives.WriteInt32BigEndian(destination[5..], streamId & int.MaxValue);
    }

    public static void ReadHeader(ReadOnlySpan<byte> source, out int length, out byte type, out byte flags, out int streamId)
    {
        length = (source[0] << 16) | (source[1] << 8) | source[2];
        type = source[3];
        flags = source[4];
        streamId = BinaryPrimitives.ReadInt32BigEndian(source[5..]) & int.MaxValue;
    }

    /// <summary>
    /// After a whole client preface: 1 when the first frame is SETTINGS carrying <see cref="SettingPeerLink"/>, -1 when it is
    /// not (any other HTTP/2 client), 0 when that frame is not all here yet.
    /// </summary>
    public static int IsPeerLink(in ReadOnlySequence<byte> buffer)
    {
        var preface = Preface.Length;
        if (buffer.Length < preface + HeaderLength)
        {
            return 0;
        }

        Span<byte> header = stackalloc byte[HeaderLength];
        buffer.Slice(preface, HeaderLength).CopyTo(header);
        ReadHeader(header, out var length, out var type, out var flags, out var streamId);
        if (type != Settings || flags != 0 || streamId != 0 || length % 6 != 0 || length > 6 * 16)
        {
            return -1;
        }

        if (buffer.Length < preface + HeaderLength + length)
        {
            return 0;
        }

        Span<byte> settings = stackalloc byte[length];
        buffer.Slice(preface + HeaderLength, length).CopyTo(settings);
        for (var i = 0; i < length; i += 6)
        {
            if (BinaryPrimitives.ReadUInt16BigEndian(settings[i..]) == SettingPeerLink)
            {
                return 1;
            }
        }

        return -1;
    }
}

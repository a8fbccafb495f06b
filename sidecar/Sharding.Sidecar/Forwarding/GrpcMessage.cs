using System.Text;

namespace Sharding.Sidecar.Forwarding;

/// <summary>The <c>grpc-message</c> value: UTF-8, percent-encoded outside printable ASCII and for '%' itself (gRPC over HTTP/2).</summary>
internal static class GrpcMessage
{
    public static string Encode(string message)
    {
        if (!NeedsEncoding(message))
        {
            return message;
        }

        var text = new StringBuilder(message.Length + 16);
        Span<byte> utf8 = stackalloc byte[4];
        for (var i = 0; i < message.Length; i++)
        {
            var c = message[i];
            if (c is >= ' ' and <= '~' and not '%')
            {
                text.Append(c);
                continue;
            }

            var length = char.IsHighSurrogate(c) && i + 1 < message.Length && char.IsLowSurrogate(message[i + 1])
                ? Encoding.UTF8.GetBytes(message.AsSpan(i++, 2), utf8)
                : Encoding.UTF8.GetBytes(message.AsSpan(i, 1), utf8);
            foreach (var b in utf8[..length])
            {
                text.Append('%').Append(Convert.ToHexString([b]));
            }
        }

        return text.ToString();
    }

    private static bool NeedsEncoding(string message)
    {
        foreach (var c in message)
        {
            if (c is < ' ' or > '~' or '%')
            {
                return true;
            }
        }

        return false;
    }
}

using System.Text;

namespace Sharding.Keys;

/// <summary>Span helpers for shard-key text: percent-decoding and trimming without allocating.</summary>
internal static class KeyText
{
    /// <summary>Percent-decodes <paramref name="source"/> (and '+' as space when asked) into <paramref name="destination"/>.</summary>
    /// <returns>False when the decoded text does not fit.</returns>
    public static bool TryDecode(ReadOnlySpan<char> source, bool plusIsSpace, Span<char> destination, out int written)
    {
        written = 0;
        var special = plusIsSpace ? source.IndexOfAny('%', '+') : source.IndexOf('%');
        if (special < 0)
        {
            // Fast path: nothing to decode.
            if (source.Length > destination.Length)
            {
                return false;
            }

            source.CopyTo(destination);
            written = source.Length;
            return true;
        }

        // Slow path: %XX escapes are UTF-8 bytes, so decode to bytes first, then to chars.
        if (source.Length > ShardKeyExtractor.MaxKeyLength * 3)
        {
            return false;
        }

        Span<byte> bytes = stackalloc byte[ShardKeyExtractor.MaxKeyLength * 3];
        var count = 0;
        for (var i = 0; i < source.Length; i++)
        {
            var c = source[i];
            if (c == '%' && i + 2 < source.Length && TryHex(source[i + 1], source[i + 2], out var b))
            {
                bytes[count++] = b;
                i += 2;
            }
            else if (c == '+' && plusIsSpace)
            {
                bytes[count++] = (byte)' ';
            }
            else if (c < 0x80)
            {
                bytes[count++] = (byte)c;
            }
            else
            {
                var isPair = char.IsHighSurrogate(c) && i + 1 < source.Length;
                var chars = source.Slice(i, isPair ? 2 : 1);
                if (count + 4 > bytes.Length)
                {
                    return false;
                }

                count += Encoding.UTF8.GetBytes(chars, bytes[count..]);
                i += chars.Length - 1;
            }
        }

        var decoded = bytes[..count];
        if (Encoding.UTF8.GetCharCount(decoded) > destination.Length)
        {
            return false;
        }

        written = Encoding.UTF8.GetChars(decoded, destination);
        return true;
    }

    private static bool TryHex(char high, char low, out byte value)
    {
        var h = HexValue(high);
        var l = HexValue(low);
        value = (byte)((h << 4) | l);
        return h >= 0 && l >= 0;
    }

    private static int HexValue(char c) => c switch
    {
        >= '0' and <= '9' => c - '0',
        >= 'a' and <= 'f' => c - 'a' + 10,
        >= 'A' and <= 'F' => c - 'A' + 10,
        _ => -1,
    };
}

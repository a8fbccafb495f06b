namespace Sharding.Hashing;

/// <summary>
/// A deliberately plain XXH64, written from the specification
/// (https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md) byte by byte, with no spans, no
/// BinaryPrimitives and no shared helpers, to cross-check <see cref="XxHash64"/> for seeds xxhsum cannot take.
/// </summary>
internal static class XxHash64Reference
{
    private const ulong P1 = 11400714785074694791UL;
    private const ulong P2 = 14029467366897019727UL;
    private const ulong P3 = 1609587929392839161UL;
    private const ulong P4 = 9650029242287828579UL;
    private const ulong P5 = 2870177450012600261UL;

    public static ulong Hash(byte[] input, ulong seed)
    {
        var len = input.Length;
        var p = 0;
        ulong h;
        if (len >= 32)
        {
            ulong a1 = seed + P1 + P2, a2 = seed + P2, a3 = seed, a4 = seed - P1;
            while (p + 32 <= len)
            {
                a1 = Round(a1, Read64(input, p));
                a2 = Round(a2, Read64(input, p + 8));
                a3 = Round(a3, Read64(input, p + 16));
                a4 = Round(a4, Read64(input, p + 24));
                p += 32;
            }

            h = Rotl(a1, 1) + Rotl(a2, 7) + Rotl(a3, 12) + Rotl(a4, 18);
            h = Merge(h, a1);
            h = Merge(h, a2);
            h = Merge(h, a3);
            h = Merge(h, a4);
        }
        else
        {
            h = seed + P5;
        }

        h += (ulong)len;
        while (len - p >= 8)
        {
            h ^= Round(0, Read64(input, p));
            h = (Rotl(h, 27) * P1) + P4;
            p += 8;
        }

        if (len - p >= 4)
        {
            ulong lane = (ulong)input[p] | ((ulong)input[p + 1] << 8) | ((ulong)input[p + 2] << 16) | ((ulong)input[p + 3] << 24);
            h ^= lane * P1;
            h = (Rotl(h, 23) * P2) + P3;
            p += 4;
        }

        for (; p < len; p++)
        {
            h ^= input[p] * P5;
            h = Rotl(h, 11) * P1;
        }

        h ^= h >> 33;
        h *= P2;
        h ^= h >> 29;
        h *= P3;
        h ^= h >> 32;
        return h;
    }

    private static ulong Read64(byte[] b, int p)
    {
        ulong v = 0;
        for (var i = 7; i >= 0; i--)
        {
            v = (v << 8) | b[p + i];
        }

        return v;
    }

    private static ulong Rotl(ulong x, int r) => (x << r) | (x >> (64 - r));

    private static ulong Round(ulong acc, ulong lane) => Rotl(acc + (lane * P2), 31) * P1;

    private static ulong Merge(ulong acc, ulong val) => ((acc ^ Round(0, val)) * P1) + P4;
}

using System.Buffers;
using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Text;

namespace Sharding.Hashing;

/// <summary>
/// XXH64 (xxHash, 64-bit variant), the hash Envoy uses for Maglev, ring hash and request hashing.
/// </summary>
/// <remarks>
/// Follows the reference specification (https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md)
/// and is checked against the reference <c>xxhsum -H64</c> in the tests. Allocation-free; the UTF-8 string
/// overload encodes on the stack up to <see cref="StackallocThreshold"/> bytes and rents a pooled buffer above it.
/// </remarks>
public static class XxHash64
{
    /// <summary>Keys up to this many UTF-8 bytes are hashed from a stack buffer.</summary>
    public const int StackallocThreshold = 512;

    private const ulong Prime1 = 0x9E3779B185EBCA87UL;
    private const ulong Prime2 = 0xC2B2AE3D27D4EB4FUL;
    private const ulong Prime3 = 0x165667B19E3779F9UL;
    private const ulong Prime4 = 0x85EBCA77C2B2AE63UL;
    private const ulong Prime5 = 0x27D4EB2F165667C5UL;

    /// <summary>Hashes <paramref name="data"/> with the given seed.</summary>
    /// <param name="data">The bytes to hash.</param>
    /// <param name="seed">The seed; Envoy uses 0 for requests and Maglev offsets and 1 for Maglev skips.</param>
    /// <returns>The 64-bit hash.</returns>
    public static ulong Hash(ReadOnlySpan<byte> data, ulong seed = 0)
    {
        var length = data.Length;
        ulong acc;
        var offset = 0;

        if (length >= 32)
        {
            // Step 1-2: four lanes consume 32-byte stripes.
            var v1 = seed + Prime1 + Prime2;
            var v2 = seed + Prime2;
            var v3 = seed;
            var v4 = seed - Prime1;
            var limit = length - 32;
            do
            {
                v1 = Round(v1, BinaryPrimitives.ReadUInt64LittleEndian(data.Slice(offset)));
                v2 = Round(v2, BinaryPrimitives.ReadUInt64LittleEndian(data.Slice(offset + 8)));
                v3 = Round(v3, BinaryPrimitives.ReadUInt64LittleEndian(data.Slice(offset + 16)));
                v4 = Round(v4, BinaryPrimitives.ReadUInt64LittleEndian(data.Slice(offset + 24)));
                offset += 32;
            }
            while (offset <= limit);

            // Step 3: converge the lanes.
            acc = BitOperations.RotateLeft(v1, 1) + BitOperations.RotateLeft(v2, 7)
                + BitOperations.RotateLeft(v3, 12) + BitOperations.RotateLeft(v4, 18);
            acc = MergeRound(acc, v1);
            acc = MergeRound(acc, v2);
            acc = MergeRound(acc, v3);
            acc = MergeRound(acc, v4);
        }
        else
        {
            // Short input: no stripes.
            acc = seed + Prime5;
        }

        // Step 4: add the length.
        acc += (ulong)length;

        // Step 5: the remaining 0-31 bytes.
        while (offset + 8 <= length)
        {
            acc ^= Round(0, BinaryPrimitives.ReadUInt64LittleEndian(data.Slice(offset)));
            acc = (BitOperations.RotateLeft(acc, 27) * Prime1) + Prime4;
            offset += 8;
        }

        if (offset + 4 <= length)
        {
            acc ^= BinaryPrimitives.ReadUInt32LittleEndian(data.Slice(offset)) * Prime1;
            acc = (BitOperations.RotateLeft(acc, 23) * Prime2) + Prime3;
            offset += 4;
        }

        while (offset < length)
        {
            acc ^= data[offset] * Prime5;
            acc = BitOperations.RotateLeft(acc, 11) * Prime1;
            offset++;
        }

        // Step 6: final avalanche.
        acc ^= acc >> 33;
        acc *= Prime2;
        acc ^= acc >> 29;
        acc *= Prime3;
        acc ^= acc >> 32;
        return acc;
    }

    /// <summary>Hashes the UTF-8 encoding of <paramref name="text"/> without allocating for ordinary keys.</summary>
    /// <param name="text">The text (a shard key or a member's hash key).</param>
    /// <param name="seed">The seed.</param>
    /// <returns>The 64-bit hash of the UTF-8 bytes.</returns>
    public static ulong HashUtf8(ReadOnlySpan<char> text, ulong seed = 0)
    {
        // Fast path: the worst case (3 bytes per UTF-16 unit) fits on the stack.
        if (text.Length <= StackallocThreshold / 3)
        {
            Span<byte> small = stackalloc byte[StackallocThreshold];
            var written = Encoding.UTF8.GetBytes(text, small);
            return Hash(small.Slice(0, written), seed);
        }

        var byteCount = Encoding.UTF8.GetByteCount(text);
        if (byteCount <= StackallocThreshold)
        {
            Span<byte> exact = stackalloc byte[StackallocThreshold];
            var written = Encoding.UTF8.GetBytes(text, exact);
            return Hash(exact.Slice(0, written), seed);
        }

        var rented = ArrayPool<byte>.Shared.Rent(byteCount);
        try
        {
            var written = Encoding.UTF8.GetBytes(text, rented);
            return Hash(rented.AsSpan(0, written), seed);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>Formats a hash as 16 lower-case hex digits, as <c>xxhsum -H64</c> prints it.</summary>
    /// <param name="hash">The hash.</param>
    /// <returns>The hex string.</returns>
    public static string ToHex(ulong hash) => hash.ToString("x16", System.Globalization.CultureInfo.InvariantCulture);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Round(ulong acc, ulong lane)
    {
        acc += lane * Prime2;
        acc = BitOperations.RotateLeft(acc, 31);
        return acc * Prime1;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong MergeRound(ulong acc, ulong lane)
    {
        acc ^= Round(0, lane);
        return (acc * Prime1) + Prime4;
    }
}

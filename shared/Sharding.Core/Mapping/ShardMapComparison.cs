using Sharding.Hashing;

namespace Sharding.Mapping;

/// <summary>How much of the key space changes owner between two shard maps.</summary>
public static class ShardMapComparison
{
    private const int Samples = 1 << 16;

    /// <summary>
    /// The share of keys whose owner differs between <paramref name="before"/> and <paramref name="after"/>, in [0, 1].
    /// </summary>
    /// <remarks>
    /// Two Maglev tables of the same size are compared slot by slot, which is exact (a key's owner is its slot's). Otherwise the
    /// key space is sampled at 65,536 evenly spaced hashes. Owners are compared by member name; an empty map owns nothing,
    /// so every key of the other map counts as moved.
    /// </remarks>
    /// <param name="before">The earlier map.</param>
    /// <param name="after">The later map.</param>
    /// <returns>The moved share.</returns>
    public static double MovedShare(ShardMap before, ShardMap after)
    {
        ArgumentNullException.ThrowIfNull(before);
        ArgumentNullException.ThrowIfNull(after);
        if (before.IsEmpty && after.IsEmpty)
        {
            return 0;
        }

        if (before.IsEmpty || after.IsEmpty)
        {
            return 1;
        }

        if (before.Table is MaglevTable a && after.Table is MaglevTable b && a.Size == b.Size)
        {
            var entriesA = a.Entries;
            var entriesB = b.Entries;
            var moved = 0;
            for (var i = 0; i < entriesA.Length; i++)
            {
                if (!string.Equals(a.Members[entriesA[i]].Name, b.Members[entriesB[i]].Name, StringComparison.Ordinal))
                {
                    moved++;
                }
            }

            return (double)moved / entriesA.Length;
        }

        var sampledMoves = 0;
        const ulong step = ulong.MaxValue / Samples;
        for (ulong i = 0; i < Samples; i++)
        {
            var hash = i * step;
            if (!string.Equals(before.OwnerOf(hash)?.Name, after.OwnerOf(hash)?.Name, StringComparison.Ordinal))
            {
                sampledMoves++;
            }
        }

        return (double)sampledMoves / Samples;
    }
}

using Sharding.Hashing;

namespace Sharding.Cli.Commands;

/// <summary>Measures how many keys change owner between two tables, and how evenly each spreads them.</summary>
internal static class OwnershipComparison
{
    public readonly record struct Result(double MovedShare, double BalanceBefore, double BalanceAfter);

    /// <summary>Hashes keys <c>key-0 … key-(n-1)</c> through both tables.</summary>
    public static Result Run(ShardTable before, ShardTable after, int keyCount)
    {
        var countsBefore = new int[before.Members.Length];
        var countsAfter = new int[after.Members.Length];
        var moved = 0;
        Span<char> key = stackalloc char[32];
        for (var i = 0; i < keyCount; i++)
        {
            "key-".CopyTo(key);
            i.TryFormat(key[4..], out var digits, default, System.Globalization.CultureInfo.InvariantCulture);
            var hash = XxHash64.HashUtf8(key[..(4 + digits)]);
            var a = before.OwnerIndexOf(hash);
            var b = after.OwnerIndexOf(hash);
            countsBefore[a]++;
            countsAfter[b]++;
            if (!string.Equals(before.Members[a].Name, after.Members[b].Name, StringComparison.Ordinal))
            {
                moved++;
            }
        }

        return new Result((double)moved / keyCount, Balance(countsBefore, before), Balance(countsAfter, after));
    }

    /// <summary>
    /// The least share of keys any assignment must move: 1 - Σ over members in both sets of min(share before, share after),
    /// with shares proportional to weight.
    /// </summary>
    public static double IdealMovedShare(IReadOnlyList<HashMember> from, IReadOnlyList<HashMember> to)
    {
        double fromTotal = 0, toTotal = 0;
        foreach (var m in from)
        {
            fromTotal += m.Weight;
        }

        foreach (var m in to)
        {
            toTotal += m.Weight;
        }

        var stays = 0.0;
        foreach (var m in from)
        {
            foreach (var n in to)
            {
                if (string.Equals(m.Name, n.Name, StringComparison.Ordinal))
                {
                    stays += Math.Min(m.Weight / fromTotal, n.Weight / toTotal);
                }
            }
        }

        return 1 - stays;
    }

    private static double Balance(int[] counts, ShardTable table)
    {
        int max = 0, active = 0;
        long total = 0;
        for (var i = 0; i < counts.Length; i++)
        {
            if (table.Members[i].Weight == 0)
            {
                continue;
            }

            active++;
            total += counts[i];
            max = Math.Max(max, counts[i]);
        }

        return active == 0 ? 0 : max / ((double)total / active);
    }
}

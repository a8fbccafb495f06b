using System.Text;

namespace Sharding.Hashing;

/// <summary>
/// Straight ports of Envoy's table construction and lookup, kept as close to the C++ as C# allows, to cross-check
/// <see cref="MaglevTable"/> and <see cref="RingHashTable"/> on inputs Envoy's own tests do not cover.
/// </summary>
internal static class EnvoyReference
{
    /// <summary>
    /// <c>MaglevTable::constructMaglevTableInternal</c> + <c>OriginalMaglevTable::constructImplementationInternals</c>
    /// (source/extensions/load_balancing_policies/maglev/maglev_lb.cc): sorted by hash key, permutation
    /// (offset + skip * next) % M recomputed with a multiplication each time. Returns host names per slot.
    /// </summary>
    public static string[] Maglev(IReadOnlyList<(string Name, uint Weight)> hosts, ulong tableSize)
    {
        // normalizeHostWeights: weight / sum; zero-weight hosts are dropped as Envoy drops empty localities.
        double sum = 0;
        foreach (var h in hosts)
        {
            sum += h.Weight;
        }

        var sorted = hosts.Where(h => h.Weight > 0)
            .Select(h => (Key: Encoding.UTF8.GetBytes(h.Name), h.Name, Weight: h.Weight / sum))
            .OrderBy(h => h.Key, Comparer<byte[]>.Create(static (a, b) => a.AsSpan().SequenceCompareTo(b)))
            .ToList();
        var table = new string?[tableSize];
        if (sorted.Count == 0)
        {
            return [];
        }

        var maxWeight = sorted.Max(h => h.Weight);
        var entries = sorted.Select(h => new BuildEntry
        {
            Name = h.Name,
            Offset = XxHash64.Hash(h.Key) % tableSize,
            Skip = (XxHash64.Hash(h.Key, 1) % (tableSize - 1)) + 1,
            Weight = h.Weight,
        }).ToList();

        ulong tableIndex = 0;
        for (uint iteration = 1; tableIndex < tableSize; ++iteration)
        {
            for (var i = 0; i < entries.Count && tableIndex < tableSize; i++)
            {
                var entry = entries[i];
                if (iteration * entry.Weight < entry.TargetWeight)
                {
                    continue;
                }

                entry.TargetWeight += maxWeight;
                var c = (entry.Offset + (entry.Skip * entry.Next)) % tableSize;
                while (table[c] is not null)
                {
                    entry.Next++;
                    c = (entry.Offset + (entry.Skip * entry.Next)) % tableSize;
                }

                table[c] = entry.Name;
                entry.Next++;
                tableIndex++;
            }
        }

        return table!;
    }

    /// <summary><c>RingHashLoadBalancer::Ring::chooseHost</c>, the ketama binary search with its signed indices.</summary>
    public static int KetamaIndex(ReadOnlySpan<ulong> ring, ulong h)
    {
        long lowp = 0;
        long highp = ring.Length;
        while (true)
        {
            var midp = (lowp + highp) / 2;
            if (midp == ring.Length)
            {
                return 0;
            }

            var midval = ring[(int)midp];
            var midval1 = midp == 0 ? 0 : ring[(int)midp - 1];
            if (h <= midval && h > midval1)
            {
                return (int)midp;
            }

            if (midval < h)
            {
                lowp = midp + 1;
            }
            else
            {
                highp = midp - 1;
            }

            if (lowp > highp)
            {
                return 0;
            }
        }
    }

    /// <summary>Envoy's ring scale: min(ceil(minWeight * minRing) / minWeight, maxRing); the ring has ceil(scale) points.</summary>
    public static double RingScale(IReadOnlyList<uint> weights, long minimumRingSize, long maximumRingSize)
    {
        double sum = weights.Sum(w => (double)w);
        var minWeight = weights.Where(w => w > 0).Min(w => w / sum);
        return Math.Min(Math.Ceiling(minWeight * minimumRingSize) / minWeight, maximumRingSize);
    }

    private sealed class BuildEntry
    {
        public required string Name { get; init; }

        public ulong Offset { get; init; }

        public ulong Skip { get; init; }

        public double Weight { get; init; }

        public double TargetWeight { get; set; }

        public ulong Next { get; set; }
    }
}

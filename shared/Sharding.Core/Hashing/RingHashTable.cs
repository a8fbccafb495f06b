using System.Buffers.Text;
using System.Collections.Immutable;

namespace Sharding.Hashing;

/// <summary>
/// A ketama-style hash ring, compatible with Envoy's ring hash using xxHash
/// (<c>source/extensions/load_balancing_policies/ring_hash/ring_hash_lb.cc</c>, <c>RingHashLoadBalancer::Ring</c>).
/// </summary>
/// <remarks>
/// Construction, step by step as Envoy does it:
/// <list type="number">
/// <item>Weights are normalised (w / sum); scale = min(ceil(minWeight * minimumRingSize) / minWeight, maximumRingSize), so the
///   lightest member gets a whole number of points and the ring never exceeds the maximum.</item>
/// <item>Walking the members, a running target (+= scale * weight) decides how many points each gets; point j of member
///   <c>name</c> sits at xxHash64("name_j", 0).</item>
/// <item>Points are sorted by hash. A request hash h belongs to the first point with hash ≥ h, wrapping to the first point.</item>
/// </list>
/// Envoy walks hosts in host-set order; we walk them sorted by name, so the ring equals Envoy's when its hosts come sorted
/// (and, with equal weights, whatever the order: every member then gets the same whole number of points).
/// </remarks>
public sealed class RingHashTable : ShardTable
{
    private readonly ulong[] _hashes;
    private readonly int[] _owners;

    /// <summary>Builds a ring.</summary>
    /// <param name="members">The members, in any order.</param>
    /// <param name="minimumRingSize">Envoy's <c>minimum_ring_size</c>.</param>
    /// <param name="maximumRingSize">Envoy's <c>maximum_ring_size</c>.</param>
    /// <exception cref="ArgumentException">Bad ring sizes or invalid members.</exception>
    public RingHashTable(
        IEnumerable<HashMember> members,
        long minimumRingSize = ShardTableOptions.DefaultMinimumRingSize,
        long maximumRingSize = ShardTableOptions.DefaultMaximumRingSize)
        : this(Prepare(members), ValidateSizes(minimumRingSize, maximumRingSize), maximumRingSize)
    {
    }

    private RingHashTable((ImmutableArray<HashMember> Members, byte[][] Utf8Names, ulong WeightSum) prepared, long minimumRingSize, long maximumRingSize)
        : base(ShardAlgorithm.RingHash, prepared.Members)
    {
        (_hashes, _owners) = Build(prepared.Members, prepared.Utf8Names, prepared.WeightSum, minimumRingSize, maximumRingSize);
    }

    /// <summary>The number of points on the ring.</summary>
    public int Count => _hashes.Length;

    /// <summary>Point hashes, ascending.</summary>
    public ReadOnlySpan<ulong> PointHashes => _hashes;

    /// <summary>Point owners (indices into <see cref="ShardTable.Members"/>), aligned with <see cref="PointHashes"/>.</summary>
    public ReadOnlySpan<int> PointOwners => _owners;

    /// <inheritdoc />
    public override bool IsEmpty => _hashes.Length == 0;

    /// <inheritdoc />
    public override int OwnerIndexOf(ulong hash)
    {
        var hashes = _hashes;
        if (hashes.Length == 0)
        {
            return -1;
        }

        // First point with hash >= h; past the last point wraps to the first (Envoy's ketama_get_server port).
        int low = 0, high = hashes.Length;
        while (low < high)
        {
            var mid = (int)((uint)(low + high) >> 1);
            if (hashes[mid] < hash)
            {
                low = mid + 1;
            }
            else
            {
                high = mid;
            }
        }

        return _owners[low == hashes.Length ? 0 : low];
    }

    private static long ValidateSizes(long minimumRingSize, long maximumRingSize)
    {
        if (minimumRingSize < 1 || maximumRingSize > ShardTableOptions.DefaultMaximumRingSize)
        {
            throw new ArgumentException(
                $"ring hash: ring sizes must lie between 1 and {ShardTableOptions.DefaultMaximumRingSize} (got minimum {minimumRingSize}, maximum {maximumRingSize}).",
                nameof(minimumRingSize));
        }

        if (minimumRingSize > maximumRingSize)
        {
            // Envoy's own wording (RingHashLoadBalancer constructor).
            throw new ArgumentException($"ring hash: minimum_ring_size ({minimumRingSize}) > maximum_ring_size ({maximumRingSize})", nameof(minimumRingSize));
        }

        return minimumRingSize;
    }

    private static (ulong[] Hashes, int[] Owners) Build(
        ImmutableArray<HashMember> members, byte[][] names, ulong weightSum, long minimumRingSize, long maximumRingSize)
    {
        if (weightSum == 0)
        {
            return ([], []);
        }

        // Step 1: scale so that the lightest member gets a whole number of points.
        var minWeight = double.MaxValue;
        foreach (var member in members)
        {
            if (member.Weight > 0)
            {
                minWeight = Math.Min(minWeight, member.Weight * 1.0 / weightSum);
            }
        }

        var scale = Math.Min(Math.Ceiling(minWeight * minimumRingSize) / minWeight, maximumRingSize);
        var capacity = (int)Math.Ceiling(scale);
        var points = new List<(ulong Hash, int Owner)>(capacity);

        // Step 2: running sums decide how many points each member gets; keys are "name_j".
        var buffer = new byte[names.Max(static n => n.Length) + 1 + 20];
        var currentHashes = 0.0;
        var targetHashes = 0.0;
        for (var i = 0; i < members.Length; i++)
        {
            if (members[i].Weight == 0)
            {
                continue;
            }

            var name = names[i];
            name.CopyTo(buffer, 0);
            buffer[name.Length] = (byte)'_';
            var suffixStart = name.Length + 1;
            targetHashes += scale * (members[i].Weight * 1.0 / weightSum);
            for (ulong j = 0; currentHashes < targetHashes; j++)
            {
                Utf8Formatter.TryFormat(j, buffer.AsSpan(suffixStart), out var digits);
                points.Add((XxHash64.Hash(buffer.AsSpan(0, suffixStart + digits)), i));
                currentHashes++;
            }
        }

        // Step 3: sort by hash; ties (never seen in practice) keep member order so the result is deterministic.
        points.Sort(static (a, b) => a.Hash != b.Hash ? a.Hash.CompareTo(b.Hash) : a.Owner.CompareTo(b.Owner));
        var hashes = new ulong[points.Count];
        var owners = new int[points.Count];
        for (var p = 0; p < points.Count; p++)
        {
            hashes[p] = points[p].Hash;
            owners[p] = points[p].Owner;
        }

        return (hashes, owners);
    }
}

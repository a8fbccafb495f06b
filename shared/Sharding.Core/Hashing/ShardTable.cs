using System.Collections.Immutable;
using System.Text;

namespace Sharding.Hashing;

/// <summary>
/// An immutable consistent-hashing table: maps a key's xxHash64 to the member that owns it.
/// Build one with <see cref="Create"/>; share it freely across threads.
/// </summary>
/// <remarks>
/// Members are kept sorted by the ordinal order of their UTF-8 names (what Envoy's Maglev sorts by), so the table
/// does not depend on the order in which members are given.
/// </remarks>
public abstract class ShardTable
{
    private protected ShardTable(ShardAlgorithm algorithm, ImmutableArray<HashMember> members)
    {
        Algorithm = algorithm;
        Members = members;
    }

    /// <summary>The algorithm that built this table.</summary>
    public ShardAlgorithm Algorithm { get; }

    /// <summary>The members, sorted by name (ordinal over UTF-8). Member indices elsewhere refer to this order.</summary>
    public ImmutableArray<HashMember> Members { get; }

    /// <summary>Whether the table has no member that can own keys (no members, or all with weight 0).</summary>
    public abstract bool IsEmpty { get; }

    /// <summary>The index in <see cref="Members"/> of the member that owns a request hash, or -1 when empty.</summary>
    /// <param name="hash">The request hash: xxHash64 of the shard key's UTF-8 bytes, seed 0.</param>
    /// <returns>The member index, or -1.</returns>
    public abstract int OwnerIndexOf(ulong hash);

    /// <summary>The name of the member that owns a request hash, or null when the table is empty.</summary>
    /// <param name="hash">The request hash.</param>
    /// <returns>The owner's name, or null.</returns>
    public string? OwnerOf(ulong hash)
    {
        var index = OwnerIndexOf(hash);
        return index < 0 ? null : Members[index].Name;
    }

    /// <summary>The owner of a shard key given as UTF-8 bytes, or null when the table is empty.</summary>
    /// <param name="key">The key's UTF-8 bytes.</param>
    /// <returns>The owner's name, or null.</returns>
    public string? OwnerOf(ReadOnlySpan<byte> key) => OwnerOf(XxHash64.Hash(key));

    /// <summary>The owner of a shard key, hashed as UTF-8, or null when the table is empty.</summary>
    /// <param name="key">The key.</param>
    /// <returns>The owner's name, or null.</returns>
    public string? OwnerOf(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        return OwnerOf(XxHash64.HashUtf8(key));
    }

    /// <summary>Builds a table.</summary>
    /// <param name="algorithm">The algorithm.</param>
    /// <param name="members">The members, in any order.</param>
    /// <param name="options">Sizes; defaults as Envoy's when null.</param>
    /// <returns>The immutable table.</returns>
    /// <exception cref="ArgumentException">Duplicate or empty member names, weights summing past 2^32 - 1, or bad sizes.</exception>
    public static ShardTable Create(ShardAlgorithm algorithm, IEnumerable<HashMember> members, ShardTableOptions? options = null)
    {
        options ??= ShardTableOptions.Default;
        return algorithm switch
        {
            ShardAlgorithm.Maglev => new MaglevTable(members, options.MaglevTableSize),
            ShardAlgorithm.RingHash => new RingHashTable(members, options.MinimumRingSize, options.MaximumRingSize),
            ShardAlgorithm.Modulo => new ModuloTable(members),
            _ => throw new ArgumentOutOfRangeException(nameof(algorithm), algorithm, "Unknown shard algorithm."),
        };
    }

    /// <summary>Validates members and sorts them by their UTF-8 names, ordinally.</summary>
    private protected static (ImmutableArray<HashMember> Members, byte[][] Utf8Names, ulong WeightSum) Prepare(IEnumerable<HashMember> members)
    {
        ArgumentNullException.ThrowIfNull(members);
        var list = new List<(HashMember Member, byte[] Utf8)>();
        ulong sum = 0;
        foreach (var member in members)
        {
            if (string.IsNullOrEmpty(member.Name))
            {
                throw new ArgumentException("A member name (its hash key) must not be empty.", nameof(members));
            }

            sum += member.Weight;
            if (sum > uint.MaxValue)
            {
                // Same limit and reason as Envoy's normalizeHostWeights: the sum must fit in 32 bits.
                throw new ArgumentException($"The sum of member weights exceeds {uint.MaxValue}.", nameof(members));
            }

            list.Add((member, Encoding.UTF8.GetBytes(member.Name)));
        }

        list.Sort(static (a, b) => a.Utf8.AsSpan().SequenceCompareTo(b.Utf8));
        for (var i = 1; i < list.Count; i++)
        {
            if (list[i].Utf8.AsSpan().SequenceEqual(list[i - 1].Utf8))
            {
                throw new ArgumentException($"Member '{list[i].Member.Name}' is listed twice; member names must be unique.", nameof(members));
            }
        }

        var sorted = ImmutableArray.CreateBuilder<HashMember>(list.Count);
        var names = new byte[list.Count][];
        for (var i = 0; i < list.Count; i++)
        {
            sorted.Add(list[i].Member);
            names[i] = list[i].Utf8;
        }

        return (sorted.MoveToImmutable(), names, sum);
    }
}

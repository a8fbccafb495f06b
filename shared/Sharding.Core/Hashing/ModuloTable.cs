using System.Collections.Immutable;

namespace Sharding.Hashing;

/// <summary>
/// Key hash modulo member count, over members sorted by name. For comparison only: when N changes, about
/// (N - 1) / N of all keys move, against 1 / N for consistent hashing. Weights other than 0 are ignored.
/// </summary>
public sealed class ModuloTable : ShardTable
{
    private readonly int[] _active;

    /// <summary>Builds the table.</summary>
    /// <param name="members">The members, in any order.</param>
    public ModuloTable(IEnumerable<HashMember> members)
        : this(Prepare(members).Members)
    {
    }

    private ModuloTable(ImmutableArray<HashMember> members)
        : base(ShardAlgorithm.Modulo, members)
    {
        var active = new List<int>(members.Length);
        for (var i = 0; i < members.Length; i++)
        {
            if (members[i].Weight > 0)
            {
                active.Add(i);
            }
        }

        _active = [.. active];
    }

    /// <inheritdoc />
    public override bool IsEmpty => _active.Length == 0;

    /// <inheritdoc />
    public override int OwnerIndexOf(ulong hash) =>
        _active.Length == 0 ? -1 : _active[(int)(hash % (ulong)_active.Length)];
}

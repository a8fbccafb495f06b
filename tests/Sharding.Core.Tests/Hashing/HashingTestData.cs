namespace Sharding.Hashing;

/// <summary>Members, keys and measurements shared by the hashing tests.</summary>
internal static class HashingTestData
{
    /// <summary>Equal-weight members named like StatefulSet pods: sharded-svc-0 … sharded-svc-(n-1).</summary>
    public static List<HashMember> Pods(int count, int first = 0) =>
        Enumerable.Range(first, count).Select(i => new HashMember($"sharded-svc-{i}")).ToList();

    public static List<HashMember> Hosts(params string[] names) => names.Select(n => new HashMember(n)).ToList();

    /// <summary>The owner name of every slot of a Maglev table.</summary>
    public static string[] SlotOwners(MaglevTable table)
    {
        var owners = new string[table.Entries.Length];
        for (var i = 0; i < owners.Length; i++)
        {
            owners[i] = table.Members[table.Entries[i]].Name;
        }

        return owners;
    }

    /// <summary>Share of slots whose owner differs between two Maglev tables of the same size.</summary>
    public static double ChangedShare(MaglevTable before, MaglevTable after)
    {
        Assert.Equal(before.Size, after.Size);
        var changed = 0;
        for (var i = 0; i < before.Size; i++)
        {
            if (!string.Equals(before.Members[before.Entries[i]].Name, after.Members[after.Entries[i]].Name, StringComparison.Ordinal))
            {
                changed++;
            }
        }

        return (double)changed / before.Size;
    }

    /// <summary>Share of the given key hashes whose owner differs between two tables of any kind.</summary>
    public static double MovedShare(ShardTable before, ShardTable after, ulong[] hashes)
    {
        var moved = 0;
        foreach (var hash in hashes)
        {
            if (!string.Equals(before.OwnerOf(hash), after.OwnerOf(hash), StringComparison.Ordinal))
            {
                moved++;
            }
        }

        return (double)moved / hashes.Length;
    }

    /// <summary>Key hashes of key-0 … key-(n-1), as requests would hash them.</summary>
    public static ulong[] KeyHashes(int count) =>
        Enumerable.Range(0, count).Select(i => XxHash64.HashUtf8($"key-{i}")).ToArray();

    /// <summary>How many of the key hashes each member owns.</summary>
    public static int[] KeysPerMember(ShardTable table, ulong[] hashes)
    {
        var counts = new int[table.Members.Length];
        foreach (var hash in hashes)
        {
            counts[table.OwnerIndexOf(hash)]++;
        }

        return counts;
    }

    /// <summary>max / mean of the counts.</summary>
    public static double Balance(IReadOnlyList<int> counts) => counts.Max() / counts.Average();
}

using System.Text;
using FsCheck;
using FsCheck.Fluent;
using Xunit.Abstractions;
using static Sharding.Hashing.HashingTestData;

namespace Sharding.Hashing;

public sealed class MaglevTableTests(ITestOutputHelper output)
{
    private const int M = ShardTableOptions.DefaultMaglevTableSize;

    // Envoy's expected tables, test/extensions/load_balancing_policies/maglev/maglev_lb_test.cc.
    [Fact]
    public void Entries_EnvoyBasic_MatchesEnvoyTable()
    {
        var table = new MaglevTable(Hosts("127.0.0.1:90", "127.0.0.1:91", "127.0.0.1:92", "127.0.0.1:93", "127.0.0.1:94", "127.0.0.1:95"), 7);
        Assert.Equal(Ports("127.0.0.1:", 92, 94, 90, 91, 95, 90, 93), SlotOwners(table));
    }

    [Fact]
    public void Entries_EnvoyBasicWithHostName_MatchesEnvoyTable()
    {
        var table = new MaglevTable(Hosts("90", "91", "92", "93", "94", "95"), 7);
        Assert.Equal(Ports(string.Empty, 92, 95, 90, 93, 94, 91, 90), SlotOwners(table));
    }

    [Fact]
    public void Entries_EnvoyWeighted_MatchesEnvoyTable()
    {
        var table = new MaglevTable([new("127.0.0.1:90", 1), new("127.0.0.1:91", 2)], 17);
        Assert.Equal(Ports("127.0.0.1:", 91, 90, 90, 91, 90, 91, 91, 90, 91, 91, 91, 91, 91, 90, 91, 90, 91), SlotOwners(table));
    }

    [Fact]
    public void Entries_EnvoyLocalityWeightedSameLocalityWeights_MatchesEnvoyTable()
    {
        var table = new MaglevTable([new("127.0.0.1:90", 1), new("127.0.0.1:91", 1)], 17);
        Assert.Equal(Ports("127.0.0.1:", 91, 90, 90, 91, 90, 91, 91, 90, 90, 91, 90, 91, 90, 90, 91, 90, 91), SlotOwners(table));
    }

    [Fact]
    public void Entries_EnvoyLocalityWeightedDifferentLocalityWeights_MatchesEnvoyTable()
    {
        // Envoy normalises to 90: 0.8, 91: 0.2, 92: 0 (its locality has weight 0); integer weights 4, 1, 0 give the same.
        var table = new MaglevTable([new("127.0.0.1:90", 4), new("127.0.0.1:91", 1), new("127.0.0.1:92", 0)], 17);
        Assert.Equal(Ports("127.0.0.1:", 91, 90, 90, 90, 90, 90, 91, 90, 90, 91, 90, 91, 90, 90, 90, 90, 90), SlotOwners(table));
        Assert.Equal(0, table.EntryCount(2));
    }

    [Fact]
    public void Entries_RandomMembersWeightsAndSizes_MatchEnvoyPort()
    {
        // A literal port of Envoy's construction (multiplying out every permutation step) against the optimised one.
        var random = new Random(42);
        int[] sizes = [2, 3, 7, 17, 251, 4099, M];
        for (var round = 0; round < 60; round++)
        {
            var size = sizes[round % sizes.Length];
            var count = random.Next(1, round % 3 == 0 ? 40 : 8);
            var hosts = Enumerable.Range(0, count)
                .Select(i => (Name: round % 2 == 0 ? $"10.0.{round}.{i}:8080" : $"pod-{random.Next(1_000_000)}-{i}", Weight: (uint)random.Next(0, 6)))
                .ToList();
            if (hosts.All(h => h.Weight == 0))
            {
                hosts[0] = (hosts[0].Name, 1);
            }

            var table = new MaglevTable(hosts.Select(h => new HashMember(h.Name, h.Weight)), size);
            Assert.Equal(EnvoyReference.Maglev(hosts, (ulong)size), SlotOwners(table));
        }
    }

    [Fact]
    public void Entries_MembersInAnyOrder_SameTable()
    {
        var members = Pods(12).Select((m, i) => m with { Weight = (uint)(1 + (i % 3)) }).ToArray();
        foreach (var size in new[] { 251, M })
        {
            var expected = SlotOwners(new MaglevTable(members, size));
            Prop.ForAll(
                    Arb.From(Gen.Shuffle(members)),
                    shuffled => SlotOwners(new MaglevTable(shuffled, size)).AsSpan().SequenceEqual(expected))
                .Check(Config.QuickThrowOnFailure.WithMaxTest(size == M ? 20 : 100));
        }
    }

    [Fact]
    public void Constructor_NoSize_Uses65537()
    {
        var table = new MaglevTable(Pods(3));
        Assert.Equal(65537, table.Size);
        Assert.Equal(65537, table.Entries.Length);
        Assert.Equal(ShardAlgorithm.Maglev, table.Algorithm);
    }

    [Theory]
    [InlineData(-7)]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(4)]
    [InlineData(9)]
    [InlineData(65536)]
    [InlineData(16777259)] // prime, far above the cap
    [InlineData(5000077)] // prime, but above Envoy's limit (maglev.proto table_size: "limited to 5000011")
    public void Constructor_SizeNotAPrimeInRange_ThrowsArgumentExceptionNamingTheSize(int size)
    {
        var ex = Assert.Throws<ArgumentException>(() => new MaglevTable(Pods(3), size));
        Assert.Contains("prime", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"got {size}", ex.Message, StringComparison.Ordinal);
        Assert.Equal("tableSize", ex.ParamName);
    }

    [Fact]
    public void Create_NonPrimeOption_ThrowsArgumentException() =>
        Assert.Throws<ArgumentException>(() => ShardTable.Create(ShardAlgorithm.Maglev, Pods(3), new ShardTableOptions { MaglevTableSize = 100 }));

    [Fact]
    public void Constructor_DuplicateNames_ThrowsArgumentExceptionNamingTheMember()
    {
        var ex = Assert.Throws<ArgumentException>(() => new MaglevTable([new("a"), new("b"), new("a", 2)]));
        Assert.Contains("'a'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("twice", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("")]
    [InlineData(null)]
    public void Constructor_EmptyName_ThrowsArgumentException(string? name)
    {
        var ex = Assert.Throws<ArgumentException>(() => new MaglevTable([new("a"), new(name!)]));
        Assert.Contains("must not be empty", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Constructor_WeightsSumPast32Bits_ThrowsArgumentException() =>
        Assert.Throws<ArgumentException>(() => new MaglevTable([new("a", uint.MaxValue), new("b", 1)], 7));

    [Fact]
    public void Constructor_NullMembers_ThrowsArgumentNullException() =>
        Assert.Throws<ArgumentNullException>(() => new MaglevTable(null!));

    [Fact]
    public void Entries_ZeroWeightMember_GetsNoEntries()
    {
        var table = new MaglevTable([new("a"), new("b", 0), new("c")], 251);
        var zero = table.Members.IndexOf(new HashMember("b", 0));
        Assert.Equal(0, table.EntryCount(zero));
        Assert.DoesNotContain(zero, table.Entries.ToArray());
        Assert.Equal(251, table.EntryCount(0) + table.EntryCount(2));
        Assert.Equal(SlotOwners(new MaglevTable([new("a"), new("c")], 251)), SlotOwners(table));
    }

    [Fact]
    public void OwnerOf_AllWeightsZero_IsEmptyAndReturnsNull()
    {
        var table = new MaglevTable([new("a", 0), new("b", 0)], 7);
        Assert.True(table.IsEmpty);
        Assert.Equal(0, table.Entries.Length);
        Assert.Null(table.OwnerOf("key"));
        Assert.Null(table.OwnerOf("key"u8));
        Assert.Equal(-1, table.OwnerIndexOf(12345));
    }

    [Fact]
    public void OwnerOf_NoMembers_IsEmptyAndReturnsNull()
    {
        var table = new MaglevTable([]);
        Assert.True(table.IsEmpty);
        Assert.Null(table.OwnerOf("key"));
    }

    [Fact]
    public void OwnerOf_AnyKey_StringSpanAndHashAgree()
    {
        var table = new MaglevTable(Pods(7));
        var random = new Random(3);
        for (var i = 0; i < 2_000; i++)
        {
            var key = i % 10 == 0 ? $"ключ-{i}-😀" : $"account-{random.Next()}";
            var bytes = Encoding.UTF8.GetBytes(key);
            var hash = XxHash64.Hash(bytes);
            var expected = table.Members[table.OwnerIndexOf(hash)].Name;
            Assert.Equal(expected, table.OwnerOf(key));
            Assert.Equal(expected, table.OwnerOf(bytes));
            Assert.Equal(expected, table.OwnerOf(hash));
            Assert.Equal(table.Entries[(int)(hash % (ulong)table.Size)], table.OwnerIndexOf(hash));
        }

        Assert.Throws<ArgumentNullException>(() => table.OwnerOf((string)null!));
    }

    [Fact]
    public void OwnerOf_HashesAtTheEdges_IndexModuloSize()
    {
        var table = new MaglevTable(Pods(5), 17);
        foreach (var hash in new[] { 0UL, 16UL, 17UL, ulong.MaxValue, ulong.MaxValue - 1, (ulong)long.MaxValue + 5 })
        {
            Assert.Equal(table.Entries[(int)(hash % 17)], table.OwnerIndexOf(hash));
        }
    }

    [Theory]
    [InlineData(3)]
    [InlineData(5)]
    [InlineData(10)]
    [InlineData(25)]
    [InlineData(50)]
    [InlineData(100)]
    public void EntryCount_EqualMembersAt65537_MaxOverMeanAtMost1Point01(int members)
    {
        var table = new MaglevTable(Pods(members));
        var counts = Enumerable.Range(0, members).Select(table.EntryCount).ToArray();
        var balance = Balance(counts);
        output.WriteLine($"N={members}: entries min {counts.Min()} max {counts.Max()}, max/mean {balance:F5}");
        Assert.Equal(M, counts.Sum());
        Assert.True(balance <= 1.01, $"max/mean {balance}");

        // Equal weights: every member takes one slot per round, so counts differ by at most one.
        Assert.True(counts.Max() - counts.Min() <= 1);
    }

    [Theory]
    [InlineData(new uint[] { 1, 2, 3, 4 })]
    [InlineData(new uint[] { 1, 1, 1, 5 })]
    [InlineData(new uint[] { 10, 20, 30, 40, 50 })]
    [InlineData(new uint[] { 1, 100 })]
    [InlineData(new uint[] { 3, 1, 0, 2 })]
    public void EntryCount_Weights_ShareWithin1PercentOfWeightShare(uint[] weights)
    {
        var members = weights.Select((w, i) => new HashMember($"sharded-svc-{i}", w)).ToList();
        var table = new MaglevTable(members);
        double sum = weights.Sum(w => (double)w);
        var worst = 0.0;
        for (var i = 0; i < members.Count; i++)
        {
            var index = table.Members.IndexOf(members[i]);
            var share = (double)table.EntryCount(index) / M;
            worst = Math.Max(worst, Math.Abs(share - (weights[i] / sum)));
            Assert.True(Math.Abs(share - (weights[i] / sum)) <= 0.01, $"{members[i].Name}: share {share:P3}, weight share {weights[i] / sum:P3}");
        }

        output.WriteLine($"weights {string.Join(",", weights)}: worst |share - w/sum| = {worst:P4}");
    }

    // Measured (this commit, M = 65537, members sharded-svc-0..N-1, removing every member for N <= 10 and ten spread
    // over the set above), worst share of entries changed minus the ideal 1/N:
    // N=3 +0.020 %, 5 +0.259 %, 10 +0.383 %, 25 +0.455 %, 50 +0.489 %, 100 +0.561 % (worst).
    // Adding one member (sharded-svc-N, new-pod, 10.1.2.3:8080), minus 1/(N+1):
    // N=3 +0.293 %, 5 +0.305 %, 10 +0.351 %, 25 +0.448 %, 50 +0.490 %, 99 +0.544 % (worst).
    // The figures are in docs/hashing.md; the assertions hold the issue's bound of 1/N + 1 %.
    [Theory]
    [InlineData(3)]
    [InlineData(5)]
    [InlineData(10)]
    [InlineData(25)]
    [InlineData(50)]
    [InlineData(100)]
    public void Entries_RemoveOneOfN_ChangesAtMostOneNthPlus1Percent(int n)
    {
        var members = Pods(n);
        var before = new MaglevTable(members);
        var removals = n <= 10 ? Enumerable.Range(0, n) : Enumerable.Range(0, 10).Select(k => k * (n - 1) / 9).Distinct();
        var worst = 0.0;
        foreach (var removed in removals)
        {
            var after = new MaglevTable(members.Where((_, i) => i != removed));
            var changed = ChangedShare(before, after);
            worst = Math.Max(worst, changed);
            Assert.True(changed <= (1.0 / n) + 0.01, $"removing {members[removed].Name} of {n}: {changed:P3} changed, bound {(1.0 / n) + 0.01:P3}");
        }

        output.WriteLine($"remove 1 of {n}: worst changed {worst:P3}, ideal {1.0 / n:P3}, excess {worst - (1.0 / n):P3}");
    }

    [Theory]
    [InlineData(3)]
    [InlineData(5)]
    [InlineData(10)]
    [InlineData(25)]
    [InlineData(50)]
    [InlineData(99)]
    public void Entries_AddOneToN_ChangesAtMostOneOverNPlusOnePlus1Percent(int n)
    {
        var before = new MaglevTable(Pods(n));
        var worst = 0.0;
        foreach (var added in new[] { $"sharded-svc-{n}", "new-pod", "10.1.2.3:8080" })
        {
            var after = new MaglevTable(Pods(n).Append(new HashMember(added)));
            var changed = ChangedShare(before, after);
            worst = Math.Max(worst, changed);
            var bound = (1.0 / (n + 1)) + 0.01;
            Assert.True(changed <= bound, $"adding {added} to {n}: {changed:P3} changed, bound {bound:P3}");
        }

        output.WriteLine($"add 1 to {n}: worst changed {worst:P3}, ideal {1.0 / (n + 1):P3}, excess {worst - (1.0 / (n + 1)):P3}");
    }

    private static string[] Ports(string prefix, params int[] ports) => ports.Select(p => prefix + p).ToArray();
}

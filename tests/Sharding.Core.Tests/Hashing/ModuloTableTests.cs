using Xunit.Abstractions;
using static Sharding.Hashing.HashingTestData;

namespace Sharding.Hashing;

public sealed class ModuloTableTests(ITestOutputHelper output)
{
    [Fact]
    public void OwnerIndexOf_AnyHash_IsHashModuloActiveMembersInNameOrder()
    {
        var table = new ModuloTable([new("c"), new("a"), new("b")]);
        Assert.Equal(["a", "b", "c"], table.Members.Select(m => m.Name));
        for (ulong h = 0; h < 30; h++)
        {
            Assert.Equal((int)(h % 3), table.OwnerIndexOf(h));
        }

        Assert.Equal("a", table.OwnerOf(ulong.MaxValue)); // 2^64 - 1 = 0 mod 3
    }

    [Fact]
    public void OwnerOf_ZeroWeightMember_NeverOwns()
    {
        var table = new ModuloTable([new("a"), new("b", 0), new("c")]);
        for (ulong h = 0; h < 100; h++)
        {
            Assert.NotEqual("b", table.OwnerOf(h));
        }
    }

    [Fact]
    public void OwnerOf_NoActiveMembers_IsEmptyAndReturnsNull()
    {
        var table = new ModuloTable([new("a", 0)]);
        Assert.True(table.IsEmpty);
        Assert.Null(table.OwnerOf("k"));
        Assert.True(new ModuloTable([]).IsEmpty);
    }

    [Theory]
    [InlineData(3)]
    [InlineData(10)]
    [InlineData(50)]
    public void OwnerOf_ManyKeys_SpreadEvenly(int n)
    {
        var keys = KeyHashes(200_000);
        var balance = Balance(KeysPerMember(new ModuloTable(Pods(n)), keys));
        output.WriteLine($"modulo N={n}: max/mean keys {balance:F3}");
        Assert.True(balance <= 1.05, $"max/mean {balance:F3}");
    }

    [Theory]
    [InlineData(3)]
    [InlineData(5)]
    [InlineData(10)]
    [InlineData(50)]
    public void OwnerOf_NToNPlusOneMembers_MovesAboutNOverNPlusOneOfKeys(int n)
    {
        // Zero-padded names keep the first N members at the same indices, the best case for modulo.
        var keys = KeyHashes(200_000);
        var before = new ModuloTable(Enumerable.Range(0, n).Select(i => new HashMember($"m{i:D3}")));
        var after = new ModuloTable(Enumerable.Range(0, n + 1).Select(i => new HashMember($"m{i:D3}")));
        var moved = MovedShare(before, after, keys);
        var maglevMoved = MovedShare(new MaglevTable(before.Members), new MaglevTable(after.Members), keys);
        output.WriteLine($"modulo {n}->{n + 1}: moved {moved:P2} (N/(N+1) = {(double)n / (n + 1):P2}); maglev moved {maglevMoved:P2}");
        Assert.InRange(moved, ((double)n / (n + 1)) - 0.02, ((double)n / (n + 1)) + 0.02);
        Assert.True(moved >= (double)(n - 1) / n - 0.02);
        Assert.True(maglevMoved < moved / 2);
    }
}

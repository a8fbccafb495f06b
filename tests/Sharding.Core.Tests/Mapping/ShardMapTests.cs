using Sharding.Hashing;
using Sharding.Mapping;

namespace Sharding.Core.Tests.Mapping;

public sealed class ShardMapTests
{
    private static readonly ShardMember[] ThreePods =
    [
        new("sharded-svc-0", "10.0.0.10:15100"),
        new("sharded-svc-1", "10.0.0.11:15100"),
        new("sharded-svc-2", "10.0.0.12:15100"),
    ];

    [Fact]
    public void Create_ByName_OwnerMatchesMaglevOverNames()
    {
        var map = ShardMap.Create("svc", 1, ThreePods);
        var table = new MaglevTable(ThreePods.Select(p => new HashMember(p.Name)));

        for (var i = 0; i < 1000; i++)
        {
            var key = "account-" + i;
            Assert.Equal(table.OwnerOf(key), map.OwnerOf(key)!.Name);
        }
    }

    [Fact]
    public void Create_ByAddress_OwnerMatchesMaglevOverAddresses()
    {
        var map = ShardMap.Create("svc", 1, ThreePods, hashKeySource: HashKeySource.Address);
        var table = new MaglevTable(ThreePods.Select(p => new HashMember(p.Address)));

        for (var i = 0; i < 1000; i++)
        {
            var key = "doc-" + i;
            Assert.Equal(table.OwnerOf(key), map.OwnerOf(key)!.Address);
        }
    }

    [Fact]
    public void Create_MemberOrder_DoesNotChangeMembersOrChecksum()
    {
        var a = ShardMap.Create("svc", 3, ThreePods);
        var b = ShardMap.Create("svc", 3, ThreePods.Reverse());

        Assert.Equal(a.Members.AsEnumerable(), b.Members.AsEnumerable());
        Assert.Equal(a.Checksum, b.Checksum);
        Assert.Equal(["sharded-svc-0", "sharded-svc-1", "sharded-svc-2"], a.Members.Select(m => m.Name));
    }

    [Fact]
    public void Checksum_DiffersWhenTableDiffers_AndIgnoresGeneration()
    {
        var three = ShardMap.Create("svc", 1, ThreePods);
        var four = ShardMap.Create("svc", 2, [.. ThreePods, new ShardMember("sharded-svc-3", "10.0.0.13:15100")]);

        Assert.NotEqual(three.Checksum, four.Checksum);
        Assert.Equal(three.Checksum, three.WithGeneration(9).Checksum);
        Assert.Equal(9, three.WithGeneration(9).Generation);
    }

    [Fact]
    public void Checksum_RingAndModulo_AreStable()
    {
        var ring1 = ShardMap.Create("svc", 1, ThreePods, ShardAlgorithm.RingHash);
        var ring2 = ShardMap.Create("svc", 1, ThreePods.Reverse(), ShardAlgorithm.RingHash);
        var modulo = ShardMap.Create("svc", 1, ThreePods, ShardAlgorithm.Modulo);

        Assert.Equal(ring1.Checksum, ring2.Checksum);
        Assert.NotEqual(ring1.Checksum, modulo.Checksum);
    }

    [Fact]
    public void Create_DuplicateAddressWhenHashingByAddress_Throws()
    {
        var ex = Assert.Throws<ArgumentException>(() => ShardMap.Create("svc", 1,
            [new ShardMember("a", "10.0.0.1:1"), new ShardMember("b", "10.0.0.1:1")], hashKeySource: HashKeySource.Address));

        Assert.Contains("10.0.0.1:1", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Create_DuplicateNameWhenHashingByAddress_Throws()
    {
        // Members are identified by name (a sidecar finds itself by its pod name, FindMember, x-sharding-owner): two pods of the
        // same name in different namespaces must not both get keys just because their addresses differ.
        var ex = Assert.Throws<ArgumentException>(() => ShardMap.Create("svc", 1,
            [new ShardMember("svc-0", "10.0.0.1:15100"), new ShardMember("svc-0", "10.0.0.2:15100")], hashKeySource: HashKeySource.Address));

        Assert.Contains("svc-0", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void OwnerOf_EmptyMap_ReturnsNull()
    {
        var map = ShardMap.Create("svc", 1, []);

        Assert.True(map.IsEmpty);
        Assert.Null(map.OwnerOf("k"));
    }

    [Fact]
    public void FindMember_KnownAndUnknown()
    {
        var map = ShardMap.Create("svc", 1, ThreePods);

        Assert.Equal("10.0.0.11:15100", map.FindMember("sharded-svc-1")!.Address);
        Assert.Null(map.FindMember("sharded-svc-9"));
    }
}

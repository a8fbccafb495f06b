using Sharding.Hashing;
using Sharding.Mapping;

namespace Sharding.Core.Tests.Mapping;

public sealed class ShardMapComparisonTests
{
    private static ShardMember[] Pods(int n) => [.. Enumerable.Range(0, n).Select(i => new ShardMember($"pod-{i}", $"10.0.0.{i}:15100"))];

    [Fact]
    public void MovedShare_MaglevAddOne_IsNearIdealAndMatchesSlotCount()
    {
        var before = ShardMap.Create("svc", 1, Pods(3));
        var after = ShardMap.Create("svc", 2, Pods(4));

        var share = ShardMapComparison.MovedShare(before, after);

        var table = (MaglevTable)before.Table;
        var moved = 0;
        for (var i = 0; i < table.Size; i++)
        {
            moved += before.OwnerOf((ulong)i)!.Name == after.OwnerOf((ulong)i)!.Name ? 0 : 1;
        }

        Assert.Equal((double)moved / table.Size, share, 12);
        Assert.InRange(share, 0.25, 0.26);
    }

    [Fact]
    public void MovedShare_SameMembers_IsZero_AndEmptySidesAreAllOrNothing()
    {
        var map = ShardMap.Create("svc", 1, Pods(3), ShardAlgorithm.RingHash);
        var empty = ShardMap.Create("svc", 1, []);

        Assert.Equal(0, ShardMapComparison.MovedShare(map, map.WithGeneration(2)));
        Assert.Equal(1, ShardMapComparison.MovedShare(empty, map));
        Assert.Equal(0, ShardMapComparison.MovedShare(empty, empty));
    }

    [Fact]
    public void MovedShare_RingHashRemoveOne_IsSampledNearItsShare()
    {
        var before = ShardMap.Create("svc", 1, Pods(10), ShardAlgorithm.RingHash);
        var after = ShardMap.Create("svc", 2, Pods(9), ShardAlgorithm.RingHash);

        Assert.InRange(ShardMapComparison.MovedShare(before, after), 0.05, 0.25);
    }
}

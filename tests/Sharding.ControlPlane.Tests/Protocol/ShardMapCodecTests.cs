using Google.Protobuf;
using Sharding.Hashing;
using Sharding.Mapping;
using Sharding.Protocol;
using Sharding.Protocol.V1;

namespace Sharding.ControlPlane.Tests.Protocol;

public sealed class ShardMapCodecTests
{
    private static ShardMap Map(int members, long generation, int size = 65537) =>
        ShardMap.Create("svc", generation, Enumerable.Range(0, members).Select(i => new ShardMember($"svc-{i}", $"127.0.0.1:{15100 + i}")), tableOptions: new() { MaglevTableSize = size });

    [Fact]
    public async Task Apply_ManySubscribersSameUpdatesAtOnce_ShareOneMapPerGeneration()
    {
        // A service name of its own: the codec's cache is process-wide.
        var service = "cache-" + Guid.NewGuid().ToString("N");
        ShardMap Create(int members, long generation) => ShardMap.Create(
            service, generation, Enumerable.Range(0, members).Select(i => new ShardMember($"m-{i}", $"127.0.0.1:{15100 + i}")), tableOptions: new() { MaglevTableSize = 65537 });
        var before = Create(20, 1);
        var after = Create(21, 2);
        var snapshot = ShardMapCodec.ToSnapshot(before, 1, "leader", 0).ToByteArray();
        var delta = ShardMapCodec.ToDelta(before, after, 1, "leader", 0)!.ToByteArray();

        // Like many subscribers of one process receiving the same frames at the same moment: one build, one shared map.
        var received = await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => Task.Run(() =>
        {
            var held = ShardMapCodec.Apply(ShardMapUpdate.Parser.ParseFrom(snapshot), null);
            return (Snapshot: held, Delta: ShardMapCodec.Apply(ShardMapUpdate.Parser.ParseFrom(delta), held));
        })));

        Assert.All(received, r => Assert.Same(received[0].Snapshot, r.Snapshot));
        Assert.All(received, r => Assert.Same(received[0].Delta, r.Delta));
        Assert.Equal(before.Checksum, received[0].Snapshot.Checksum);
        Assert.Equal(after.Checksum, received[0].Delta.Checksum);
        Assert.Equal(2, received[0].Delta.Generation);

        // The same members at a later generation (101 → 100 → 101) reuse the built table under the new generation.
        var later = ShardMapCodec.Apply(ShardMapUpdate.Parser.ParseFrom(ShardMapCodec.ToSnapshot(after.WithGeneration(3), 1, "leader", 0).ToByteArray()), null);
        Assert.Equal(3, later.Generation);
        Assert.Equal(after.Checksum, later.Checksum);
        Assert.Same(received[0].Delta.Table, later.Table);
    }

    [Fact]
    public void Apply_SnapshotThenDelta_SameTablesAsLeader()
    {
        var before = Map(10, 5);
        var after = Map(11, 6);
        var snapshot = ShardMapUpdate.Parser.ParseFrom(ShardMapCodec.ToSnapshot(before, 1, "leader", 0).ToByteArray());
        var received = ShardMapCodec.Apply(snapshot, null);
        Assert.Equal(before.Checksum, received.Checksum);
        Assert.Equal(5, received.Generation);

        var delta = ShardMapCodec.ToDelta(before, after, 1, "leader", 0)!;
        Assert.Equal(UpdateKind.Delta, delta.Kind);
        Assert.InRange(delta.ChangedEntries.Count / 2, 1, 65537 / 5);
        Assert.True(delta.CalculateSize() * 2 < snapshot.CalculateSize());
        var next = ShardMapCodec.Apply(delta, received);
        Assert.Equal(after.Checksum, next.Checksum);
        Assert.Equal(6, next.Generation);
    }

    [Fact]
    public void Apply_CorruptedDeltaEntry_ChecksumMismatch()
    {
        var before = Map(10, 5, 251);
        var delta = ShardMapCodec.ToDelta(before, Map(11, 6, 251), 1, null, 0)!;
        delta.ChangedEntries[1] = (delta.ChangedEntries[1] + 1) % 11;
        var ex = Assert.Throws<ShardMapUpdateException>(() => ShardMapCodec.Apply(delta, before));
        Assert.Equal(ShardMapUpdateError.ChecksumMismatch, ex.Error);
    }

    [Fact]
    public void Apply_CorruptedChecksum_ChecksumMismatch()
    {
        var update = ShardMapCodec.ToSnapshot(Map(3, 1, 251), 1, null, 0);
        update.Checksum ^= 1;
        Assert.Equal(ShardMapUpdateError.ChecksumMismatch, Assert.Throws<ShardMapUpdateException>(() => ShardMapCodec.Apply(update, null)).Error);
    }

    [Fact]
    public void Apply_DeltaOnWrongBase_BaseMismatch()
    {
        var delta = ShardMapCodec.ToDelta(Map(3, 1, 251), Map(4, 2, 251), 1, null, 0)!;
        Assert.Equal(ShardMapUpdateError.BaseMismatch, Assert.Throws<ShardMapUpdateException>(() => ShardMapCodec.Apply(delta, Map(3, 7, 251))).Error);
    }

    [Fact]
    public void ToDelta_TableSizeChanged_NullSoSnapshot() => Assert.Null(ShardMapCodec.ToDelta(Map(3, 1, 251), Map(3, 2, 257), 1, null, 0));

    [Fact]
    public void Apply_MembersWhoseFieldsOnlyConcatenateAlike_NotServedFromTheOtherMapsCache()
    {
        // Two different member lists whose fields, joined with the cache key's tab and newline separators, give the same text:
        // the second update must not get the first one's cached map (same hash keys and checksum, other addresses).
        var service = "collide-" + Guid.NewGuid().ToString("N");
        ShardMap Create(string addressM, string addressN) =>
            ShardMap.Create(service, 1, [new ShardMember("m", addressM), new ShardMember("n", addressN)], tableOptions: new() { MaglevTableSize = 251 });
        var first = Create("a\t1\nn\tb", "c");
        var second = Create("a", "b\t1\nn\tc");

        var appliedFirst = ShardMapCodec.Apply(ShardMapCodec.ToSnapshot(first, 1, null, 0), null);
        var appliedSecond = ShardMapCodec.Apply(ShardMapCodec.ToSnapshot(second, 1, null, 0), null);

        Assert.Equal(["a\t1\nn\tb", "c"], appliedFirst.Members.Select(m => m.Address));
        Assert.Equal(["a", "b\t1\nn\tc"], appliedSecond.Members.Select(m => m.Address));
    }

    [Fact]
    public void ToSnapshot_LargestAcceptedTableSize_FitsWhatSubscribersAccept()
    {
        // Every table size that membership validation accepts must reach the sidecars: a snapshot above the subscribers'
        // MaxMessageBytes is refused with RESOURCE_EXHAUSTED on every (re)connect, and no sidecar ever gets the map.
        var size = ShardTableOptions.MaxMaglevTableSize;
        while (!Primes.IsPrime(size))
        {
            size--;
        }

        var map = ShardMap.Create("big", 1, Enumerable.Range(0, 200).Select(i => new ShardMember($"sharded-svc-{i}", $"10.0.{i / 250}.{i % 250}:15100")),
            tableOptions: new() { MaglevTableSize = size });
        var bytes = ShardMapCodec.ToSnapshot(map, 1, "leader", 0).CalculateSize();
        Assert.True(bytes <= new AssignmentsWatcherOptions().MaxMessageBytes, $"snapshot of M = {size}: {bytes} bytes");
    }
}

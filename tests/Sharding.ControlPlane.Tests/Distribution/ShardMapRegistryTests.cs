using Sharding.ControlPlane.Distribution;
using Sharding.Mapping;

namespace Sharding.ControlPlane.Tests.Distribution;

/// <summary>What a subscriber says it holds: only what this replica never published is a claim for the leader.</summary>
public sealed class ShardMapRegistryTests
{
    [Fact]
    public void NoteHeld_OnlyGenerationsThisReplicaDidNotPublish_AreReportedOnce()
    {
        var registry = new ShardMapRegistry();
        var reported = new List<(string Service, long Generation)>();
        registry.HeldAhead += (service, generation, _) => reported.Add((service, generation));
        var current = Map(generation: (3L << 32) | 5, members: 3);
        registry.Publish(current, 3, "cp-0", 0);

        registry.NoteHeld("svc", current.Generation, current.Checksum); // up to date
        registry.NoteHeld("svc", (3L << 32) | 4, 42); // behind: it gets the current one
        Assert.Empty(reported);
        Assert.Equal(0, registry.HeldAbove("svc"));

        registry.NoteHeld("svc", current.Generation, current.Checksum ^ 1); // the same number with other content
        registry.NoteHeld("svc", (3L << 32) | 9, 42); // beyond
        registry.NoteHeld("svc", (3L << 32) | 7, 42); // beyond, but below one reported already
        Assert.Equal([("svc", current.Generation), ("svc", (3L << 32) | 9)], reported);
        Assert.Equal((3L << 32) | 9, registry.HeldAbove("svc"));

        // Equal still needs a new publication (it was noted with other content); above it, the claim is settled.
        registry.Publish(Map((3L << 32) | 9, members: 4), 3, "cp-0", 0);
        Assert.Equal((3L << 32) | 9, registry.HeldAbove("svc"));
        registry.Publish(Map(4L << 32 | 1, members: 4), 4, "cp-0", 0);
        Assert.Equal(0, registry.HeldAbove("svc"));
    }

    [Fact]
    public void NoteHeld_ServiceNotPublishedYet_ReportsAnyGeneration()
    {
        var registry = new ShardMapRegistry();
        long? reported = null;
        registry.HeldAhead += (_, generation, _) => reported = generation;

        registry.NoteHeld("svc", 7L << 32 | 1, 42);

        Assert.Equal(7L << 32 | 1, reported);
        Assert.Equal(7L << 32 | 1, registry.HeldAbove("svc"));
    }

    private static ShardMap Map(long generation, int members) =>
        ShardMap.Create("svc", generation, Enumerable.Range(0, members).Select(i => new ShardMember($"svc-{i}", $"127.0.0.1:{15100 + i}")), tableOptions: new() { MaglevTableSize = 251 });
}

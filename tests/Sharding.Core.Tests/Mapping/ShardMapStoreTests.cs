using Sharding.Mapping;

namespace Sharding.Core.Tests.Mapping;

public sealed class ShardMapStoreTests
{
    private static ShardMap Map(long generation) => ShardMap.Create("svc", generation, [new ShardMember("a", "127.0.0.1:1")]);

    [Fact]
    public void TryPublish_OnlyNewerGenerationsGetIn()
    {
        var store = new ShardMapStore();
        var seen = new List<(long New, long? Old)>();
        store.Changed += (map, previous) => seen.Add((map.Generation, previous?.Generation));

        Assert.Equal(-1, store.Generation);
        Assert.True(store.TryPublish(Map(5)));
        Assert.False(store.TryPublish(Map(5)));
        Assert.False(store.TryPublish(Map(4)));
        Assert.True(store.TryPublish(Map(7)));

        Assert.Equal(7, store.Generation);
        Assert.Equal([(5L, (long?)null), (7L, 5L)], seen);
    }

    [Fact]
    public async Task WaitForGenerationAsync_ReleasedWhenGenerationArrives()
    {
        var store = new ShardMapStore();
        store.TryPublish(Map(1));

        var wait = store.WaitForGenerationAsync(3, TimeSpan.FromSeconds(30), CancellationToken.None).AsTask();
        store.TryPublish(Map(2));
        Assert.False(wait.IsCompleted);
        store.TryPublish(Map(4));

        Assert.True(await wait.WaitAsync(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public async Task WaitForGenerationAsync_TimesOutFalse()
    {
        var store = new ShardMapStore();
        store.TryPublish(Map(1));

        Assert.False(await store.WaitForGenerationAsync(2, TimeSpan.FromMilliseconds(20), CancellationToken.None));
        Assert.True(await store.WaitForGenerationAsync(1, TimeSpan.Zero, CancellationToken.None));
    }

    [Fact]
    public async Task WaitForGenerationAsync_CallerCancellation_Throws()
    {
        var store = new ShardMapStore();
        using var cts = new CancellationTokenSource();
        var wait = store.WaitForGenerationAsync(1, TimeSpan.FromSeconds(30), cts.Token).AsTask();
        await cts.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => wait);
    }
}

using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using Sharding.Mapping;
using Sharding.Sidecar.Forwarding;

namespace Sharding.Sidecar.Tests.Draining;

/// <summary>
/// A drain that ends a WebSocket between the client's switch (101, or 200 over HTTP/2) and the start of the two copies: the
/// client must still get the close frame 1012, not a connection cut without a close handshake.
/// </summary>
[Collection(DrainGroup.Name)]
public sealed class UpgradeDrainWindowTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task DrainBetweenTheSwitchAndTheCopies_StillSendsTheCloseFrame(bool http2)
    {
        await using var cluster = await DrainCluster.StartAsync();
        var before = cluster.Expected;

        // Owned by pod-0 now and by pod-3 once it joins: entered at pod-0, so pod-0 serves it locally and drains it.
        var key = Enumerable.Range(0, 10_000).Select(i => $"window-{i}")
            .First(k => before.OwnerOf(k.AsSpan())!.Name == "pod-0"
                        && ShardMap.Create("x", 1, before.Members.Add(new ShardMember("pod-3", "127.0.0.1:1"))).OwnerOf(k.AsSpan())!.Name == "pod-3");

        // The hook holds the forward in the window until the registry has asked it to end (the new map, then the grace).
        var forwarder = cluster.Sidecars[0].Services.GetRequiredService<HttpForwarder>();
        var endRequested = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        forwarder.AfterClientSwitch = async stream =>
        {
            await cluster.ChangeMembersAsync(4, 20);
            var clock = Stopwatch.StartNew();
            while (stream is { EndRequested: false } && clock.Elapsed < DrainCluster.Grace + TimeSpan.FromSeconds(5))
            {
                await Task.Delay(10);
            }

            endRequested.TrySetResult(stream?.EndRequested == true);
        };

        var watch = new Watch(1, "ws", key, cluster.Sidecars[0].Port);
        using var client = WatchClients.CreateClient();
        await WatchClients.RunAsync(watch, client, http2, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(15));

        Assert.True(await endRequested.Task.WaitAsync(TimeSpan.FromSeconds(1)), "the drain never asked the stream to end");
        Assert.Equal("close 1012", watch.EndStatus);
    }
}

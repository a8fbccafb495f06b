using System.Net;
using Sharding.ControlPlane.Tests.Hosting;
using Sharding.Protocol;
using Sharding.Protocol.V1;

namespace Sharding.ControlPlane.Tests.Distribution;

/// <summary>
/// A subscriber that stops reading (its HTTP/2 stream window fills) on the same connection as a healthy one: the healthy one keeps
/// receiving every generation, and the stalled one is reset with ENHANCE_YOUR_CALM once its flush stays blocked for the stall timeout.
/// </summary>
public sealed class SlowSubscriberTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task Watch_OneSubscriberStopsReading_OthersOnTheSameConnectionKeepApplyingAndItIsResetTooSlow()
    {
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(3));
        await using var replica = await ControlPlaneReplica.StartAsync(cluster.Directory, "a");
        Assert.True(await replica.WaitAsync(r => r.Registry.IsSynced, Wait));

        // One connection for both streams (no second HTTP/2 connection), so a blocked stream could only hurt the other through
        // head-of-line blocking in the server.
        using var invoker = new HttpMessageInvoker(new SocketsHttpHandler { UseProxy = false, EnableMultipleHttp2Connections = false });
        await using var stalled = await GrpcClient.StartServerStreamingAsync(
            invoker, replica.GrpcUrl, GrpcProtocol.WatchPath, new WatchRequest { Service = "sharded-svc", Pod = "stalled", PingIntervalMs = 250 },
            ShardMapUpdate.Parser, deadline: null, GrpcProtocol.DefaultMaxMessageBytes, CancellationToken.None);
        await using var healthy = new AssignmentsWatcher(
            new AssignmentsWatcherOptions
            {
                ControlPlaneUrls = [replica.GrpcUrl],
                Service = "sharded-svc",
                SubscriberName = "healthy",
                PingInterval = TimeSpan.FromMilliseconds(300),
                IdleTimeout = TimeSpan.FromSeconds(5),
                ConnectTimeout = TimeSpan.FromSeconds(5),
            },
            invoker);
        healthy.Start();
        Assert.True(await healthy.Store.WaitForGenerationAsync(1, Wait, CancellationToken.None));

        // Snapshots only (the table size changes each time, ~68 KB at M=65537 and 65521): more than the stalled stream's 64 KB
        // window plus Kestrel's 64 KB response buffer, so its flush blocks.
        var sizes = new[] { 65521, 65537, 65521, 65537 };
        foreach (var size in sizes)
        {
            var generation = replica.Registry.All.Single().Map.Generation;
            cluster.Write(TempCluster.Yaml(3, tableSize: size));
            Assert.True(await replica.WaitAsync(r => r.Registry.All.Single().Map.Generation > generation, Wait));
            var published = replica.Registry.All.Single().Map;
            Assert.True(await healthy.Store.WaitForGenerationAsync(published.Generation, Wait, CancellationToken.None));
            Assert.Equal(published.Checksum, healthy.Store.Current!.Checksum);
        }

        using var http = new HttpClient { BaseAddress = replica.HttpUrl };
        var reset = false;
        for (var attempt = 0; attempt < 200 && !reset; attempt++)
        {
            var metrics = await http.GetStringAsync(new Uri("/metrics", UriKind.Relative));
            reset = metrics.Split('\n').Any(l => l.StartsWith("sharding_controlplane_stream_resets", StringComparison.Ordinal) && l.Contains("reason=\"too_slow\"", StringComparison.Ordinal));
            if (!reset)
            {
                await Task.Delay(100);
            }
        }

        Assert.True(reset, "the stalled stream was never reset as too slow");

        // The stalled subscriber reads what was buffered, then the reset: ENHANCE_YOUR_CALM (0xb), i.e. gRPC RESOURCE_EXHAUSTED.
        var error = await Assert.ThrowsAnyAsync<Exception>(async () =>
        {
            for (var i = 0; i < 1000 && await stalled.ReadAsync(CancellationToken.None) is not null; i++)
            {
            }
        });
        var protocol = FindProtocolError(error);
        Assert.NotNull(protocol);
        Assert.Equal(0xb, protocol.ErrorCode);

        // The healthy subscriber never noticed.
        Assert.True(healthy.Status.Connected);
        Assert.Equal(0, healthy.Status.Reconnects);
    }

    private static HttpProtocolException? FindProtocolError(Exception? error)
    {
        for (var depth = 0; depth < 10 && error is not null; depth++)
        {
            if (error is HttpProtocolException protocol)
            {
                return protocol;
            }

            error = error.InnerException;
        }

        return null;
    }
}

using System.Diagnostics;
using System.Net;
using Sharding.Sidecar.Tests.Infrastructure;
using Sharding.Sidecar.Tests.Routing;

namespace Sharding.Sidecar.Tests.Forwarding;

/// <summary>
/// 100 MB each way through a forward with the managed heap bounded. The heap is the whole process's, so this runs in a
/// collection of its own that xUnit runs alone: beside other collections, their garbage counted too (151 MB once in CI).
/// </summary>
[Collection(Name)]
public sealed class BoundedMemoryTests(ClusterFixture fixture)
{
    public const string Name = "bounded-memory";

    private Cluster Cluster => fixture.Cluster;

    private (string Key, TestSidecar Entry) Forwarded()
    {
        for (var i = 0; ; i++)
        {
            var key = $"stream-{i}";
            if (Cluster.OwnerOf(key) == "pod-2")
            {
                return (key, Cluster.Sidecars[0]);
            }
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task HundredMegabytes_UpAndDown_WithBoundedMemory(bool http2)
    {
        const long Size = 100L * 1024 * 1024;
        var (key, entry) = Forwarded();
        using var client = Cluster.Client(http2);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var baseline = GC.GetTotalMemory(forceFullCollection: true);
        long peak = 0;
        using var stop = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                peak = Math.Max(peak, GC.GetTotalMemory(false));
                try
                {
                    await Task.Delay(5, stop.Token);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        });
        var watch = Stopwatch.StartNew();

        using (var upload = Cluster.Request(HttpMethod.Post, $"http://127.0.0.1:{entry.Port}/upload", http2))
        {
            upload.Headers.Add("x-shard-key", key);
            upload.Content = new StreamingForwardTests.GeneratedContent(Size);
            using var response = await client.SendAsync(upload);
            var body = await response.Content.ReadAsStringAsync();
            Assert.True(response.IsSuccessStatusCode, body);
            Assert.Equal("pod-2", body.Split('|')[0]);
            Assert.Equal(Size.ToString(System.Globalization.CultureInfo.InvariantCulture), body.Split('|')[3]);
        }

        using (var download = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{entry.Port}/download?size={Size}", http2))
        {
            download.Headers.Add("x-shard-key", key);
            using var response = await client.SendAsync(download, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var stream = await response.Content.ReadAsStreamAsync();
            var buffer = new byte[64 * 1024];
            long total = 0;
            int read;
            while ((read = await stream.ReadAsync(buffer)) > 0)
            {
                total += read;
            }

            Assert.Equal(Size, total);
        }

        await stop.CancelAsync();
        await sampler;

        // 200 MB crossed two sidecars (and the client and app, all in this process); whole-body buffering anywhere would
        // show ≥ 100 MB. Pooled 64 KiB buffers and HTTP/2 windows stay far below 48 MB.
        var growth = peak - baseline;
        Assert.True(growth < 48L * 1024 * 1024, $"managed heap grew by {growth / (1024 * 1024)} MB while moving 200 MB in {watch.Elapsed}");
    }
}

[CollectionDefinition(BoundedMemoryTests.Name, DisableParallelization = true)]
public sealed class BoundedMemoryGroup : ICollectionFixture<ClusterFixture>
{
}

using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Sharding.Sidecar.Tests.Infrastructure;
using Sharding.Testing;
using Xunit.Abstractions;

namespace Sharding.Sidecar.Tests.Draining;

/// <summary>Drain tests start their own clusters with hundreds of streams: one at a time and not beside other tests (2 cores;
/// the forwarding tests measure the process's heap).</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class DrainGroup
{
    public const string Name = "drain";
}

/// <summary>
/// Ownership changes with real clients: 200 watch streams (gRPC through Python grpcio; SSE through HttpClient and WebSockets
/// through ClientWebSocket, each over HTTP/1.1 and HTTP/2) over four sidecars; membership grows 3 → 4 and shrinks back to 3.
/// </summary>
[Collection(DrainGroup.Name)]
public sealed class DrainTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Limit = DrainCluster.Grace + TimeSpan.FromSeconds(1);

    [RequiresPythonFact("python3-grpcio", "grpc")]
    public async Task MembershipGrowsAndShrinks_MovedStreamsEndWithinGrace_OthersStayOpen()
    {
        await using var cluster = await DrainCluster.StartAsync();
        using var client = WatchClients.CreateClient();
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        var kinds = new[] { "grpc", "sse", "ws" };
        var watches = Enumerable.Range(0, 200)
            .Select(i => new Watch(i, kinds[i % 3], $"doc-{i}", cluster.Sidecars[i % cluster.Sidecars.Count].Port))
            .ToList();

        // gRPC streams through grpcio; the others through .NET clients.
        var python = StartPython(watches.Where(w => w.Kind == "grpc").ToList());
        var tasks = watches.Where(w => w.Kind != "grpc").Select(w => WatchClients.RunAsync(w, client, http2: w.Id % 2 == 0, stop.Token)).ToList();
        foreach (var watch in watches)
        {
            Assert.Equal(cluster.OwnerOf(watch.Key), await watch.FirstPod.WaitAsync(TimeSpan.FromSeconds(20)));
        }

        await AssertOwnershipApiAsync(cluster);
        var open = watches;
        foreach (var (members, generation) in new[] { (4, 20L), (3, 30L) })
        {
            var before = open.ToDictionary(w => w, w => cluster.OwnerOf(w.Key));
            var changedAt = await cluster.ChangeMembersAsync(members, generation);
            var moved = open.Where(w => cluster.OwnerOf(w.Key) != before[w]).ToList();
            var stayed = open.Except(moved).ToList();
            Assert.NotEmpty(moved);
            Assert.NotEmpty(stayed);

            // Every moved stream ends within grace + 1 s, the way its protocol understands.
            var deadline = changedAt + (long)(Limit.TotalSeconds * Stopwatch.Frequency);
            while (moved.Any(w => w.IsOpen) && Stopwatch.GetTimestamp() < deadline)
            {
                await Task.Delay(20);
            }

            var late = moved.Where(w => w.IsOpen).ToList();
            Assert.True(late.Count == 0, $"{late.Count} moved streams still open {Limit} after generation {generation}: {string.Join(", ", late.Take(5))}");
            var slowest = moved.Max(w => Stopwatch.GetElapsedTime(changedAt, w.EndedAt));
            output.WriteLine($"generation {generation}: {moved.Count} moved, {stayed.Count} stayed; the last moved stream ended {slowest.TotalMilliseconds:F0} ms after the map (grace {DrainCluster.Grace.TotalMilliseconds} ms)");
            foreach (var watch in moved)
            {
                var expected = watch.Kind switch
                {
                    "grpc" when watch.Id < 1000 => "UNAVAILABLE",
                    "grpc" => "grpc 14",
                    "sse" => "eof",
                    _ => "close 1012",
                };
                Assert.True(watch.EndStatus!.StartsWith(expected, StringComparison.Ordinal), $"{watch} ended with '{watch.EndStatus}', expected '{expected}'");
            }

            // Streams whose key did not move are still open, still served by their owner.
            var closed = stayed.Where(w => !w.IsOpen).ToList();
            Assert.True(closed.Count == 0, $"{closed.Count} streams whose key did not move were ended: {string.Join(", ", closed.Take(5).Select(w => $"{w} ({w.EndStatus})"))}");
            await Task.Delay(300);
            Assert.All(stayed, w => Assert.Equal(cluster.OwnerOf(w.Key), w.LastPod));

            await AssertOwnershipApiAsync(cluster);

            // Reopened through any sidecar (.NET clients, gRPC included), each lands on the key's new owner.
            var reopened = moved.Select(w => new Watch(w.Id + 1000, w.Kind, w.Key, cluster.Sidecars[(w.Id + (int)generation) % cluster.Sidecars.Count].Port)).ToList();
            tasks.AddRange(reopened.Select(w => WatchClients.RunAsync(w, client, http2: w.Id % 2 == 1, stop.Token)));
            foreach (var watch in reopened)
            {
                Assert.Equal(cluster.OwnerOf(watch.Key), await watch.FirstPod.WaitAsync(TimeSpan.FromSeconds(10)));
            }

            open = stayed.Concat(reopened).ToList();
        }

        var metrics = await client.GetStringAsync($"http://127.0.0.1:{cluster.Sidecars[0].AdminPort}/metrics");
        Assert.Contains("sharding_sidecar_streams_drained_total{", metrics, StringComparison.Ordinal);
        Assert.Contains("sharding_sidecar_goaways_sent_total", metrics, StringComparison.Ordinal);
        Assert.Contains("sharding_sidecar_drain_duration_seconds_bucket", metrics, StringComparison.Ordinal);
        Assert.Contains("sharding_sidecar_streams_tracked{", metrics, StringComparison.Ordinal);

        await stop.CancelAsync();
        python.StandardInput.Close();
        // Teardown only (the assertions are above): generous, because CI runs other test projects on the same 2 cores.
        await python.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
        await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(30));
    }

    /// <summary>Every sidecar's ownership API agrees with ShardMap.OwnerOf for 10,000 keys.</summary>
    private static async Task AssertOwnershipApiAsync(DrainCluster cluster)
    {
        using var client = new HttpClient();
        var keys = Enumerable.Range(0, 10_000).Select(i => $"acct-{i}").ToArray();
        foreach (var sidecar in cluster.Sidecars)
        {
            using var response = await client.PostAsJsonAsync($"http://127.0.0.1:{sidecar.AdminPort}/v1/ownership/check", keys);
            response.EnsureSuccessStatusCode();
            using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            var root = json.RootElement;
            Assert.Equal(cluster.Expected.Generation, root.GetProperty("generation").GetInt64());
            var owned = root.GetProperty("owned").EnumerateArray().Select(e => e.GetString()!).ToHashSet();
            var others = root.GetProperty("others").EnumerateArray().ToDictionary(e => e.GetProperty("key").GetString()!, e => e.GetProperty("owner").GetString()!);
            Assert.Equal(keys.Length, owned.Count + others.Count);
            foreach (var key in keys)
            {
                var expected = cluster.OwnerOf(key);
                Assert.Equal(expected, owned.Contains(key) ? sidecar.PodName : others[key]);
            }
        }
    }

    private Process StartPython(List<Watch> watches)
    {
        var script = Path.Combine(AppContext.BaseDirectory, "Draining", "grpc_watch.py");
        var process = Process.Start(new ProcessStartInfo(ExternalTool.Python, [script])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        })!;
        var byId = watches.ToDictionary(w => w.Id);
        process.OutputDataReceived += (_, e) =>
        {
            var parts = e.Data?.Split(' ', 4);
            if (parts is null || parts.Length < 3 || !byId.TryGetValue(int.Parse(parts[1], CultureInfo.InvariantCulture), out var watch))
            {
                return;
            }

            if (parts[0] == "first")
            {
                watch.Served(parts[2]);
            }
            else if (parts[0] == "end")
            {
                watch.Ended(parts[2] + " " + (parts.Length > 3 ? parts[3] : string.Empty));
            }
        };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                output.WriteLine("python: " + e.Data);
            }
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var spec = new StringBuilder("[");
        spec.AppendJoin(',', watches.Select(w => $"[{w.Id},{w.Port},\"{w.Key}\"]")).Append("]\n");
        process.StandardInput.Write(spec.ToString());
        process.StandardInput.Flush();
        return process;
    }
}

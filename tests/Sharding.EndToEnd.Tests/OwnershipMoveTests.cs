using System.Text.Json;
using Sharding.Cli.Demo;
using Sharding.Mapping;
using Sharding.Testing;

namespace Sharding.EndToEnd.Tests;

/// <summary>
/// Real processes (control planes, sidecars, sample apps) through a scale-out and a scale-in with watch streams and load:
/// afterwards every record the apps kept of what they served (key, time) is checked against the map in force at that time.
/// </summary>
public sealed class OwnershipMoveTests
{
    private static readonly TimeSpan Grace = TimeSpan.FromSeconds(1);

    [Fact]
    public async Task ScaleOutAndIn_NoKeyServedByANonOwnerBeyondGracePlusOneSecond()
    {
        using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        var work = Directory.CreateTempSubdirectory("sharding-ownership-test-").FullName;
        var cluster = new LocalCluster(ComponentPaths.Locate(), work) { SidecarDrainGrace = Grace };
        var epochs = new List<(DateTimeOffset From, DateTimeOffset Settled, ShardMap Map)>();
        var served = new List<(string Pod, string Key, DateTimeOffset At)>();
        long streamsEnded, reopenedOnOwner, misroutes = 0;
        try
        {
            await cluster.StartAsync(1, 3, cancel.Token);
            var now = TimeProvider.System.GetUtcNow();
            epochs.Add((DateTimeOffset.MinValue, now, cluster.ExpectedMap()));
            await using (var load = new LoadGenerator(cluster, keySpace: 300))
            await using (var watchers = new StreamWatchers(cluster, 60))
            {
                load.Start(4);
                watchers.Start();
                await Task.Delay(TimeSpan.FromSeconds(3), cancel.Token);

                var generation = (await cluster.SidecarGenerationsAsync(cancel.Token)).Values.Max();
                var from = TimeProvider.System.GetUtcNow();
                await cluster.AddPodAsync(cancel.Token);
                generation = await cluster.WaitForNewGenerationAsync(generation, TimeSpan.FromSeconds(30), cancel.Token);
                epochs.Add((from, TimeProvider.System.GetUtcNow(), cluster.ExpectedMap()));
                await Task.Delay(TimeSpan.FromSeconds(5), cancel.Token);

                from = TimeProvider.System.GetUtcNow();
                var removed = await cluster.RemoveLastMemberAsync(cancel.Token);
                await cluster.WaitForNewGenerationAsync(generation, TimeSpan.FromSeconds(30), cancel.Token);
                epochs.Add((from, TimeProvider.System.GetUtcNow(), cluster.ExpectedMap()));
                removed.AcceptsLoad = false;
                await Task.Delay(TimeSpan.FromSeconds(5), cancel.Token);

                streamsEnded = watchers.Ended;
                reopenedOnOwner = watchers.ReopenedOnOwner;
                Assert.True(load.Failed == 0 && load.Mismatched == 0,
                    $"{load.Failed} failed, {load.Mismatched} mismatched:\n" + string.Join('\n', load.FailureSamples));
            }

            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
            foreach (var pod in cluster.Pods)
            {
                using var records = JsonDocument.Parse(await http.GetStringAsync(new Uri(pod.AppUrl + "/served"), cancel.Token));
                foreach (var record in records.RootElement.EnumerateArray())
                {
                    served.Add((pod.Name, record.GetProperty("key").GetString()!, DateTimeOffset.FromUnixTimeMilliseconds(record.GetProperty("atUnixMs").GetInt64())));
                }

                using var stats = JsonDocument.Parse(await http.GetStringAsync(new Uri(pod.AppUrl + "/stats"), cancel.Token));
                misroutes += stats.RootElement.GetProperty("misroutes").GetInt64();
            }
        }
        finally
        {
            await cluster.DisposeAsync();
        }

        // Every record must come from the owner under the map in force, except within grace + 1 s after a change settled
        // (the old owner's streams are being drained) — and during the propagation itself, when either owner is fine.
        var violations = new List<string>();
        foreach (var (pod, key, at) in served)
        {
            var current = epochs.FindLastIndex(e => e.From <= at);
            var owner = epochs[current].Map.OwnerOf(key)!.Name;
            if (pod == owner)
            {
                continue;
            }

            var previousOwner = current > 0 ? epochs[current - 1].Map.OwnerOf(key)!.Name : null;
            var allowedUntil = epochs[current].Settled + Grace + TimeSpan.FromSeconds(1);
            if (pod == previousOwner && at <= allowedUntil)
            {
                continue;
            }

            violations.Add($"{key} served by {pod} at {at:HH:mm:ss.fff}; owner {owner} since {epochs[current].From:HH:mm:ss.fff} (settled {epochs[current].Settled:HH:mm:ss.fff})");
        }

        Assert.True(served.Count > 500, $"only {served.Count} served records");
        Assert.True(violations.Count == 0, $"{violations.Count} of {served.Count} records served by a non-owner:\n" + string.Join('\n', violations.Take(20)));
        Assert.Equal(0, misroutes);
        Assert.True(streamsEnded > 0, "no watch stream was drained although keys moved");
        Assert.True(reopenedOnOwner > 0, "no drained stream reopened on its new owner");
    }
}

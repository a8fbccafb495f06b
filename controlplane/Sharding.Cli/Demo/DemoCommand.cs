using System.Diagnostics;
using System.Globalization;
using System.Text;
using Sharding.Hashing;

namespace Sharding.Cli.Demo;

/// <summary>
/// <c>shardctl demo</c>: a whole local cluster on 127.0.0.1 — two control-plane replicas, N sample apps each behind its sidecar —
/// under load, through a scale-out, a leader failover and a scale-in, ending with a summary and exit code 0 only when no request
/// failed and no request was served by a pod that does not own its key.
/// </summary>
/// <remarks>
/// Phases: 1 start and steady load; 2 add a pod (keys moved vs the ideal 1/(N+1), streams drained); 3 kill the leader (SIGKILL;
/// time until the other replica leads, load keeps flowing); 4 remove the pod again (published by the new leader).
/// </remarks>
internal static class DemoCommand
{
    public static int Run(CommandLine line, TextWriter stdout)
    {
        var pods = (int)line.Int64("pods", 3, 2, 12);
        var duration = line.Duration("duration", TimeSpan.FromSeconds(60));
        var workers = (int)line.Int64("workers", 4, 1, 64);
        var streams = (int)line.Int64("streams", 30, 0, 1000);
        var keep = line.HasFlag("keep");
        var work = line.Single("work-dir") ?? Path.Combine(Path.GetTempPath(), "sharding-demo-" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture));

        using var cancel = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            e.Cancel = true;
            stdout.WriteLine("demo: Ctrl-C, stopping every process it started…");
            cancel.Cancel();
        };
        Console.CancelKeyPress += onCancel;
        try
        {
            return RunAsync(new DemoSettings(pods, duration, workers, streams, keep, work), stdout, cancel.Token).GetAwaiter().GetResult();
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    private sealed record DemoSettings(int Pods, TimeSpan Duration, int Workers, int Streams, bool Keep, string WorkDirectory);

    private static async Task<int> RunAsync(DemoSettings settings, TextWriter stdout, CancellationToken cancellationToken)
    {
        var paths = ComponentPaths.Locate();
        var phase = settings.Duration / 4;
        var summary = new DemoSummary();
        var cluster = new LocalCluster(paths, settings.WorkDirectory);
        LoadGenerator? load = null;
        StreamWatchers? watchers = null;
        var clock = Stopwatch.StartNew();
        void Say(string text) => stdout.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{clock.Elapsed.TotalSeconds,6:F1}s] {text}"));

        try
        {
            Say($"starting 2 control planes and {settings.Pods} pods (sample app + sidecar) on 127.0.0.1; logs in {settings.WorkDirectory}");
            await cluster.StartAsync(2, settings.Pods, cancellationToken).ConfigureAwait(false);
            var leader = await WaitForLeaderAsync(cluster, null, TimeSpan.FromSeconds(30), cancellationToken).ConfigureAwait(false);
            var generations = await cluster.SidecarGenerationsAsync(cancellationToken).ConfigureAwait(false);
            Say($"ready: leader {leader.Name}; sidecars at generation {FormatGenerations(generations)}");

            load = new LoadGenerator(cluster, keySpace: 2000);
            load.Start(settings.Workers);
            watchers = new StreamWatchers(cluster, settings.Streams);
            watchers.Start();

            // Phase 1: steady state.
            await ShowAsync(cluster, load, watchers, "steady", phase, Say, cancellationToken).ConfigureAwait(false);

            // Phase 2: scale out by one pod.
            var before = cluster.ExpectedMap();
            // Owners seen before the change; after it, only keys requested again count (LastOwner starts over).
            var observedBefore = new Dictionary<string, string>(load.LastOwner, StringComparer.Ordinal);
            load.LastOwner.Clear();
            var generationBefore = (await cluster.SidecarGenerationsAsync(cancellationToken).ConfigureAwait(false)).Values.Max();
            var endedBefore = watchers.Ended;
            Say($"scale out: {cluster.Members.Count} -> {cluster.Members.Count + 1} pods");
            var added = await cluster.AddPodAsync(cancellationToken).ConfigureAwait(false);
            var scaleOutClock = Stopwatch.StartNew();
            var newGeneration = await cluster.WaitForNewGenerationAsync(generationBefore, TimeSpan.FromSeconds(30), cancellationToken).ConfigureAwait(false);
            var after = cluster.ExpectedMap();
            summary.MovedShare = MovedShare(before, after, 100_000);
            summary.IdealShare = 1.0 / cluster.Members.Count;
            var movedStreams = watchers.Keys.Count(k => !string.Equals(before.OwnerOf(k)?.Name, after.OwnerOf(k)?.Name, StringComparison.Ordinal));
            Say(string.Create(CultureInfo.InvariantCulture,
                $"{added.Name} joined: generation {newGeneration} on every sidecar after {scaleOutClock.ElapsedMilliseconds} ms; keys moved {summary.MovedShare:P2} (ideal {summary.IdealShare:P2}); {movedStreams} of {watchers.Keys.Length} watch streams have a new owner"));
            await ShowAsync(cluster, load, watchers, "scaled-out", phase, Say, cancellationToken).ConfigureAwait(false);
            summary.ObservedMovedShare = ObservedMovedShare(observedBefore, load.LastOwner);
            summary.StreamsMovedOnScaleOut = movedStreams;
            summary.StreamsEndedOnScaleOut = watchers.Ended - endedBefore;

            // Phase 3: kill the leader.
            leader = await WaitForLeaderAsync(cluster, null, TimeSpan.FromSeconds(10), cancellationToken).ConfigureAwait(false);
            Say($"killing the leader {leader.Name} (SIGKILL)");
            var failedBeforeFailover = load.Failed;
            var failoverClock = Stopwatch.StartNew();
            leader.Process!.Kill();
            var newLeader = await WaitForLeaderAsync(cluster, leader, TimeSpan.FromSeconds(30), cancellationToken).ConfigureAwait(false);
            summary.FailoverSeconds = failoverClock.Elapsed.TotalSeconds;
            Say(string.Create(CultureInfo.InvariantCulture, $"{newLeader.Name} leads after {summary.FailoverSeconds:F2} s; restarting {leader.Name} as a follower"));
            cluster.StartControlPlane(leader);
            await ShowAsync(cluster, load, watchers, "failed-over", phase, Say, cancellationToken).ConfigureAwait(false);
            summary.FailedDuringFailover = load.Failed - failedBeforeFailover;

            // Phase 4: scale back in; the new leader publishes it.
            generationBefore = (await cluster.SidecarGenerationsAsync(cancellationToken).ConfigureAwait(false)).Values.Max();
            Say($"scale in: {cluster.Members.Count} -> {cluster.Members.Count - 1} pods");
            var removed = await cluster.RemoveLastMemberAsync(cancellationToken).ConfigureAwait(false);
            newGeneration = await cluster.WaitForNewGenerationAsync(generationBefore, TimeSpan.FromSeconds(30), cancellationToken).ConfigureAwait(false);
            summary.GenerationsGrewAcrossFailover = newGeneration > generationBefore;
            removed.AcceptsLoad = false;
            await Task.Delay(500, cancellationToken).ConfigureAwait(false);
            summary.Absorb(await ReadAppStatsAsync(cluster, removed, cancellationToken).ConfigureAwait(false));
            await LocalCluster.StopPodAsync(removed).ConfigureAwait(false);
            Say($"{removed.Name} left at generation {newGeneration} and stopped");
            await ShowAsync(cluster, load, watchers, "scaled-in", phase, Say, cancellationToken).ConfigureAwait(false);

            await watchers.DisposeAsync().ConfigureAwait(false);
            summary.StreamsEnded = watchers.Ended;
            summary.StreamsReopenedOnOwner = watchers.ReopenedOnOwner;
            summary.StreamsReopenedElsewhere = watchers.ReopenedElsewhere;
            watchers = null;
            await load.DisposeAsync().ConfigureAwait(false);
            foreach (var pod in cluster.Members)
            {
                summary.Absorb(await ReadAppStatsAsync(cluster, pod, cancellationToken).ConfigureAwait(false));
            }

            summary.Requests = load.Ok + load.Failed;
            summary.Failed = load.Failed;
            summary.Retried = load.Retried;
            summary.Mismatched = load.Mismatched;
            summary.ServedBy = new Dictionary<string, long>(load.ServedBy, StringComparer.Ordinal);
            summary.FailureSamples = load.FailureSamples;
            load = null;

            if (settings.Keep)
            {
                PrintKeep(cluster, stdout);
                try
                {
                    await Task.Delay(Timeout.Infinite, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                }
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            summary.Interrupted = true;
        }
        catch (Exception ex) when (ex is TimeoutException or InvalidOperationException or HttpRequestException)
        {
            summary.Error = ex.Message;
            Say("demo failed: " + ex.Message);
        }
        finally
        {
            if (watchers is not null)
            {
                await watchers.DisposeAsync().ConfigureAwait(false);
            }

            if (load is not null)
            {
                await load.DisposeAsync().ConfigureAwait(false);
            }

            Say("stopping every process the demo started");
            await cluster.DisposeAsync().ConfigureAwait(false);
            summary.ProcessesStarted = cluster.StartedProcesses.Count;
            summary.ProcessesExited = cluster.StartedProcesses.Count(p => p.HasExited);
            summary.ProcessIds = [.. cluster.StartedProcesses.Select(p => p.Id)];
        }

        summary.Print(stdout);
        return summary.Passed ? ShardCtl.ExitOk : ShardCtl.ExitFailure;
    }

    private static async Task ShowAsync(LocalCluster cluster, LoadGenerator load, StreamWatchers watchers, string phase, TimeSpan length, Action<string> say, CancellationToken cancellationToken)
    {
        var phaseClock = Stopwatch.StartNew();
        var lastOk = load.Ok;
        var tick = Stopwatch.StartNew();
        while (phaseClock.Elapsed < length)
        {
            await Task.Delay(TimeSpan.FromSeconds(Math.Min(1, Math.Max(0.05, (length - phaseClock.Elapsed).TotalSeconds))), cancellationToken).ConfigureAwait(false);
            var ok = load.Ok;
            var rate = (ok - lastOk) / Math.Max(0.001, tick.Elapsed.TotalSeconds);
            lastOk = ok;
            tick.Restart();
            double local = 0, forwarded = 0;
            foreach (var pod in cluster.Members)
            {
                var outcomes = await cluster.ScrapeAllAsync(pod.AdminUrl, "sharding_sidecar_requests_total", cancellationToken).ConfigureAwait(false);
                local += outcomes.Where(o => o.Key.Contains("outcome=\"local\"", StringComparison.Ordinal)).Sum(o => o.Value);
                forwarded += outcomes.Where(o => o.Key.Contains("outcome=\"forwarded\"", StringComparison.Ordinal)).Sum(o => o.Value);
            }

            var generations = await cluster.SidecarGenerationsAsync(cancellationToken).ConfigureAwait(false);
            var served = string.Join(' ', load.ServedBy.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key}={p.Value}"));
            var total = Math.Max(1, local + forwarded);
            say(string.Create(CultureInfo.InvariantCulture,
                $"{phase,-11} {rate,6:F0} req/s  ok {ok}  failed {load.Failed}  retried {load.Retried} | served {served} | sidecar hops: local {local / total:P0} forwarded {forwarded / total:P0} | generation {FormatGenerations(generations)} | streams open {watchers.Open} ended {watchers.Ended}"));
        }
    }

    private static async Task<DemoControlPlane> WaitForLeaderAsync(LocalCluster cluster, DemoControlPlane? notThis, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            var leader = await cluster.FindLeaderAsync(cancellationToken).ConfigureAwait(false);
            if (leader is not null && !ReferenceEquals(leader, notThis))
            {
                return leader;
            }

            await Task.Delay(25, cancellationToken).ConfigureAwait(false);
        }

        throw new TimeoutException($"no control-plane replica became leader within {timeout.TotalSeconds:F0} s");
    }

    private static async Task<AppStats?> ReadAppStatsAsync(LocalCluster cluster, DemoPod pod, CancellationToken cancellationToken)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        try
        {
            var text = await http.GetStringAsync(new Uri(pod.AppUrl + "/stats"), cancellationToken).ConfigureAwait(false);
            using var json = System.Text.Json.JsonDocument.Parse(text);
            var root = json.RootElement;
            return new AppStats(pod.Name, root.GetProperty("verified").GetInt64(), root.GetProperty("misroutes").GetInt64(), root.GetProperty("unverified").GetInt64());
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or System.Text.Json.JsonException or KeyNotFoundException)
        {
            _ = cluster;
            return null;
        }
    }

    private static double MovedShare(Mapping.ShardMap before, Mapping.ShardMap after, int keys)
    {
        var moved = 0;
        for (var i = 0; i < keys; i++)
        {
            var hash = XxHash64.HashUtf8("key-" + i.ToString(CultureInfo.InvariantCulture));
            if (!string.Equals(before.OwnerOf(hash)?.Name, after.OwnerOf(hash)?.Name, StringComparison.Ordinal))
            {
                moved++;
            }
        }

        return (double)moved / keys;
    }

    private static double ObservedMovedShare(Dictionary<string, string> before, System.Collections.Concurrent.ConcurrentDictionary<string, string> after)
    {
        int seen = 0, moved = 0;
        foreach (var (key, owner) in before)
        {
            if (after.TryGetValue(key, out var now))
            {
                seen++;
                moved += string.Equals(owner, now, StringComparison.Ordinal) ? 0 : 1;
            }
        }

        return seen == 0 ? double.NaN : (double)moved / seen;
    }

    private static string FormatGenerations(Dictionary<string, long> generations) =>
        string.Join(' ', generations.OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => $"{g.Key}={g.Value}"));

    private static void PrintKeep(LocalCluster cluster, TextWriter stdout)
    {
        var text = new StringBuilder();
        text.Append("\nThe cluster keeps running (--keep); Ctrl-C stops it. Try:\n");
        var pod = cluster.Members[0];
        text.Append(CultureInfo.InvariantCulture, $"  curl -si -X POST -H 'x-shard-key: account-42' {pod.SidecarUrl}/counter\n");
        text.Append(CultureInfo.InvariantCulture, $"  curl -s --http2-prior-knowledge -H 'x-shard-key: account-42' {pod.SidecarUrl}/counter\n");
        text.Append(CultureInfo.InvariantCulture, $"  curl -sN -H 'x-shard-key: account-42' {pod.SidecarUrl}/watch\n");
        text.Append(CultureInfo.InvariantCulture, $"  curl -s {pod.AdminUrl}/metrics | grep sharding_\n");
        foreach (var cp in cluster.ControlPlanes)
        {
            text.Append(CultureInfo.InvariantCulture, $"  curl -s '{cp.HttpUrl}/v1/lookup?service={LocalCluster.Service}&key=account-42'   # {cp.Name}\n");
        }

        text.Append(CultureInfo.InvariantCulture, $"  membership file (edit it to scale): {cluster.MembershipFile}\n");
        stdout.Write(text.ToString());
    }
}

internal sealed record AppStats(string Pod, long Verified, long Misroutes, long Unverified);

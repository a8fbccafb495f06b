using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using Sharding.Mapping;
using Sharding.Sidecar.Draining;
using Sharding.Sidecar.Tests.Infrastructure;
using Sharding.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace Sharding.Sidecar.Tests.Draining;

/// <summary>Issue 6: the max-connection-age backstop (GOAWAY after age + jitter, streams ended after the grace, younger
/// connections untouched) and a moved long poll answered 503 + Retry-After.</summary>
[Collection(DrainGroup.Name)]
public sealed partial class MaxAgeAndLongPollTests
{
    private static readonly TimeSpan MaxAge = TimeSpan.FromSeconds(4);
    private const double Jitter = 0.1;

    [RequiresToolFact("nghttp", "nghttp2-client")]
    public async Task MaxConnectionAge_OldConnectionGetsGoAwayAndItsStreamEndsAfterGrace_YoungerConnectionUntouched()
    {
        await using var cluster = await DrainCluster.StartAsync(size: 3, members: 3, new Dictionary<string, string?>
        {
            ["Sidecar:MaxConnectionAge"] = MaxAge.ToString(),
            ["Sidecar:MaxConnectionAgeJitter"] = Jitter.ToString(CultureInfo.InvariantCulture),
        });
        var sidecar = cluster.Sidecars[0];
        var key = Enumerable.Range(0, 1000).Select(i => $"age-{i}").First(k => cluster.OwnerOf(k) == "pod-0");

        // The old connection: an SSE stream over h2c, every frame logged by nghttp with its time since connect.
        using var nghttp = NghttpSseStream.Open(sidecar.Port, key);
        using var client = WatchClients.CreateClient();
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        Watch? young = null;
        Task? youngTask = null;
        try
        {
            await nghttp.FirstData.WaitAsync(TimeSpan.FromSeconds(10));
            var oldOpened = Stopwatch.GetTimestamp();

            // A younger connection, opened well after the old one: it reaches its own age long after the old one ended.
            await Task.Delay(MaxAge - TimeSpan.FromSeconds(1));
            young = new Watch(2, "sse", key, sidecar.Port);
            youngTask = WatchClients.RunAsync(young, client, http2: true, stop.Token);
            Assert.Equal("pod-0", await young.FirstPod.WaitAsync(TimeSpan.FromSeconds(5)));

            // Bound: age + jitter, the half-threshold sweep, the grace, and slack for a loaded machine.
            await nghttp.Process.WaitForExitAsync().WaitAsync(MaxAge * (1 + Jitter) + DrainCluster.Grace + TimeSpan.FromSeconds(4));
            var oldEnded = Stopwatch.GetElapsedTime(oldOpened);
            Assert.True(young.IsOpen, $"the younger connection's stream ended ({young.EndStatus}) when the old one reached its age");
            var servedBefore = young.LastPod;
            await Task.Delay(300);
            Assert.True(young.IsOpen, "the younger connection's stream ended shortly after the old one");
            Assert.Equal("pod-0", servedBefore);
            Assert.True(oldEnded < MaxAge * (1 + Jitter) + DrainCluster.Grace + TimeSpan.FromSeconds(2), $"the old stream ended {oldEnded} after it opened");
        }
        finally
        {
            nghttp.Dispose();
            await stop.CancelAsync();
            if (youngTask is not null)
            {
                await youngTask.WaitAsync(TimeSpan.FromSeconds(5));
            }
        }

        var text = nghttp.Output();

        // GOAWAY: graceful (NO_ERROR, last-stream-id 2^31-1), no earlier than the age, no later than age + jitter (+ slack).
        var goaway = GoAwayLine().Match(text);
        Assert.True(goaway.Success, text);
        var goawayAt = TimeSpan.FromSeconds(double.Parse(goaway.Groups["t"].Value, CultureInfo.InvariantCulture));
        var frame = text.Substring(goaway.Index, Math.Min(300, text.Length - goaway.Index));
        Assert.Contains("last_stream_id=2147483647", frame, StringComparison.Ordinal);
        Assert.Contains("NO_ERROR", frame, StringComparison.Ordinal);
        Assert.True(goawayAt >= MaxAge - TimeSpan.FromMilliseconds(50), $"GOAWAY after {goawayAt}, before the max age {MaxAge}");
        Assert.True(goawayAt <= MaxAge * (1 + Jitter) + TimeSpan.FromSeconds(1), $"GOAWAY after {goawayAt}, later than age + jitter");

        // The stream went on through the grace (data after the GOAWAY), then ended normally (END_STREAM), after about the grace.
        var end = EndStreamLine().Matches(text).LastOrDefault();
        Assert.True(end is not null && end.Index > goaway.Index, text);
        var endAt = TimeSpan.FromSeconds(double.Parse(end.Groups["t"].Value, CultureInfo.InvariantCulture));
        Assert.True(endAt - goawayAt >= DrainCluster.Grace - TimeSpan.FromMilliseconds(100), $"ended {endAt - goawayAt} after the GOAWAY, before the grace {DrainCluster.Grace}");
        Assert.True(endAt - goawayAt < DrainCluster.Grace + TimeSpan.FromSeconds(1.5), $"ended {endAt - goawayAt} after the GOAWAY");
        Assert.Contains("recv DATA frame", text[goaway.Index..], StringComparison.Ordinal);

        using var admin = new HttpClient();
        var metrics = await admin.GetStringAsync($"http://127.0.0.1:{sidecar.AdminPort}/metrics");
        Assert.Matches("sharding_sidecar_streams_drained_total\\{[^}]*reason=\"max_age\"[^}]*\\} 1", metrics);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task MovedLongPoll_WithoutResponseHeaders_IsAnswered503WithRetryAfter(bool http2)
    {
        await using var cluster = await DrainCluster.StartAsync(size: 4, members: 3);
        var before = cluster.Expected;
        var grown = ShardMap.Create("x", 1, before.Members.Add(new ShardMember("pod-3", "127.0.0.1:1")));
        var key = Enumerable.Range(0, 10_000).Select(i => $"poll-{i}")
            .First(k => before.OwnerOf(k.AsSpan())!.Name == "pod-0" && grown.OwnerOf(k.AsSpan())!.Name == "pod-3");
        var sidecar = cluster.Sidecars[0];
        var registry = sidecar.Services.GetRequiredService<StreamRegistry>();
        using var client = WatchClients.CreateClient();
        using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{sidecar.Port}/long-poll", http2);
        request.Headers.Add("x-shard-key", key);
        var pending = client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);

        // Tracked as a long poll once it is open past the stream threshold (1 s; swept every 0.5 s).
        var deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency * 5;
        while (registry.TrackedCount == 0)
        {
            Assert.True(Stopwatch.GetTimestamp() < deadline, "the long poll was never tracked");
            Assert.False(pending.IsCompleted, "the long poll was answered before any drain");
            await Task.Delay(50);
        }

        var editedAt = Stopwatch.GetTimestamp(); // the drain cannot start before the edit (the lower bound is timed from it)
        var changedAt = await cluster.ChangeMembersAsync(4, 20);
        using var response = await pending.WaitAsync(DrainCluster.Grace + TimeSpan.FromSeconds(3));
        var elapsed = Stopwatch.GetElapsedTime(changedAt);
        var sinceEdit = Stopwatch.GetElapsedTime(editedAt);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal("0", response.Headers.GetValues("Retry-After").Single());
        Assert.Equal("pod-3", response.Headers.GetValues("x-sharding-owner").Single());
        Assert.True(sinceEdit >= DrainCluster.Grace - TimeSpan.FromMilliseconds(100), $"answered {sinceEdit} after the edit, before the grace");
        Assert.True(elapsed < DrainCluster.Grace + TimeSpan.FromSeconds(1), $"answered {elapsed} after the change");

        // The client, asking again through the same sidecar, reaches the new owner.
        using var again = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{sidecar.Port}/", http2);
        again.Headers.Add("x-shard-key", key);
        using var retried = await client.SendAsync(again);
        Assert.Equal("pod-3", retried.Headers.GetValues("x-sharding-owner").Single());
    }

    [GeneratedRegex(@"\[\s*(?<t>\d+\.\d+)\] recv GOAWAY frame")]
    private static partial Regex GoAwayLine();

    [GeneratedRegex(@"\[\s*(?<t>\d+\.\d+)\] recv (?:DATA|HEADERS) frame <[^>]*>\r?\n\s*; END_STREAM")]
    private static partial Regex EndStreamLine();
}

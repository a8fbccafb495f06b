using System.Net;
using System.Text.RegularExpressions;
using Sharding.Sidecar.Tests.Infrastructure;

namespace Sharding.Sidecar.Tests.PeerLink;

/// <summary>
/// Forwards between real sidecars over peer links: every key reaches its owner through a link (and without one when the
/// option is off), a sidecar that does not serve links is reached over HTTP/1.1 connections, and an owner that goes away
/// behind an open link is answered with 503, not a hang.
/// </summary>
public sealed partial class PeerLinkClusterTests
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Forwarded_requests_reach_their_owner_over_a_link_or_over_connections(bool peerLink)
    {
        await using var cluster = await Cluster.StartAsync(
            size: 3, sidecarSettings: new Dictionary<string, string?> { ["Sidecar:PeerLink"] = peerLink ? "true" : "false" });
        await SendAndCheckOwnersAsync(cluster, sidecar: 0, count: 150, concurrency: 12);

        var opened = await MetricAsync(cluster.Sidecars[0].AdminPort, "sharding_sidecar_peer_links_opened_total{result=\"linked\"}");
        if (peerLink)
        {
            Assert.InRange(opened, 2, 2 * Environment.ProcessorCount); // one per event loop and peer, at most
            var inbound = await MetricAsync(cluster.Sidecars[1].AdminPort, "sharding_sidecar_peer_link_streams{direction=\"in\"}")
                + await MetricAsync(cluster.Sidecars[2].AdminPort, "sharding_sidecar_peer_link_streams{direction=\"in\"}");
            Assert.True(inbound > 0, "no tunnel open on the owners' side");
        }
        else
        {
            Assert.Equal(0, opened);
        }
    }

    [Fact]
    public async Task A_sidecar_that_does_not_serve_links_is_reached_over_connections()
    {
        // pod-1 has the fast path off, so its data port answers a link's preface as a plain HTTP/2 server (as an older
        // sidecar would): pod-0 falls back to HTTP/1.1 connections, and every key still reaches its owner.
        var directory = Path.Combine(Path.GetTempPath(), "sharding-sidecar-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(directory);
        await using var app0 = await EchoApp.StartAsync("pod-0");
        await using var app1 = await EchoApp.StartAsync("pod-1");
        var ports = new[] { TestSidecar.FreePort(), TestSidecar.FreePort() };
        var mapFile = Path.Combine(directory, "map.yaml");
        await File.WriteAllTextAsync(mapFile, Cluster.MapYaml(ports));
        await using var sidecar0 = await TestSidecar.StartAsync("pod-0", ports[0], app0.Port, mapFile);
        await using var sidecar1 = await TestSidecar.StartAsync("pod-1", ports[1], app1.Port, mapFile, new Dictionary<string, string?> { ["Sidecar:Http1FastPath"] = "false" });

        using var client = Cluster.Client(http2: false);
        var forwarded = 0;
        for (var i = 0; i < 60; i++)
        {
            var key = $"old-peer-{i}";
            using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{sidecar0.Port}/p", http2: false);
            request.Headers.Add("x-shard-key", key);
            using var response = await client.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var owner = sidecar0.Store.Current!.OwnerOf(key.AsSpan())!.Name;
            Assert.StartsWith(owner + "|" + key + "|", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            forwarded += owner == "pod-1" ? 1 : 0;
        }

        Assert.True(forwarded > 10, "too few keys of pod-1 to prove anything");
        Assert.True(await MetricAsync(sidecar0.AdminPort, "sharding_sidecar_peer_links_opened_total{result=\"unsupported\"}") >= 1);
        Assert.Equal(0, await MetricAsync(sidecar0.AdminPort, "sharding_sidecar_peer_links_opened_total{result=\"linked\"}"));
        Assert.True(await MetricAsync(sidecar0.AdminPort, "sharding_sidecar_fast_path_requests_total") >= forwarded, "the forwards did not stay on the fast path");
    }

    [Fact]
    public async Task An_owner_that_goes_away_behind_an_open_link_is_answered_with_503()
    {
        await using var cluster = await Cluster.StartAsync(size: 2);
        var key = Enumerable.Range(0, 1000).Select(i => $"gone-{i}").First(k => cluster.OwnerOf(k) == "pod-1");
        using var client = Cluster.Client(http2: false);

        async Task<HttpResponseMessage> SendAsync()
        {
            using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{cluster.Sidecars[0].Port}/g", http2: false);
            request.Headers.Add("x-shard-key", key);
            return await client.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(20));
        }

        using (var first = await SendAsync())
        {
            Assert.Equal(HttpStatusCode.OK, first.StatusCode);
            Assert.StartsWith("pod-1|", await first.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        Assert.True(await MetricAsync(cluster.Sidecars[0].AdminPort, "sharding_sidecar_peer_links_opened_total{result=\"linked\"}") >= 1);
        await cluster.Sidecars[1].DisposeAsync(); // GOAWAY on the link, then its connection closes

        using var after = await SendAsync();
        Assert.Equal(HttpStatusCode.ServiceUnavailable, after.StatusCode);
        Assert.True(after.Headers.RetryAfter is not null, "503 without Retry-After");
    }

    private static async Task SendAndCheckOwnersAsync(Cluster cluster, int sidecar, int count, int concurrency)
    {
        using var client = Cluster.Client(http2: false);
        var next = -1;
        var forwarded = 0;
        await Task.WhenAll(Enumerable.Range(0, concurrency).Select(async _ =>
        {
            // Bounded by count: every turn takes the next index.
            int i;
            while ((i = Interlocked.Increment(ref next)) < count)
            {
                var key = $"link-{Guid.NewGuid():N}";
                using var request = Cluster.Request(HttpMethod.Post, $"http://127.0.0.1:{cluster.Sidecars[sidecar].Port}/body", http2: false);
                request.Headers.Add("x-shard-key", key);
                request.Content = new StringContent(new string('b', i * 97)); // bodies from 0 to ~14 KB
                using var response = await client.SendAsync(request);
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                var owner = cluster.OwnerOf(key);
                var reply = await response.Content.ReadAsStringAsync();
                Assert.StartsWith($"{owner}|{key}|POST /body|{i * 97}|", reply, StringComparison.Ordinal);
                Assert.Equal(owner, response.Headers.GetValues("x-sharding-owner").Single());
                if (owner != $"pod-{sidecar}")
                {
                    Interlocked.Increment(ref forwarded);
                }
            }
        }));

        Assert.True(forwarded > count / 3, $"only {forwarded} of {count} requests were forwarded");
    }

    private static async Task<double> MetricAsync(int adminPort, string series)
    {
        using var admin = new HttpClient();
        var text = await admin.GetStringAsync($"http://127.0.0.1:{adminPort}/metrics");
        var match = Regex.Match(text, "^" + Regex.Escape(series) + " ([0-9.e+-]+)$", RegexOptions.Multiline);
        return match.Success ? double.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) : 0;
    }
}

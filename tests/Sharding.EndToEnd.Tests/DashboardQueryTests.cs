using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Sharding.Cli.Demo;
using Sharding.Testing;
using Xunit.Abstractions;

namespace Sharding.EndToEnd.Tests;

/// <summary>
/// Starts a real Prometheus (Debian) on loopback scraping a local cluster under load through a scale-out, then runs every PromQL
/// expression of the shipped Grafana dashboards against it: each must parse and return data.
/// </summary>
public sealed class DashboardQueryTests(ITestOutputHelper output)
{
    [RequiresToolFact("prometheus", "prometheus")]
    public async Task EveryDashboardExpression_ParsesAndReturnsData()
    {
        var expressions = DashboardExpressions();
        Assert.True(expressions.Count >= 15, $"only {expressions.Count} expressions found");
        var work = Directory.CreateTempSubdirectory("sharding-prometheus-test-").FullName;
        using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        var cluster = new LocalCluster(ComponentPaths.Locate(), Path.Combine(work, "cluster"));
        Process? prometheus = null;
        try
        {
            await cluster.StartAsync(2, 3, cancel.Token);
            var targets = Path.Combine(work, "targets.json");
            await WriteTargetsAsync(cluster, targets);
            var port = FreePort();
            prometheus = StartPrometheus(work, targets, port);
            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(10) };
            await WaitForPrometheusAsync(http, cancel.Token);

            await using (var load = new LoadGenerator(cluster, keySpace: 500))
            await using (var watchers = new StreamWatchers(cluster, 20))
            {
                load.Start(2);
                watchers.Start();
                await Task.Delay(TimeSpan.FromSeconds(6), cancel.Token);

                // A scale-out moves keys (keys-moved ratio, drained streams, GOAWAYs, generation skew over time).
                await cluster.AddPodAsync(cancel.Token);
                await WriteTargetsAsync(cluster, targets);
                await Task.Delay(TimeSpan.FromSeconds(10), cancel.Token);

                // The real components' expositions, under load and after a change, pass promtool's checks.
                if (ExternalTool.Find("promtool") is not null || ExternalTool.PeersRequired)
                {
                    using var scrape = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
                    foreach (var url in cluster.ControlPlanes.Select(c => c.HttpUrl).Concat(cluster.Members.Select(p => p.AdminUrl)))
                    {
                        var exposition = await scrape.GetStringAsync(new Uri(url + "/metrics"), cancel.Token);
                        var lint = await ProcessRunner.RunAsync("promtool", ["check", "metrics"], Encoding.UTF8.GetBytes(exposition));
                        Assert.True(lint.ExitCode == 0, $"promtool check metrics on {url}/metrics: {lint.StandardOutput}{lint.StandardError}");
                    }
                }

                var missing = new List<string>();
                foreach (var (dashboard, title, expression) in expressions)
                {
                    var result = await QueryWithRetryAsync(http, Substitute(expression), TimeSpan.FromSeconds(15), cancel.Token);
                    output.WriteLine($"{dashboard} / {title}: {result.Series} series, {result.Error ?? "ok"}");
                    if (result.Error is not null || result.Series == 0)
                    {
                        missing.Add($"{dashboard} / {title}: {expression} -> {result.Error ?? "no data"}");
                    }
                }

                Assert.True(missing.Count == 0, "dashboard expressions without data:\n" + string.Join('\n', missing));
            }
        }
        finally
        {
            if (prometheus is { HasExited: false })
            {
                prometheus.Kill(entireProcessTree: true);
                await prometheus.WaitForExitAsync(CancellationToken.None);
            }

            prometheus?.Dispose();
            await cluster.DisposeAsync();
        }
    }

    [Fact]
    public void Dashboards_AreValidGrafanaJsonWithTemplatedDatasource()
    {
        foreach (var file in Directory.GetFiles(Path.Combine(RepositoryPaths.Root, "manifests", "base", "dashboards"), "*.json"))
        {
            using var json = JsonDocument.Parse(File.ReadAllText(file));
            var root = json.RootElement;
            Assert.False(string.IsNullOrEmpty(root.GetProperty("uid").GetString()));
            Assert.Contains(root.GetProperty("templating").GetProperty("list").EnumerateArray(), v => v.GetProperty("name").GetString() == "service");
            Assert.All(root.GetProperty("panels").EnumerateArray(), panel =>
            {
                Assert.Equal("${datasource}", panel.GetProperty("datasource").GetProperty("uid").GetString());
                Assert.NotEmpty(panel.GetProperty("targets").EnumerateArray());
            });
        }
    }

    internal static List<(string Dashboard, string Title, string Expression)> DashboardExpressions()
    {
        var list = new List<(string, string, string)>();
        foreach (var file in Directory.GetFiles(Path.Combine(RepositoryPaths.Root, "manifests", "base", "dashboards"), "*.json").Order(StringComparer.Ordinal))
        {
            using var json = JsonDocument.Parse(File.ReadAllText(file));
            var dashboard = json.RootElement.GetProperty("title").GetString()!;
            foreach (var panel in json.RootElement.GetProperty("panels").EnumerateArray())
            {
                foreach (var target in panel.GetProperty("targets").EnumerateArray())
                {
                    list.Add((dashboard, panel.GetProperty("title").GetString()!, target.GetProperty("expr").GetString()!));
                }
            }
        }

        return list;
    }

    // Grafana's variables as a dashboard user would have them: every service, a 30 s rate window for a 1 s scrape interval.
    private static string Substitute(string expression) =>
        expression.Replace("$__rate_interval", "30s", StringComparison.Ordinal).Replace("$service", ".*", StringComparison.Ordinal);

    private static async Task<(int Series, string? Error)> QueryWithRetryAsync(HttpClient http, string query, TimeSpan patience, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            using var response = await http.GetAsync(new Uri("/api/v1/query?query=" + Uri.EscapeDataString(query), UriKind.Relative), cancellationToken);
            var body = await response.Content.ReadAsStringAsync(cancellationToken);
            using var json = JsonDocument.Parse(body);
            if (json.RootElement.GetProperty("status").GetString() != "success")
            {
                // A parse error does not get better with time.
                return (0, json.RootElement.TryGetProperty("error", out var error) ? error.GetString() : body);
            }

            var series = json.RootElement.GetProperty("data").GetProperty("result").GetArrayLength();
            if (series > 0 || clock.Elapsed > patience)
            {
                return (series, null);
            }

            await Task.Delay(1000, cancellationToken);
        }
    }

    private static async Task WriteTargetsAsync(LocalCluster cluster, string path)
    {
        var text = new StringBuilder("[");
        var first = true;
        void Add(string job, int port, string pod, string? service)
        {
            text.Append(first ? string.Empty : ",");
            first = false;
            text.Append(CultureInfo.InvariantCulture, $"{{\"targets\":[\"127.0.0.1:{port}\"],\"labels\":{{\"job\":\"{job}\",\"pod\":\"{pod}\"");
            if (service is not null)
            {
                text.Append(CultureInfo.InvariantCulture, $",\"service\":\"{service}\"");
            }

            text.Append("}}");
        }

        foreach (var cp in cluster.ControlPlanes)
        {
            Add("sharding-controlplane", cp.HttpPort, cp.Name, null);
        }

        foreach (var pod in cluster.Pods)
        {
            Add("sharding-sidecars", pod.AdminPort, pod.Name, LocalCluster.Service);
        }

        text.Append(']');
        var temp = path + ".tmp";
        await File.WriteAllTextAsync(temp, text.ToString());
        File.Move(temp, path, overwrite: true);
    }

    private static Process StartPrometheus(string work, string targets, int port)
    {
        var config = Path.Combine(work, "prometheus.yml");
        File.WriteAllText(config, $"""
            global:
              scrape_interval: 1s
              evaluation_interval: 1s
            scrape_configs:
              - job_name: sharding
                file_sd_configs:
                  - files: ['{targets}']
                    refresh_interval: 1s
            """);
        var info = new ProcessStartInfo("prometheus")
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        foreach (var argument in new[]
        {
            "--config.file=" + config, "--storage.tsdb.path=" + Path.Combine(work, "data"),
            $"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
        })
        {
            info.ArgumentList.Add(argument);
        }

        var process = Process.Start(info)!;
        process.OutputDataReceived += static (_, _) => { };
        process.ErrorDataReceived += static (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    private static async Task WaitForPrometheusAsync(HttpClient http, CancellationToken cancellationToken)
    {
        for (var i = 0; i < 100; i++)
        {
            try
            {
                using var response = await http.GetAsync(new Uri("/-/ready", UriKind.Relative), cancellationToken);
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
            }

            await Task.Delay(200, cancellationToken);
        }

        throw new TimeoutException("prometheus did not become ready within 20 s");
    }

    private static int FreePort() => LoopbackPorts.Free();
}

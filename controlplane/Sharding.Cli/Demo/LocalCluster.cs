using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Sharding.Mapping;

namespace Sharding.Cli.Demo;

/// <summary>One pod of the demo: the sample app and its sidecar, both on 127.0.0.1.</summary>
internal sealed class DemoPod(string name, int appPort, int sidecarPort, int adminPort)
{
    public string Name { get; } = name;

    public int AppPort { get; private set; } = appPort;

    public int SidecarPort { get; private set; } = sidecarPort;

    public int AdminPort { get; private set; } = adminPort;

    /// <summary>New ports for a start that lost one of its ports to another process.</summary>
    public void MoveTo(int appPort, int sidecarPort, int adminPort) => (AppPort, SidecarPort, AdminPort) = (appPort, sidecarPort, adminPort);

    public string SidecarUrl => $"http://127.0.0.1:{SidecarPort}";

    public string AdminUrl => $"http://127.0.0.1:{AdminPort}";

    public string AppUrl => $"http://127.0.0.1:{AppPort}";

    public ChildProcess? App { get; set; }

    public ChildProcess? Sidecar { get; set; }

    /// <summary>Whether the load may target it (members being removed stop receiving load before they stop).</summary>
    public bool AcceptsLoad { get; set; }
}

/// <summary>A control-plane replica of the demo.</summary>
internal sealed class DemoControlPlane(string name, int httpPort, int grpcPort)
{
    public string Name { get; } = name;

    public int HttpPort { get; private set; } = httpPort;

    public int GrpcPort { get; private set; } = grpcPort;

    /// <summary>New ports for a start that lost one of its ports to another process.</summary>
    public void MoveTo(int httpPort, int grpcPort) => (HttpPort, GrpcPort) = (httpPort, grpcPort);

    public string HttpUrl => $"http://127.0.0.1:{HttpPort}";

    public string GrpcUrl => $"http://127.0.0.1:{GrpcPort}";

    public ChildProcess? Process { get; set; }
}

/// <summary>
/// A whole Sharding cluster in local mode on 127.0.0.1, as real processes: control-plane replicas sharing a membership file and
/// a lease file, and pods made of the sample app plus its sidecar. Used by <c>shardctl demo</c> and the end-to-end tests.
/// </summary>
internal sealed class LocalCluster : IAsyncDisposable
{
    public const string Service = "demo";

    /// <summary>Starts of one pod or replica, the first included, before a lost port is an error.</summary>
    private const int StartAttempts = 3;

    private readonly ComponentPaths _paths;
    private readonly List<ChildProcess> _started = [];
    private readonly HttpClient _http = new(new SocketsHttpHandler { UseProxy = false, PooledConnectionLifetime = TimeSpan.FromSeconds(30) }) { Timeout = TimeSpan.FromSeconds(5) };
    private readonly string _secret = Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16));

    public LocalCluster(ComponentPaths paths, string workDirectory)
    {
        _paths = paths;
        WorkDirectory = workDirectory;
        Directory.CreateDirectory(workDirectory);
        MembershipFile = Path.Combine(workDirectory, "membership.json");
        LeaseFile = Path.Combine(workDirectory, "leader.lock");
    }

    public string WorkDirectory { get; }

    public string MembershipFile { get; }

    public string LeaseFile { get; }

    public List<DemoControlPlane> ControlPlanes { get; } = [];

    /// <summary>Every pod ever started, members or not.</summary>
    public List<DemoPod> Pods { get; } = [];

    /// <summary>The pods currently listed in the membership file, in order.</summary>
    public List<DemoPod> Members { get; } = [];

    public IReadOnlyList<ChildProcess> StartedProcesses => _started;

    /// <summary>How long sidecars let a stream whose key moved run before ending it (their <c>Sidecar:DrainGrace</c>).</summary>
    /// <value>2 s: short enough for the demo's phases to show drained streams reopening on their new owners.</value>
    public TimeSpan SidecarDrainGrace { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Chooses each port a child process will bind (tests hand out a taken one to check the retry).</summary>
    public Func<int> PickPort { get; init; } = FreePort;

    /// <summary>Starts <paramref name="controlPlanes"/> replicas and <paramref name="pods"/> pods and waits until every sidecar has a map.</summary>
    public async Task StartAsync(int controlPlanes, int pods, CancellationToken cancellationToken)
    {
        for (var i = 0; i < pods; i++)
        {
            Members.Add(NewPod());
        }

        await WriteMembershipAsync(cancellationToken).ConfigureAwait(false);
        for (var i = 0; i < controlPlanes; i++)
        {
            var ports = DistinctPorts(2);
            var cp = new DemoControlPlane($"cp-{i}", ports[0], ports[1]);
            ControlPlanes.Add(cp);
            StartControlPlane(cp);
        }

        // The sidecars are given the replicas' addresses, so those must be final first.
        foreach (var cp in ControlPlanes)
        {
            await WaitStartedAsync(cp, cancellationToken).ConfigureAwait(false);
        }

        foreach (var pod in Members)
        {
            StartPod(pod);
        }

        foreach (var pod in Members)
        {
            await WaitReadyAsync(pod, cancellationToken).ConfigureAwait(false);
            pod.AcceptsLoad = true;
        }
    }

    /// <summary>Starts a new pod, waits for its sidecar's map, then adds it to the membership file.</summary>
    public async Task<DemoPod> AddPodAsync(CancellationToken cancellationToken)
    {
        var pod = NewPod();
        StartPod(pod);
        await WaitReadyAsync(pod, cancellationToken).ConfigureAwait(false);
        Members.Add(pod);
        await WriteMembershipAsync(cancellationToken).ConfigureAwait(false);
        pod.AcceptsLoad = true;
        return pod;
    }

    /// <summary>Takes the last member out of the membership file (it keeps running until <see cref="StopPodAsync"/>).</summary>
    public async Task<DemoPod> RemoveLastMemberAsync(CancellationToken cancellationToken)
    {
        var pod = Members[^1];
        Members.RemoveAt(Members.Count - 1);
        await WriteMembershipAsync(cancellationToken).ConfigureAwait(false);
        return pod;
    }

    /// <summary>Stops a pod gracefully: sidecar first (it drains its streams), then the app.</summary>
    public static async Task StopPodAsync(DemoPod pod)
    {
        pod.AcceptsLoad = false;
        if (pod.Sidecar is not null)
        {
            await pod.Sidecar.StopAsync(TimeSpan.FromSeconds(15)).ConfigureAwait(false);
        }

        if (pod.App is not null)
        {
            await pod.App.StopAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        }
    }

    public void StartControlPlane(DemoControlPlane cp)
    {
        cp.Process = Track(ChildProcess.Start(cp.Name, _paths.ControlPlane,
            [
                $"--ControlPlane:ReplicaId={cp.Name}",
                $"--ControlPlane:Mode=local",
                $"--ControlPlane:HttpUrl={cp.HttpUrl}",
                $"--ControlPlane:GrpcUrl={cp.GrpcUrl}",
                $"--ControlPlane:MembershipFile={MembershipFile}",
                $"--ControlPlane:LeaseFile={LeaseFile}",
                "--Logging:LogLevel:Default=Information",
                "--Logging:LogLevel:Microsoft.AspNetCore=Warning",
            ],
            new Dictionary<string, string>(),
            Path.Combine(WorkDirectory, cp.Name + ".log")));
    }

    /// <summary>The replica that reports <c>sharding_controlplane_leader 1</c>, or null.</summary>
    public async Task<DemoControlPlane?> FindLeaderAsync(CancellationToken cancellationToken)
    {
        foreach (var cp in ControlPlanes)
        {
            if (cp.Process is { HasExited: false } && await ScrapeAsync(cp.HttpUrl, "sharding_controlplane_leader", cancellationToken).ConfigureAwait(false) == 1)
            {
                return cp;
            }
        }

        return null;
    }

    /// <summary>Each running sidecar's current generation (-1 when unknown).</summary>
    public async Task<Dictionary<string, long>> SidecarGenerationsAsync(CancellationToken cancellationToken)
    {
        var result = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var pod in Pods)
        {
            if (pod.Sidecar is { HasExited: false })
            {
                result[pod.Name] = (long)(await ScrapeAsync(pod.AdminUrl, "sharding_sidecar_map_generation", cancellationToken).ConfigureAwait(false) ?? -1);
            }
        }

        return result;
    }

    /// <summary>Waits until every running sidecar reports a generation above <paramref name="generation"/>.</summary>
    public async Task<long> WaitForNewGenerationAsync(long generation, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            var generations = await SidecarGenerationsAsync(cancellationToken).ConfigureAwait(false);
            if (generations.Count > 0 && generations.Values.All(g => g > generation))
            {
                return generations.Values.Min();
            }

            await Task.Delay(50, cancellationToken).ConfigureAwait(false);
        }

        throw new TimeoutException($"the sidecars did not all move past generation {generation} within {timeout.TotalSeconds:F0} s");
    }

    /// <summary>The shard map the current membership yields (same hashing as the control plane's).</summary>
    public ShardMap ExpectedMap() => ShardMap.Create(Service, 0, Members.Select(p => new ShardMember(p.Name, $"127.0.0.1:{p.SidecarPort}")));

    /// <summary>Reads one sample from a Prometheus endpoint: the first line named <paramref name="metric"/> (labels ignored).</summary>
    public async Task<double?> ScrapeAsync(string baseUrl, string metric, CancellationToken cancellationToken)
    {
        var all = await ScrapeAllAsync(baseUrl, metric, cancellationToken).ConfigureAwait(false);
        return all.Count == 0 ? null : all.Values.Sum();
    }

    /// <summary>All samples of one metric, by their label text (empty string when unlabelled).</summary>
    public async Task<Dictionary<string, double>> ScrapeAllAsync(string baseUrl, string metric, CancellationToken cancellationToken)
    {
        var result = new Dictionary<string, double>(StringComparer.Ordinal);
        string text;
        try
        {
            text = await _http.GetStringAsync(new Uri(baseUrl + "/metrics"), cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
        {
            return result;
        }

        foreach (var line in text.Split('\n'))
        {
            if (!line.StartsWith(metric, StringComparison.Ordinal) || line.Length <= metric.Length || (line[metric.Length] != ' ' && line[metric.Length] != '{'))
            {
                continue;
            }

            var space = line.LastIndexOf(' ');
            var labels = line[metric.Length] == '{' ? line[(metric.Length + 1)..line.IndexOf('}', StringComparison.Ordinal)] : string.Empty;
            if (double.TryParse(line.AsSpan(space + 1), NumberStyles.Float, CultureInfo.InvariantCulture, out var value))
            {
                result[labels] = value;
            }
        }

        return result;
    }

    public async ValueTask DisposeAsync()
    {
        // Sidecars first so streams end before their apps go; then apps; then control planes.
        await Task.WhenAll(Pods.Where(p => p.Sidecar is not null).Select(p => p.Sidecar!.StopAsync(TimeSpan.FromSeconds(10)))).ConfigureAwait(false);
        await Task.WhenAll(Pods.Where(p => p.App is not null).Select(p => p.App!.StopAsync(TimeSpan.FromSeconds(5)))).ConfigureAwait(false);
        await Task.WhenAll(ControlPlanes.Where(c => c.Process is not null).Select(c => c.Process!.StopAsync(TimeSpan.FromSeconds(5)))).ConfigureAwait(false);
        foreach (var process in _started)
        {
            process.Dispose();
        }

        _http.Dispose();
    }

    private DemoPod NewPod()
    {
        var ports = DistinctPorts(3);
        var pod = new DemoPod($"demo-{Pods.Count}", ports[0], ports[1], ports[2]);
        Pods.Add(pod);
        return pod;
    }

    private void StartPod(DemoPod pod)
    {
        pod.App = Track(ChildProcess.Start(pod.Name + "-app", _paths.SampleApp,
            ["--urls", pod.AppUrl],
            new Dictionary<string, string> { ["POD_NAME"] = pod.Name, ["SIDECAR_ADMIN_URL"] = pod.AdminUrl },
            Path.Combine(WorkDirectory, pod.Name + "-app.log")));
        var arguments = new List<string>
        {
            $"--Sidecar:PodName={pod.Name}",
            $"--Sidecar:Service={Service}",
            "--Sidecar:ListenAddress=127.0.0.1",
            "--Sidecar:AdminListenAddress=127.0.0.1",
            $"--Sidecar:Port={pod.SidecarPort}",
            $"--Sidecar:AdminPort={pod.AdminPort}",
            $"--Sidecar:AppPort={pod.AppPort}",
            $"--Sidecar:ForwardingSecret={_secret}",
            $"--Sidecar:DrainGrace={SidecarDrainGrace:c}",
            "--Logging:LogLevel:Default=Information",
            "--Logging:LogLevel:Microsoft.AspNetCore=Warning",
        };
        for (var i = 0; i < ControlPlanes.Count; i++)
        {
            arguments.Add($"--Sidecar:ControlPlaneUrls:{i}={ControlPlanes[i].GrpcUrl}");
        }

        pod.Sidecar = Track(ChildProcess.Start(pod.Name + "-sidecar", _paths.Sidecar, arguments, new Dictionary<string, string>(), Path.Combine(WorkDirectory, pod.Name + "-sidecar.log")));
    }

    /// <summary>Waits until the pod's app and sidecar are ready (see <see cref="WaitWithRetriesAsync"/>).</summary>
    private Task WaitReadyAsync(DemoPod pod, CancellationToken cancellationToken) => WaitWithRetriesAsync(
        pod.Name,
        pod.Name + "-*.log",
        () => pod.Sidecar is { HasExited: true } || pod.App is { HasExited: true },
        async () => await IsOkAsync(pod.AdminUrl + "/readyz", cancellationToken).ConfigureAwait(false)
            && await IsOkAsync(pod.AppUrl + "/healthz", cancellationToken).ConfigureAwait(false),
        async () =>
        {
            await Task.WhenAll(pod.Sidecar!.StopAsync(TimeSpan.FromSeconds(5)), pod.App!.StopAsync(TimeSpan.FromSeconds(5))).ConfigureAwait(false);
            var ports = DistinctPorts(3);
            pod.MoveTo(ports[0], ports[1], ports[2]);
            if (Members.Contains(pod))
            {
                await WriteMembershipAsync(cancellationToken).ConfigureAwait(false);
            }

            StartPod(pod);
        },
        cancellationToken);

    /// <summary>Waits until a replica answers <c>/healthz</c> (see <see cref="WaitWithRetriesAsync"/>).</summary>
    private Task WaitStartedAsync(DemoControlPlane cp, CancellationToken cancellationToken) => WaitWithRetriesAsync(
        cp.Name,
        cp.Name + ".log",
        () => cp.Process is { HasExited: true },
        () => IsOkAsync(cp.HttpUrl + "/healthz", cancellationToken),
        () =>
        {
            var ports = DistinctPorts(2);
            cp.MoveTo(ports[0], ports[1]);
            StartControlPlane(cp);
            return Task.CompletedTask;
        },
        cancellationToken);

    /// <summary>
    /// Waits (60 s at most per start) until <paramref name="ready"/> holds. A start that lost a port (another program bound
    /// it between our check and the child's bind) is retried through <paramref name="restartOnNewPorts"/>, up to
    /// <see cref="StartAttempts"/> starts; any other exit during start is an error naming the <paramref name="logs"/> (a
    /// file pattern in the work directory).
    /// </summary>
    private async Task WaitWithRetriesAsync(
        string name, string logs, Func<bool> exited, Func<Task<bool>> ready, Func<Task> restartOnNewPorts, CancellationToken cancellationToken)
    {
        for (var attempt = 1; ; attempt++)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (!exited())
            {
                if (await ready().ConfigureAwait(false))
                {
                    return;
                }

                if (clock.Elapsed > TimeSpan.FromSeconds(60))
                {
                    throw new TimeoutException($"{name} was not ready within 60 s; see {WorkDirectory}/{logs}");
                }

                await Task.Delay(100, cancellationToken).ConfigureAwait(false);
            }

            if (attempt == StartAttempts || !LostAPort(logs))
            {
                throw new InvalidOperationException($"{name} exited during start; see {WorkDirectory}/{logs}");
            }

            await restartOnNewPorts().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// <paramref name="count"/> ports for one process, all different: two picks can land on the same free port, and one
    /// process given it twice (a sidecar's data and admin port) fails its own validation rather than a bind, which is not
    /// retried. A port shared between two processes fails the second's bind, and that start is retried on new ports.
    /// </summary>
    private int[] DistinctPorts(int count)
    {
        var ports = new int[count];
        for (int i = 0, attempts = 0; i < count; attempts++)
        {
            if (attempts == 1000)
            {
                throw new InvalidOperationException($"no {count} different free ports in 1,000 picks");
            }

            var port = PickPort();
            if (Array.IndexOf(ports, port, 0, i) < 0)
            {
                ports[i++] = port;
            }
        }

        return ports;
    }

    /// <summary>Whether a log matching <paramref name="logs"/> (a file pattern) says a bind failed.</summary>
    private bool LostAPort(string logs)
    {
        foreach (var file in Directory.EnumerateFiles(WorkDirectory, logs))
        {
            using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            using var reader = new StreamReader(stream);
            if (reader.ReadToEnd().Contains("address already in use", StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }

        return false;
    }

    private async Task<bool> IsOkAsync(string url, CancellationToken cancellationToken)
    {
        try
        {
            using var response = await _http.GetAsync(new Uri(url), cancellationToken).ConfigureAwait(false);
            return response.StatusCode == HttpStatusCode.OK;
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
        {
            return false;
        }
    }

    private async Task WriteMembershipAsync(CancellationToken cancellationToken)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartObject("services");
            json.WriteStartObject(Service);
            json.WriteString("algorithm", "maglev");
            json.WriteStartArray("keyRules");
            json.WriteStringValue("header:x-shard-key");
            json.WriteStringValue("path:/counters/{key}");
            json.WriteEndArray();
            json.WriteStartArray("members");
            foreach (var pod in Members)
            {
                json.WriteStartObject();
                json.WriteString("name", pod.Name);
                json.WriteString("address", $"127.0.0.1:{pod.SidecarPort}");
                json.WriteNumber("weight", 1);
                json.WriteEndObject();
            }

            json.WriteEndArray();
            json.WriteEndObject();
            json.WriteEndObject();
            json.WriteEndObject();
        }

        // Write then rename, so a control plane never reads half a file.
        var temp = MembershipFile + ".tmp";
        await File.WriteAllBytesAsync(temp, buffer.ToArray(), cancellationToken).ConfigureAwait(false);
        File.Move(temp, MembershipFile, overwrite: true);
    }

    private ChildProcess Track(ChildProcess process)
    {
        _started.Add(process);
        return process;
    }

    /// <summary>
    /// A free port below Linux's ephemeral range (32768–60999): ports the OS hands out for "port 0" are also what outgoing
    /// connections (the load, other processes) get as source ports, and could be taken before the child process binds them.
    /// 10000–19999, apart from the 20000–31999 the test suites pick from, so the demo run by a test never races them.
    /// </summary>
    private static int FreePort()
    {
        for (var attempt = 0; attempt < 500; attempt++)
        {
            var port = Random.Shared.Next(10000, 20000);
            try
            {
                using var listener = new TcpListener(IPAddress.Loopback, port);
                listener.Start();
                return port;
            }
            catch (SocketException)
            {
                // Taken: try another.
            }
        }

        throw new InvalidOperationException("no free port on 127.0.0.1 between 10000 and 20000");
    }
}

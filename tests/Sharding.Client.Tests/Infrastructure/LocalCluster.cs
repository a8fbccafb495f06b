using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Sharding.Testing;

namespace Sharding.Client.Tests.Infrastructure;

/// <summary>
/// A local cluster of real processes on 127.0.0.1: N sample apps, each behind its own sidecar, and one control plane in local
/// mode reading a membership file. The sidecars read a static map file (Sidecar:MapFile) instead of subscribing to the control
/// plane, so each membership change is written to both files: the same members give the same Maglev owners.
/// </summary>
internal sealed class LocalCluster : IAsyncDisposable
{
    public const string Service = "sharded-svc";
    public const string Secret = "client-tests-cluster-secret-0123456789";
    public const string Rules = "[\"header:x-shard-key\", \"path:/counters/{key}\", \"query:tenant\", \"cookie:sid\", \"json:$.account.id\"]";

    private static readonly HttpClient Http = new(new SocketsHttpHandler { UseProxy = false }) { Timeout = TimeSpan.FromSeconds(5) };

    private readonly List<ManagedProcess> _apps = [];
    private readonly List<ManagedProcess?> _sidecars = [];
    private ManagedProcess? _controlPlane;

    private LocalCluster(string directory, int size)
    {
        Directory = directory;
        for (var i = 0; i < size; i++)
        {
            AppPorts.Add(FreePort());
            SidecarPorts.Add(FreePort());
            AdminPorts.Add(FreePort());
        }

        ControlPlaneHttpPort = FreePort();
        ControlPlaneGrpcPort = FreePort();
    }

    public string Directory { get; }

    public List<int> AppPorts { get; } = [];

    public List<int> SidecarPorts { get; } = [];

    public List<int> AdminPorts { get; } = [];

    public int ControlPlaneHttpPort { get; }

    public int ControlPlaneGrpcPort { get; }

    public string ControlPlaneGrpcUrl => $"http://127.0.0.1:{ControlPlaneGrpcPort}";

    public string MembershipFile => Path.Combine(Directory, "membership.yaml");

    public string SidecarMapFile => Path.Combine(Directory, "sidecar-map.yaml");

    public IReadOnlyList<int> Members { get; private set; } = [];

    public static string PodName(int index) => $"pod-{index}";

    public string SidecarUrl(int index) => $"http://127.0.0.1:{SidecarPorts[index]}";

    public static async Task<LocalCluster> StartAsync(int size = 3, bool controlPlane = true)
    {
        var directory = Path.Combine(Path.GetTempPath(), "sharding-client-tests", Guid.NewGuid().ToString("N")[..12]);
        System.IO.Directory.CreateDirectory(directory);
        var cluster = new LocalCluster(directory, size);
        try
        {
            var all = Enumerable.Range(0, size).ToArray();
            cluster.WriteFiles(all);
            var waits = new List<Task>();
            for (var i = 0; i < size; i++)
            {
                cluster._apps.Add(StartApp(i, cluster.AppPorts[i]));
                cluster._sidecars.Add(cluster.StartSidecar(i));
                waits.Add(WaitOkAsync($"http://127.0.0.1:{cluster.AppPorts[i]}/healthz", cluster._apps[i]));
                waits.Add(WaitOkAsync($"http://127.0.0.1:{cluster.AdminPorts[i]}/readyz", cluster._sidecars[i]!));
            }

            if (controlPlane)
            {
                waits.Add(cluster.StartControlPlaneAsync());
            }

            await Task.WhenAll(waits).ConfigureAwait(false);
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    public async Task StartControlPlaneAsync()
    {
        var cp = ManagedProcess.StartDotnet("control plane", Dll("controlplane", "Sharding.ControlPlane"),
        [
            "--ControlPlane:ReplicaId=cp-0",
            $"--ControlPlane:HttpUrl=http://127.0.0.1:{ControlPlaneHttpPort}",
            $"--ControlPlane:GrpcUrl={ControlPlaneGrpcUrl}",
            $"--ControlPlane:MembershipFile={MembershipFile}",
            $"--ControlPlane:LeaseFile={Path.Combine(Directory, "leader.lock")}",
            "--ControlPlane:Debounce=00:00:00.050",
            "--ControlPlane:LeaseRetryInterval=00:00:00.050",
            "--ControlPlane:MembershipPollInterval=00:00:00.200",
            "--ControlPlane:PingInterval=00:00:00.500",
            "--ControlPlane:RelayIdleTimeout=00:00:02",
        ], new Dictionary<string, string>());
        _controlPlane = cp;
        await WaitOkAsync($"http://127.0.0.1:{ControlPlaneHttpPort}/readyz", cp).ConfigureAwait(false);
    }

    public async Task StopControlPlaneAsync()
    {
        if (_controlPlane is { } cp)
        {
            _controlPlane = null;
            await cp.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Changes the membership (both files) and waits until the sidecars of the remaining members loaded it.</summary>
    public async Task SetMembersAsync(IReadOnlyList<int> members, TimeSpan timeout)
    {
        WriteFiles(members);
        foreach (var member in members)
        {
            var url = $"http://127.0.0.1:{AdminPorts[member]}/v1/map";
            await Until(async () =>
            {
                using var doc = JsonDocument.Parse(await Http.GetStringAsync(url).ConfigureAwait(false));
                return doc.RootElement.GetProperty("members").GetArrayLength() == members.Count;
            }, timeout, $"sidecar {PodName(member)} did not load the new membership").ConfigureAwait(false);
        }
    }

    /// <summary>The sum of sharding_sidecar_requests_total{outcome="forwarded"} over the sidecars.</summary>
    public async Task<long> ForwardedAsync()
    {
        long total = 0;
        for (var i = 0; i < _sidecars.Count; i++)
        {
            total += await CounterAsync(i, "sharding_sidecar_requests_total", "outcome=\"forwarded\"").ConfigureAwait(false);
        }

        return total;
    }

    public async Task<long> CounterAsync(int sidecar, string metric, string label)
    {
        var text = await Http.GetStringAsync($"http://127.0.0.1:{AdminPorts[sidecar]}/metrics").ConfigureAwait(false);
        long total = 0;
        foreach (var line in text.Split('\n'))
        {
            if (line.StartsWith(metric + "{", StringComparison.Ordinal) && line.Contains(label, StringComparison.Ordinal))
            {
                var value = line[(line.LastIndexOf(' ') + 1)..];
                total += (long)double.Parse(value, CultureInfo.InvariantCulture);
            }
        }

        return total;
    }

    public async ValueTask DisposeAsync()
    {
        await StopControlPlaneAsync().ConfigureAwait(false);
        foreach (var process in _sidecars.Concat(_apps))
        {
            if (process is not null)
            {
                await process.DisposeAsync().ConfigureAwait(false);
            }
        }

        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    public static int FreePort() => Sharding.Testing.LoopbackPorts.Free();

    public static async Task Until(Func<Task<bool>> condition, TimeSpan timeout, string what)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Exception? last = null;
        while (clock.Elapsed < timeout)
        {
            try
            {
                if (await condition().ConfigureAwait(false))
                {
                    return;
                }
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or JsonException or KeyNotFoundException)
            {
                last = ex;
            }

            await Task.Delay(50).ConfigureAwait(false);
        }

        throw new TimeoutException($"{what} within {timeout.TotalSeconds:0} s{(last is null ? string.Empty : ": " + last.Message)}");
    }

    private static string Dll(string folder, string project)
    {
        var configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name; // bin/<Configuration>/net10.0/
        var path = Path.Combine(RepositoryPaths.Root, folder, project, "bin", configuration, "net10.0", project + ".dll");
        return File.Exists(path) ? path : throw new FileNotFoundException($"{path} is missing: build {folder}/{project} first", path);
    }

    private static ManagedProcess StartApp(int index, int port) =>
        ManagedProcess.StartDotnet(PodName(index), Dll("tests", "Sharding.SampleApp"), ["--urls", $"http://127.0.0.1:{port}"],
            new Dictionary<string, string> { ["POD_NAME"] = PodName(index) });

    private static async Task WaitOkAsync(string url, ManagedProcess process)
    {
        try
        {
            await Until(async () =>
            {
                if (process.HasExited)
                {
                    throw new InvalidOperationException($"{process.Name} exited: {process.RecentOutput}");
                }

                using var response = await Http.GetAsync(url).ConfigureAwait(false);
                return response.IsSuccessStatusCode;
            }, TimeSpan.FromSeconds(45), $"{process.Name} was not ready at {url}").ConfigureAwait(false);
        }
        catch (TimeoutException ex)
        {
            throw new TimeoutException(ex.Message + "\n" + process.RecentOutput, ex);
        }
    }

    private ManagedProcess StartSidecar(int index) =>
        ManagedProcess.StartDotnet("sidecar " + PodName(index), Dll("sidecar", "Sharding.Sidecar"), [], new Dictionary<string, string>
        {
            ["Sidecar__PodName"] = PodName(index),
            ["Sidecar__Service"] = Service,
            ["Sidecar__ListenAddress"] = "127.0.0.1",
            ["Sidecar__AdminListenAddress"] = "127.0.0.1",
            ["Sidecar__Port"] = SidecarPorts[index].ToString(CultureInfo.InvariantCulture),
            ["Sidecar__AdminPort"] = AdminPorts[index].ToString(CultureInfo.InvariantCulture),
            ["Sidecar__AppPort"] = AppPorts[index].ToString(CultureInfo.InvariantCulture),
            ["Sidecar__AppProtocol"] = "Http1",
            ["Sidecar__MapFile"] = SidecarMapFile,
            ["Sidecar__ForwardingSecret"] = Secret,
        });

    private void WriteFiles(IReadOnlyList<int> members)
    {
        var membership = new StringBuilder()
            .AppendLine("services:")
            .AppendLine(CultureInfo.InvariantCulture, $"  {Service}:")
            .AppendLine("    algorithm: maglev")
            .AppendLine(CultureInfo.InvariantCulture, $"    keyRules: {Rules}")
            .AppendLine("    members:");
        var map = new StringBuilder()
            .AppendLine(CultureInfo.InvariantCulture, $"service: {Service}")
            .AppendLine("algorithm: maglev")
            .AppendLine("members:");
        foreach (var i in members)
        {
            membership.AppendLine(CultureInfo.InvariantCulture, $"      - {{ name: {PodName(i)}, address: 127.0.0.1:{SidecarPorts[i]}, weight: 1 }}");
            map.AppendLine(CultureInfo.InvariantCulture, $"  - {{ name: {PodName(i)}, address: 127.0.0.1:{SidecarPorts[i]}, weight: 1 }}");
        }

        map.AppendLine("keys:").AppendLine(CultureInfo.InvariantCulture, $"  rules: {Rules}");
        Replace(MembershipFile, membership.ToString());
        Replace(SidecarMapFile, map.ToString());
        Members = [.. members];
    }

    private static void Replace(string path, string text)
    {
        var temporary = path + ".tmp";
        File.WriteAllText(temporary, text);
        File.Move(temporary, path, overwrite: true);
    }
}

using System.Net;
using System.Text;
using Sharding.Mapping;

namespace Sharding.Sidecar.Tests.Infrastructure;

/// <summary>Three echo apps, each behind its own sidecar, all on the same static map file.</summary>
internal sealed class Cluster : IAsyncDisposable
{
    public const string Rules = "[\"header:x-shard-key\", \"path:/docs/{key}\", \"query:tenant\", \"cookie:sid\", \"json:$.account.id\"]";

    private Cluster(string directory, IReadOnlyList<EchoApp> apps, IReadOnlyList<TestSidecar> sidecars)
    {
        Directory = directory;
        Apps = apps;
        Sidecars = sidecars;
    }

    public string Directory { get; }

    public IReadOnlyList<EchoApp> Apps { get; }

    public IReadOnlyList<TestSidecar> Sidecars { get; }

    public ShardMap Map => Sidecars[0].Store.Current!;

    public static async Task<Cluster> StartAsync(int size = 3, string rules = Rules, string extraKeys = "", IDictionary<string, string?>? sidecarSettings = null)
    {
        var directory = Path.Combine(Path.GetTempPath(), "sharding-sidecar-tests", Guid.NewGuid().ToString("N"));
        System.IO.Directory.CreateDirectory(directory);
        var apps = new List<EchoApp>();
        var ports = new List<int>();
        for (var i = 0; i < size; i++)
        {
            apps.Add(await EchoApp.StartAsync($"pod-{i}"));
            ports.Add(TestSidecar.FreePort());
        }

        var mapFile = Path.Combine(directory, "map.yaml");
        await File.WriteAllTextAsync(mapFile, MapYaml(ports, rules, extraKeys));
        var sidecars = new List<TestSidecar>();
        for (var i = 0; i < size; i++)
        {
            sidecars.Add(await TestSidecar.StartAsync($"pod-{i}", ports[i], apps[i].Port, mapFile, sidecarSettings));
        }

        return new Cluster(directory, apps, sidecars);
    }

    public static string MapYaml(IReadOnlyList<int> ports, string rules = Rules, string extraKeys = "", IReadOnlyList<string>? names = null)
    {
        var text = new StringBuilder();
        text.AppendLine("service: echo").AppendLine("algorithm: maglev").AppendLine("members:");
        for (var i = 0; i < ports.Count; i++)
        {
            text.AppendLine(System.Globalization.CultureInfo.InvariantCulture, $"  - name: {names?[i] ?? $"pod-{i}"}")
                .AppendLine(System.Globalization.CultureInfo.InvariantCulture, $"    address: 127.0.0.1:{ports[i]}");
        }

        text.AppendLine("keys:").AppendLine(System.Globalization.CultureInfo.InvariantCulture, $"  rules: {rules}");
        text.Append(extraKeys);
        return text.ToString();
    }

    public static HttpClient Client(bool http2)
    {
        var handler = new SocketsHttpHandler { UseProxy = false, AllowAutoRedirect = false, UseCookies = false, EnableMultipleHttp2Connections = true };
        return new HttpClient(handler)
        {
            DefaultRequestVersion = http2 ? HttpVersion.Version20 : HttpVersion.Version11,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Timeout = TimeSpan.FromSeconds(60),
        };
    }

    public static HttpRequestMessage Request(HttpMethod method, string url, bool http2 = false) => new(method, url)
    {
        Version = http2 ? HttpVersion.Version20 : HttpVersion.Version11,
        VersionPolicy = HttpVersionPolicy.RequestVersionExact,
    };

    public string OwnerOf(string key) => Map.OwnerOf(key.AsSpan())!.Name;

    public async ValueTask DisposeAsync()
    {
        foreach (var sidecar in Sidecars)
        {
            await sidecar.DisposeAsync();
        }

        foreach (var app in Apps)
        {
            await app.DisposeAsync();
        }

        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>xUnit fixture: one shared cluster for the routing tests.</summary>
public sealed class ClusterFixture : IAsyncLifetime
{
    internal Cluster Cluster { get; private set; } = null!;

    public async Task InitializeAsync() => Cluster = await Cluster.StartAsync();

    public async Task DisposeAsync() => await Cluster.DisposeAsync();
}

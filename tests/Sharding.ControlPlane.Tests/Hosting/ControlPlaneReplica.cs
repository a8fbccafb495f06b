using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Sharding.ControlPlane.Distribution;
using Sharding.ControlPlane.Hosting;
using Sharding.ControlPlane.Leadership;

namespace Sharding.ControlPlane.Tests.Hosting;

/// <summary>A real control-plane replica on 127.0.0.1:0 (both listeners), in this process.</summary>
internal sealed class ControlPlaneReplica : IAsyncDisposable
{
    private readonly WebApplication _app;

    private ControlPlaneReplica(WebApplication app, Uri http, Uri grpc)
    {
        _app = app;
        HttpUrl = http;
        GrpcUrl = grpc;
    }

    public Uri HttpUrl { get; }

    public Uri GrpcUrl { get; }

    public ShardMapRegistry Registry => _app.Services.GetRequiredService<ShardMapRegistry>();

    public ILeaderElector Elector => _app.Services.GetRequiredService<ILeaderElector>();

    public static async Task<ControlPlaneReplica> StartAsync(
        string directory, string id, string membershipFile = "membership.yaml", ILoggerProvider? logs = null, params string[] extra)
    {
        string[] args =
        [
            $"--ControlPlane:ReplicaId={id}",
            "--ControlPlane:HttpUrl=http://127.0.0.1:0",
            "--ControlPlane:GrpcUrl=http://127.0.0.1:0",
            $"--ControlPlane:MembershipFile={Path.Combine(directory, membershipFile)}",
            $"--ControlPlane:LeaseFile={Path.Combine(directory, "leader.lock")}",
            "--ControlPlane:Debounce=00:00:00.100",
            "--ControlPlane:LeaseRetryInterval=00:00:00.050",
            "--ControlPlane:MembershipPollInterval=00:00:00.200",
            "--ControlPlane:PingInterval=00:00:00.500",
            "--ControlPlane:RelayIdleTimeout=00:00:02",
            .. extra,
        ];
        var app = ControlPlaneApp.Build(args, builder =>
        {
            builder.Logging.ClearProviders().SetMinimumLevel(LogLevel.Warning);
            if (logs is not null)
            {
                builder.Logging.AddProvider(logs);
            }
        });
        await app.StartAsync().ConfigureAwait(false);
        var (http, grpc) = await app.Services.GetRequiredService<ControlPlaneEndpoints>().Bound.WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
        return new ControlPlaneReplica(app, http, grpc);
    }

    public async Task<bool> WaitAsync(Func<ControlPlaneReplica, bool> condition, TimeSpan timeout)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            if (condition(this))
            {
                return true;
            }

            await Task.Delay(20).ConfigureAwait(false);
        }

        return condition(this);
    }

    public async ValueTask DisposeAsync()
    {
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        try
        {
            await _app.StopAsync(stop.Token).ConfigureAwait(false);
        }
        finally
        {
            await _app.DisposeAsync().ConfigureAwait(false);
        }
    }
}

/// <summary>A temporary folder with a membership file.</summary>
internal sealed class TempCluster : IDisposable
{
    public TempCluster()
    {
        Directory = Path.Combine(Path.GetTempPath(), "sharding-cp-" + Guid.NewGuid().ToString("N")[..12]);
        System.IO.Directory.CreateDirectory(Directory);
    }

    public string Directory { get; }

    public string MembershipPath => Path.Combine(Directory, "membership.yaml");

    public static string Yaml(int members, string service = "sharded-svc", int tableSize = 65537, string extraService = "") =>
        $"""
        services:
          {service}:
            algorithm: maglev
            tableSize: {tableSize}
            keyRules: ["header:x-shard-key", "path:/docs/{"{key}"}"]
            members:
        {string.Concat(Enumerable.Range(0, members).Select(i => $"      - {{ name: {service}-{i}, address: 127.0.0.1:{15100 + i}, weight: 1 }}\n"))}{extraService}
        """;

    public void Write(string text)
    {
        var temporary = MembershipPath + ".tmp";
        File.WriteAllText(temporary, text);
        File.Move(temporary, MembershipPath, overwrite: true);
    }

    public void Dispose()
    {
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

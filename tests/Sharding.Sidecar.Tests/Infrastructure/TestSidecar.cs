using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Sharding.Mapping;
using Sharding.Sidecar.Hosting;

namespace Sharding.Sidecar.Tests.Infrastructure;

/// <summary>A real sidecar (Kestrel on 127.0.0.1) built by the production <see cref="SidecarHost"/>.</summary>
internal sealed class TestSidecar : IAsyncDisposable
{
    public const string Secret = "test-cluster-secret-0123456789";

    private readonly WebApplication _app;

    private TestSidecar(string podName, WebApplication app)
    {
        PodName = podName;
        _app = app;
    }

    public string PodName { get; }

    public int Port => _app.Services.GetRequiredService<SidecarEndpoints>().DataPort;

    public int AdminPort => _app.Services.GetRequiredService<SidecarEndpoints>().AdminPort;

    public ShardMapStore Store => _app.Services.GetRequiredService<ShardMapStore>();

    public IServiceProvider Services => _app.Services;

    public static async Task<TestSidecar> StartAsync(string podName, int port, int appPort, string mapFile, IDictionary<string, string?>? extra = null, ILoggerProvider? logs = null,
        Action<WebApplicationBuilder>? configure = null)
    {
        var settings = new Dictionary<string, string?>
        {
            ["Sidecar:PodName"] = podName,
            ["Sidecar:ListenAddress"] = "127.0.0.1",
            ["Sidecar:AdminListenAddress"] = "127.0.0.1",
            ["Sidecar:Port"] = port.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["Sidecar:AdminPort"] = "0",
            ["Sidecar:AppPort"] = appPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["Sidecar:MapFile"] = mapFile,
            ["Sidecar:ForwardingSecret"] = Secret,
            ["Sidecar:RetryBaseDelay"] = "00:00:00.010",
        };
        foreach (var (key, value) in extra ?? new Dictionary<string, string?>())
        {
            if (value is null)
            {
                settings.Remove(key); // unset: the option's default
            }
            else
            {
                settings[key] = value;
            }
        }

        var app = SidecarHost.Build([], builder =>
        {
            builder.Configuration.AddInMemoryCollection(settings);
            if (Environment.GetEnvironmentVariable("SHARDING_TEST_LOGS") != "1")
            {
                builder.Logging.ClearProviders();
            }

            if (logs is not null)
            {
                builder.Logging.AddProvider(logs);
            }

            configure?.Invoke(builder);
        });
        await app.StartAsync();
        var sidecar = new TestSidecar(podName, app);
        await sidecar.Store.WaitForGenerationAsync(1, TimeSpan.FromSeconds(10), CancellationToken.None);
        return sidecar;
    }

    /// <summary>A port that was free a moment ago (members' addresses must be in the map before the sidecars start).</summary>
    public static int FreePort() => Sharding.Testing.LoopbackPorts.Free();

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}

using System.Net;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Options;
using Sharding.ControlPlane.Assignment;
using Sharding.ControlPlane.Distribution;
using Sharding.ControlPlane.Leadership;
using Sharding.ControlPlane.Lookup;
using Sharding.ControlPlane.Membership;
using Sharding.Metrics;
using Sharding.Net;
using Sharding.Protocol;

namespace Sharding.ControlPlane.Hosting;

/// <summary>Builds the control-plane web application (used by Program and by in-process tests).</summary>
internal static class ControlPlaneApp
{
    /// <summary>
    /// Whether a background service ended with an exception: .NET 10's host then stops, but exits with code 0 (.NET 11
    /// changes that), so the entry point sets 1 itself and the restart reads as a failure.
    /// </summary>
    public static bool BackgroundServiceFailed(IServiceProvider services) =>
        services.GetServices<IHostedService>().Any(static s => s is BackgroundService { ExecuteTask.IsFaulted: true });

    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        // No appsettings watcher: it watches the whole working directory, and a busy file there (a log) would cost CPU on
        // every write. Configuration comes from the environment and arguments; a restart applies a new file.
        var builder = WebApplication.CreateSlimBuilder([.. args, "--hostBuilder:reloadConfigOnChange=false"]);
        builder.Services.AddControlPlane(builder.Configuration);
        var kubernetes = KubernetesServiceCollectionExtensions.IsKubernetesMode(builder.Configuration);
        if (kubernetes)
        {
            // Replaces the local file membership and file-lock election with pods and a Lease; adds the webhook listener.
            builder.Services.AddKubernetesMode(builder.Configuration);
        }

        configure?.Invoke(builder);

        // Two listeners: HTTP/1.1 for the directory, metrics and probes; HTTP/2-only (h2c prior knowledge) for gRPC. A cleartext
        // Http1AndHttp2 endpoint would speak only HTTP/1.1 (no ALPN without TLS), so gRPC clients would get nothing.
        var settings = builder.Configuration.GetSection(ControlPlaneOptions.SectionName).Get<ControlPlaneOptions>() ?? new ControlPlaneOptions();
        var listeners = new List<(ListenOptions Options, bool Grpc)>();
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;

            // Watch streams are long-lived: Kestrel's default of 100 streams per HTTP/2 connection would make a client that
            // multiplexes many subscribers (a relay, a client library, the fan-out benchmark) queue streams behind others.
            kestrel.Limits.Http2.MaxStreamsPerConnection = 1000;
            foreach (var (url, grpc) in new[] { (settings.HttpUrl, false), (settings.GrpcUrl, true) })
            {
                var uri = new Uri(url);
                var address = ClientAddress.Bindable(uri.Host is "localhost" ? IPAddress.Loopback : IPAddress.Parse(uri.Host));
                kestrel.Listen(address, uri.Port, listen =>
                {
                    listen.Protocols = grpc ? HttpProtocols.Http2 : HttpProtocols.Http1;
                    listeners.Add((listen, grpc));
                });
            }
        });

        var app = builder.Build();
        app.Lifetime.ApplicationStarted.Register(() =>
        {
            var endpoints = app.Services.GetRequiredService<ControlPlaneEndpoints>();
            var http = listeners.First(l => !l.Grpc).Options.IPEndPoint!;
            var grpc = listeners.First(l => l.Grpc).Options.IPEndPoint!;
            var grpcUri = new Uri($"http://{grpc}");
            var advertised = app.Services.GetRequiredService<IOptions<ControlPlaneOptions>>().Value.AdvertisedGrpcUrl;
            endpoints.SetBound(new Uri($"http://{http}"), grpcUri, advertised is null ? grpcUri : new Uri(advertised));
        });

        app.MapPost(GrpcProtocol.WatchPath, static (HttpContext context, WatchHandler handler) => handler.HandleAsync(context));
        app.MapDirectory();
        if (kubernetes)
        {
            app.MapKubernetesEndpoints();
        }

        app.MapGet("/healthz", static () => Results.Text("ok\n"));
        app.MapGet("/readyz", static (ShardMapRegistry registry, ILeaderElector elector) =>
            !registry.IsSynced ? Results.Text("not ready: no complete membership view yet (leader not computed / relay not in sync)\n", statusCode: StatusCodes.Status503ServiceUnavailable)
            : registry.CutOff is { } cutOff ? Results.Text($"not ready: cut off from the leader ({cutOff})\n", statusCode: StatusCodes.Status503ServiceUnavailable)
            : Results.Text($"ready: {(elector.Current.IsLeader ? "leader" : "follower")}, epoch {elector.Current.Epoch}\n"));
        app.MapGet("/metrics", static (HttpContext context, PrometheusExporter exporter) =>
        {
            context.Response.ContentType = PrometheusExporter.ContentType;
            return context.Response.WriteAsync(exporter.Collect(), context.RequestAborted);
        });
        return app;
    }

    public static IServiceCollection AddControlPlane(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<ControlPlaneOptions>().Bind(configuration.GetSection(ControlPlaneOptions.SectionName)).ValidateOnStart();
        services.AddSingleton<IValidateOptions<ControlPlaneOptions>, ControlPlaneOptionsValidator>();
        services.AddMetrics();
        services.AddSingleton(TimeProvider.System);
        services.AddSingleton<ControlPlaneEndpoints>();
        services.AddSingleton<ShardMapRegistry>();
        services.AddSingleton<ControlPlaneMetrics>();
        services.AddSingleton(static services => new PrometheusExporter(
            meterNamePrefix: "Sharding", includeRuntime: true, scope: services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>()));
        services.AddSingleton<WatchHandler>();
        services.AddSingleton<ILeaderElector, FileLockLeaderElector>();
        services.AddSingleton<IMembershipSource, FileMembershipSource>();
        services.AddHostedService<AssignmentService>();
        services.AddHostedService<LeaderRelay>();
        services.AddHostedService<MetricsWarmup>();
        return services;
    }

    /// <summary>Creates the metrics instruments and the exporter at start, so /metrics lists them before the first event.</summary>
    private sealed class MetricsWarmup(ControlPlaneMetrics metrics, PrometheusExporter exporter) : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken)
        {
            _ = metrics;
            _ = exporter;
            return Task.CompletedTask;
        }

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}

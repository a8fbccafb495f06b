using System.Net;
using System.Text;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Sharding.Mapping;
using Sharding.Metrics;
using Sharding.Net;
using Sharding.Sidecar.Draining;
using Sharding.Sidecar.FastPath;
using Sharding.Sidecar.Forwarding;
using Sharding.Sidecar.MapSync;
using Sharding.Sidecar.Routing;
using Sharding.Sidecar.Transport;

namespace Sharding.Sidecar.Hosting;

/// <summary>The ports the sidecar actually bound (known after start; 0 in the options picks free ones).</summary>
internal sealed class SidecarEndpoints
{
    internal ListenOptions? Data { get; set; }

    internal ListenOptions? Admin { get; set; }

    public int DataPort => Data?.IPEndPoint?.Port ?? 0;

    public int AdminPort => Admin?.IPEndPoint?.Port ?? 0;
}

/// <summary>Builds the sidecar: options, map sync, routing, forwarding, metrics, and Kestrel with its two ports.</summary>
internal static class SidecarHost
{
    private const string HostingDiagnosticsCategory = "Microsoft.AspNetCore.Hosting.Diagnostics";

    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        // No appsettings watcher: it watches the whole working directory, and a busy file there (a log) would cost CPU on
        // every write. Configuration comes from the environment and arguments; a restart applies a new file.
        var builder = WebApplication.CreateSlimBuilder([.. args, "--hostBuilder:reloadConfigOnChange=false"]);
        configure?.Invoke(builder);

        // ASP.NET Core's hosting diagnostics start an Activity and a logging scope for every request whenever its category
        // logs at any level; the sidecar logs its own events (5xx..8xx), so that category is off unless configured.
        if (builder.Configuration[$"Logging:LogLevel:{HostingDiagnosticsCategory}"] is null)
        {
            builder.Logging.AddFilter(HostingDiagnosticsCategory, LogLevel.None);
        }

        builder.Services.AddShardingSidecar();
        builder.Services.AddOptions<Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets.SocketTransportOptions>()
            .Configure<IOptions<SidecarOptions>>(static (transport, options) => transport.UnsafePreferInlineScheduling = options.Value.InlineSocketCompletions);
        builder.WebHost.ConfigureKestrel(static (context, kestrel) =>
        {
            var options = kestrel.ApplicationServices.GetRequiredService<IOptions<SidecarOptions>>().Value;
            var endpoints = kestrel.ApplicationServices.GetRequiredService<SidecarEndpoints>();
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = null; // the app sets its own limits; the sidecar streams
            // Header bytes pass as they came, as on the fast path: requests are read as UTF-8 (Kestrel's default) and sent
            // as UTF-8 (HttpForwarder.CreateHandler); responses are read as Latin-1 and written as Latin-1.
            kestrel.ResponseHeaderEncodingSelector = static _ => Encoding.Latin1;
            kestrel.Limits.Http2.MaxStreamsPerConnection = 250;
            BindKestrelLimits(context.Configuration, kestrel.Limits);
            kestrel.Limits.MinResponseDataRate = options.MinResponseDataRate > 0
                ? new MinDataRate(options.MinResponseDataRate, options.MinResponseDataRateGracePeriod)
                : null; // the fast path reads the same limit
            var streams = kestrel.ApplicationServices.GetRequiredService<StreamRegistry>();
            kestrel.Listen(ClientAddress.Bindable(IPAddress.Parse(options.ListenAddress)), options.Port, listen =>
            {
                listen.Use(streams.ConnectionMiddleware);
                if (options.TlsCertificatePath is { } certificate)
                {
                    listen.Protocols = HttpProtocols.Http1AndHttp2; // ALPN picks
                    // Read again when the file changes (a renewed secret), not only at start; relative to the content root,
                    // as UseHttps(path, password) resolved it.
                    var file = new ReloadingCertificate(
                        Path.Combine(kestrel.ApplicationServices.GetRequiredService<IHostEnvironment>().ContentRootPath, certificate),
                        options.TlsCertificatePassword);
                    listen.UseHttps(new TlsHandshakeCallbackOptions
                    {
                        OnConnection = static context => ValueTask.FromResult(((ReloadingCertificate)context.State!).Options),
                        OnConnectionState = file,
                    });
                }
                else
                {
                    // The fast path also serves peer links (always: a forwarding sidecar may have them on while this one has not).
                    var fastPath = Http1FastPath.AppliesTo(options) ? kestrel.ApplicationServices.GetRequiredService<Http1FastPath>() : null;
                    listen.UseHttp1AndHttp2PriorKnowledge(queueHttp2Output: options.InlineSocketCompletions, peerLink: fastPath is null ? null : fastPath.ServePeerLinkAsync);
                    if (fastPath is not null)
                    {
                        listen.Use(fastPath.Middleware(kestrel.Limits));
                    }
                }

                endpoints.Data = listen;
            });
            kestrel.Listen(ClientAddress.Bindable(IPAddress.Parse(options.AdminListenAddress)), options.AdminPort, listen =>
            {
                listen.Protocols = HttpProtocols.Http1;
                listen.Use(static next => connection =>
                {
                    connection.Features.Set(AdminConnectionFeature.Instance);
                    return next(connection);
                });
                endpoints.Admin = listen;
            });
        });

        var app = builder.Build();
        var router = app.Services.GetRequiredService<ShardRouter>();
        var admin = app.Services.GetRequiredService<AdminEndpoints>();
        app.Run(context => context.Features.Get<AdminConnectionFeature>() is null ? router.InvokeAsync(context) : admin.HandleAsync(context));
        return app;
    }

    /// <summary>
    /// Whether a background service (map sync) ended with an exception: .NET 10's host then stops, but exits with code 0
    /// (.NET 11 changes that), so the entry point sets 1 itself and the restart reads as a failure.
    /// </summary>
    public static bool BackgroundServiceFailed(IServiceProvider services) =>
        services.GetServices<IHostedService>().Any(static s => s is BackgroundService { ExecuteTask.IsFaulted: true });

    /// <summary>
    /// Before the first socket exists: .NET's socket engine reads <c>DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS</c> once,
    /// so the process sets it here (when <see cref="SidecarOptions.InlineSocketCompletions"/> is on and the variable is unset).
    /// Only the sidecar's own process calls this: it changes every socket of the process, tests' clients included.
    /// </summary>
    public static void UseInlineSocketCompletions(WebApplication app)
    {
        const string variable = "DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS";
        if (app.Services.GetRequiredService<IOptions<SidecarOptions>>().Value.InlineSocketCompletions && Environment.GetEnvironmentVariable(variable) is null)
        {
            Environment.SetEnvironmentVariable(variable, "1");
        }
    }

    public static IServiceCollection AddShardingSidecar(this IServiceCollection services)
    {
        services.AddOptions<SidecarOptions>().BindConfiguration(SidecarOptions.SectionName).ValidateDataAnnotations().ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IPostConfigureOptions<SidecarOptions>, ConfigureSidecarOptions>());
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<SidecarOptions>, SidecarOptionsValidator>());
        services.TryAddSingleton(TimeProvider.System);
        services.AddMetrics();
        services.AddSingleton<SidecarEndpoints>();
        services.AddSingleton<EpollLoops>();
        services.AddSingleton<IConnectionListenerFactory, EpollTransportFactory>(); // after Kestrel's: asked first, binds IP endpoints
        services.AddSingleton<ShardMapStore>();
        services.AddSingleton<MapViews>();
        services.AddSingleton<SidecarMetrics>();
        services.AddSingleton<OwnerCircuitStates>();
        services.AddSingleton<OwnerResilience>();
        services.AddSingleton<ForwardingProof>();
        services.AddSingleton<StreamRegistry>();
        services.AddHostedService(static sp => sp.GetRequiredService<StreamRegistry>());
        services.AddOptions<HostOptions>().Configure<IOptions<SidecarOptions>>(static (host, options) =>
        {
            // Room for the shutdown drain (grace, then the streams' ends) before the host gives up on Kestrel.
            var needed = options.Value.DrainGrace + TimeSpan.FromSeconds(5);
            if (host.ShutdownTimeout < needed)
            {
                host.ShutdownTimeout = needed;
            }
        });
        services.AddSingleton<HttpForwarder>();
        services.AddSingleton<Http1FastPath>();
        services.AddSingleton<ShardRouter>();
        services.AddSingleton<OwnershipApi>();
        services.AddSingleton<AdminEndpoints>();
        services.AddSingleton(static services => new PrometheusExporter(
            meterNamePrefix: "Sharding", includeRuntime: true, scope: services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>()));
        services.TryAddSingleton<IShardMapSource>(static sp => sp.GetRequiredService<IOptions<SidecarOptions>>().Value.ControlPlaneUrls.Length > 0
            ? ActivatorUtilities.CreateInstance<ControlPlaneMapSource>(sp)
            : ActivatorUtilities.CreateInstance<FileShardMapSource>(sp));
        services.AddHostedService<MapSyncService>();
        return services;
    }

    /// <summary>
    /// Kestrel's limits from configuration (<c>Kestrel:Limits:*</c>, e.g. <c>Kestrel__Limits__KeepAliveTimeout</c>), as a
    /// full ASP.NET Core host binds them and the slim builder does not; over the sidecar's defaults above. Both paths use
    /// them (the fast path reads the same object). <c>MinResponseDataRate</c> is <c>Sidecar:MinResponseDataRate</c>'s.
    /// </summary>
    internal static void BindKestrelLimits(IConfiguration configuration, KestrelServerLimits limits)
    {
        var section = configuration.GetSection("Kestrel:Limits");
        if (section.GetSection(nameof(KestrelServerLimits.MinResponseDataRate)).Exists())
        {
            throw new InvalidOperationException("Kestrel:Limits:MinResponseDataRate is not read: set Sidecar:MinResponseDataRate and Sidecar:MinResponseDataRateGracePeriod.");
        }

        try
        {
            section.Bind(limits, static binder => binder.ErrorOnUnknownConfiguration = true);

            // MinDataRate has no setters, so the binder leaves the default in place: made here (0 bytes/s turns it off).
            var rate = section.GetSection(nameof(KestrelServerLimits.MinRequestBodyDataRate));
            if (rate.Exists())
            {
                var bytesPerSecond = rate.GetValue<double>(nameof(MinDataRate.BytesPerSecond));
                var grace = rate.GetValue(nameof(MinDataRate.GracePeriod), TimeSpan.FromSeconds(5));
                limits.MinRequestBodyDataRate = bytesPerSecond > 0 ? new MinDataRate(bytesPerSecond, grace) : null;
            }
        }
        catch (Exception ex) when (ex is InvalidOperationException or ArgumentException or System.Reflection.TargetInvocationException)
        {
            var reason = ex is System.Reflection.TargetInvocationException { InnerException: { } inner } ? inner.Message : ex.Message;
            throw new InvalidOperationException($"Kestrel:Limits is not valid: {reason}", ex);
        }
    }
}

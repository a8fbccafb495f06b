using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Sharding.Client;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers client-side shard routing: <see cref="AddShardRouting"/> on an HTTP client, <see cref="AddShardRouter"/> alone.</summary>
public static class ShardRoutingServiceCollectionExtensions
{
    /// <summary>
    /// Routes this HTTP client's requests straight to the owner of their shard key (a <see cref="ShardRoutingHandler"/>), following
    /// <paramref name="service"/>'s shard map from the control plane; requests go to their original URI (the Service address)
    /// until a map arrives.
    /// </summary>
    /// <param name="builder">The HTTP client builder.</param>
    /// <param name="service">The sharded service, as the control plane names it.</param>
    /// <param name="configure">Sets <see cref="ShardRoutingOptions.ControlPlaneAddresses"/> and the rest.</param>
    /// <returns>The builder.</returns>
    /// <example><code>services.AddHttpClient("docs", c => c.BaseAddress = new Uri("http://docs.prod:15100"))
    ///     .AddShardRouting("docs", o => o.ControlPlaneAddresses = ["http://sharding-controlplane.sharding-system.svc:8081"]);</code></example>
    public static IHttpClientBuilder AddShardRouting(this IHttpClientBuilder builder, string service, Action<ShardRoutingOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var name = service ?? string.Empty;
        builder.Services.AddShardRouter(name, configure);
        return builder.AddHttpMessageHandler(sp => new ShardRoutingHandler(
            sp.GetRequiredKeyedService<ShardRouter>(name), sp.GetService<ILogger<ShardRoutingHandler>>()));
    }

    /// <summary>
    /// Registers a <see cref="ShardRouter"/> for <paramref name="service"/>: resolve it as <see cref="IShardRouter"/> (keyed by the
    /// service name; the first one registered also unkeyed). Its options are validated when the host starts, and a hosted
    /// service starts the subscription with the host; without a host it starts on first use. Disposed with the container.
    /// </summary>
    /// <param name="services">The services.</param>
    /// <param name="service">The sharded service, as the control plane names it.</param>
    /// <param name="configure">Sets <see cref="ShardRoutingOptions.ControlPlaneAddresses"/> and the rest.</param>
    /// <returns>The services.</returns>
    public static IServiceCollection AddShardRouter(this IServiceCollection services, string service, Action<ShardRoutingOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var name = service ?? string.Empty;
        var options = services.AddOptions<ShardRoutingOptions>(name).Configure(o => o.Service = name);
        if (configure is not null)
        {
            options.Configure(configure);
        }

        options.ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<ShardRoutingOptions>, ShardRoutingOptionsValidator>());
        services.AddMetrics();
        services.TryAddSingleton(sp => new ShardClientMetrics(sp.GetService<IMeterFactory>()));
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, ShardRouterHostedService>());

        foreach (var descriptor in services)
        {
            if (descriptor.ServiceType == typeof(ShardRouterRegistration) && descriptor.ImplementationInstance is ShardRouterRegistration { } existing
                && string.Equals(existing.Service, name, StringComparison.Ordinal))
            {
                return services; // already registered: the extra configure action above still applies
            }
        }

        services.AddSingleton(new ShardRouterRegistration(name));
        services.AddKeyedSingleton(name, static (sp, key) => new ShardRouter(
            sp.GetRequiredService<IOptionsMonitor<ShardRoutingOptions>>().Get((string)key!),
            sp.GetService<ILoggerFactory>(),
            sp.GetRequiredService<ShardClientMetrics>(),
            ownsMetrics: false,
            sp.GetService<TimeProvider>()));
        services.AddKeyedSingleton<IShardRouter>(name, static (sp, key) => sp.GetRequiredKeyedService<ShardRouter>(key));
        services.TryAddSingleton<IShardRouter>(sp => sp.GetRequiredKeyedService<ShardRouter>(name));
        return services;
    }
}

/// <summary>Marks a registered router so the hosted service can start it.</summary>
internal sealed record ShardRouterRegistration(string Service);

/// <summary>Starts every registered <see cref="ShardRouter"/> with the host and stops their subscriptions with it.</summary>
internal sealed class ShardRouterHostedService(IServiceProvider services, IEnumerable<ShardRouterRegistration> registrations) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        foreach (var registration in registrations)
        {
            services.GetRequiredKeyedService<ShardRouter>(registration.Service).Start();
        }

        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        foreach (var registration in registrations)
        {
            await services.GetRequiredKeyedService<ShardRouter>(registration.Service).DisposeAsync().ConfigureAwait(false);
        }
    }
}

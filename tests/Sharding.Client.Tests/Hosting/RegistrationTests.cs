using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Sharding.Client.Tests.Infrastructure;

namespace Sharding.Client.Tests.Hosting;

public sealed class RegistrationTests
{
    [Fact]
    public async Task Start_NoControlPlaneAddress_FailsNamingTheSetting()
    {
        using var host = Build(services => services.AddHttpClient("x").AddShardRouting("sharded-svc"));

        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());

        Assert.Contains("ShardRouting 'sharded-svc': ControlPlaneAddresses is empty", error.Message, StringComparison.Ordinal);
        Assert.Contains("http://sharding-controlplane.sharding-system.svc:8081", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Start_BadControlPlaneUrls_FailsNamingEachEntry()
    {
        using var host = Build(services => services.AddHttpClient("x").AddShardRouting("sharded-svc", o => o.ControlPlaneAddresses = ["127.0.0.1:15001", "ftp://cp:21", "http://ok:15001"]));

        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());

        Assert.Contains("ControlPlaneAddresses[0] '127.0.0.1:15001' is not a valid control-plane URL", error.Message, StringComparison.Ordinal);
        Assert.Contains("ControlPlaneAddresses[1] 'ftp://cp:21'", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("ControlPlaneAddresses[2]", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Start_NoService_FailsSayingWhereToNameIt()
    {
        using var host = Build(services => services.AddShardRouter(" ", o => o.ControlPlaneAddresses = ["http://127.0.0.1:15001"]));

        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());

        Assert.Contains("Service is missing", error.Message, StringComparison.Ordinal);
        Assert.Contains("AddShardRouting(\"sharded-svc\"", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(500, 2000, 1000, 100, 5000, true)]
    [InlineData(0, 2000, 1000, 100, 5000, false)]
    [InlineData(2000, 2000, 1000, 100, 5000, false)]
    [InlineData(500, 2000, 0, 100, 5000, false)]
    [InlineData(500, 2000, 1000, 0, 5000, false)]
    [InlineData(500, 2000, 1000, 600, 500, false)]
    public void Validator_Timings_AtTheirBoundaries(int pingMs, int idleMs, int connectMs, int minMs, int maxMs, bool valid)
    {
        var options = new ShardRoutingOptions
        {
            Service = "svc",
            ControlPlaneAddresses = ["http://127.0.0.1:15001"],
            PingInterval = TimeSpan.FromMilliseconds(pingMs),
            IdleTimeout = TimeSpan.FromMilliseconds(idleMs),
            ConnectTimeout = TimeSpan.FromMilliseconds(connectMs),
            MinReconnectDelay = TimeSpan.FromMilliseconds(minMs),
            MaxReconnectDelay = TimeSpan.FromMilliseconds(maxMs),
        };

        Assert.Equal(valid, new ShardRoutingOptionsValidator().Validate("svc", options).Succeeded);
    }

    [Fact]
    public void Validator_Defaults_NeedOnlyServiceAndAddress()
    {
        var options = new ShardRoutingOptions { Service = "svc", ControlPlaneAddresses = ["https://cp.example"] };

        Assert.Empty(ShardRoutingOptionsValidator.Collect(options));
        Assert.True(options.PreserveHostHeader);
        Assert.Equal(TimeSpan.FromSeconds(2), options.PingInterval);
    }

    [Fact]
    public void Constructor_InvalidOptions_ThrowsWithEveryProblem()
    {
        var error = Assert.Throws<ArgumentException>(() => new ShardRouter(new ShardRoutingOptions()));

        Assert.Contains("Service is missing", error.Message, StringComparison.Ordinal);
        Assert.Contains("ControlPlaneAddresses is empty", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Host_StartAndStop_SubscribesWithoutRequestsAndStopsWithTheHost()
    {
        var unreachable = $"http://127.0.0.1:{LocalCluster.FreePort()}";
        using var host = Build(services =>
        {
            services.AddHttpClient("a").AddShardRouting("svc-a", o => o.ControlPlaneAddresses = [unreachable]);
            services.AddHttpClient("b").AddShardRouting("svc-a");
            services.AddShardRouter("svc-b", o => o.ControlPlaneAddresses = [unreachable]);
        });
        await host.StartAsync();

        var router = host.Services.GetRequiredKeyedService<ShardRouter>("svc-a");
        Assert.Same(router, host.Services.GetRequiredService<IShardRouter>()); // the first registered is the default
        Assert.Same(router, host.Services.GetRequiredKeyedService<IShardRouter>("svc-a"));
        Assert.Equal("svc-b", host.Services.GetRequiredKeyedService<IShardRouter>("svc-b").Service);
        await LocalCluster.Until(() => Task.FromResult(router.State == ShardRouterState.Reconnecting), TimeSpan.FromSeconds(10), "the hosted service did not start the subscription");

        await host.StopAsync();

        Assert.Equal(ShardRouterState.Stopped, router.State);
        await Assert.ThrowsAsync<ObjectDisposedException>(() => router.WaitForMapAsync().AsTask());
    }

    private static IHost Build(Action<IServiceCollection> configure)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        configure(builder.Services);
        return builder.Build();
    }
}

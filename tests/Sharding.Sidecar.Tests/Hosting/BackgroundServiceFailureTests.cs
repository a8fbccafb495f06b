using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Sharding.Sidecar.Hosting;
using Sharding.Sidecar.Tests.Infrastructure;

namespace Sharding.Sidecar.Tests.Hosting;

/// <summary>
/// A background service (map sync) that throws stops the sidecar's host, which .NET 10 lets exit with code 0: the entry
/// point asks <see cref="SidecarHost.BackgroundServiceFailed"/> and exits with 1, so the restart reads as a failure.
/// </summary>
public sealed class BackgroundServiceFailureTests
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ABackgroundServiceThatThrows_IsReportedAsAFailure_ACleanStopIsNot(bool throws)
    {
        var directory = Directory.CreateTempSubdirectory("sharding-bg-failure-").FullName;
        try
        {
            var port = TestSidecar.FreePort();
            var map = Path.Combine(directory, "map.yaml");
            await File.WriteAllTextAsync(map, Cluster.MapYaml([port]));
            var sidecar = await TestSidecar.StartAsync("pod-0", port, TestSidecar.FreePort(), map, configure: builder =>
            {
                builder.Logging.ClearProviders();
                builder.Services.AddHostedService(_ => new Throwing(throws));
            });
            var stopping = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            sidecar.Services.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping.Register(stopping.SetResult);
            if (throws)
            {
                await stopping.Task.WaitAsync(TimeSpan.FromSeconds(10)); // the host stops itself
            }

            var failed = SidecarHost.BackgroundServiceFailed(sidecar.Services);
            await sidecar.DisposeAsync();
            Assert.Equal(throws, failed);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    private sealed class Throwing(bool throws) : BackgroundService
    {
        protected override async Task ExecuteAsync(CancellationToken stoppingToken)
        {
            await Task.Delay(throws ? 50 : Timeout.Infinite, stoppingToken);
            throw new InvalidOperationException("an error nobody expected");
        }
    }
}

using System.Runtime.CompilerServices;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Sharding.ControlPlane.Hosting;
using Sharding.ControlPlane.Leadership;
using Sharding.ControlPlane.Membership;
using Sharding.Testing;

namespace Sharding.ControlPlane.Tests.Hosting;

/// <summary>
/// Leader election and the membership watch retry the errors they expect; one that ends anyway must not leave a replica that
/// serves a frozen view and looks healthy: it is logged (event 304, Critical) and the process stops with exit code 1.
/// </summary>
[Collection(ExitCodeGroup.Name)]
public sealed class BackgroundLoopFailureTests
{
    [Theory]
    [InlineData("membership watch")]
    [InlineData("leader election")]
    public async Task ALoopThatFails_StopsTheControlPlane_WithExitCode1(string loop)
    {
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(3));
        var logs = new CollectingLoggerProvider();
        string[] args =
        [
            "--ControlPlane:ReplicaId=failing",
            "--ControlPlane:HttpUrl=http://127.0.0.1:0",
            "--ControlPlane:GrpcUrl=http://127.0.0.1:0",
            $"--ControlPlane:MembershipFile={cluster.MembershipPath}",
            $"--ControlPlane:LeaseFile={Path.Combine(cluster.Directory, "leader.lock")}",
        ];
        var app = ControlPlaneApp.Build(args, builder =>
        {
            builder.Logging.ClearProviders().AddProvider(logs);
            if (loop == "membership watch")
            {
                builder.Services.Replace(ServiceDescriptor.Singleton<IMembershipSource, FailingMembership>());
            }
            else
            {
                builder.Services.Replace(ServiceDescriptor.Singleton<ILeaderElector, FailingElector>());
            }
        });
        var stopping = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        app.Lifetime.ApplicationStopping.Register(stopping.SetResult);
        try
        {
            await app.StartAsync();
            await stopping.Task.WaitAsync(TimeSpan.FromSeconds(10));

            Assert.Equal(1, Environment.ExitCode);
            var entry = Assert.Single(logs.Entries, e => e.Id.Id == 304);
            Assert.Equal(LogLevel.Critical, entry.Level);
            Assert.Equal($"The {loop} loop ended before shutdown; the control plane stops with exit code 1 so that it is restarted", entry.Message);
        }
        finally
        {
            Environment.ExitCode = 0;
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }

    /// <summary>A clean shutdown ends both loops too: that is not a failure.</summary>
    [Fact]
    public async Task ACleanShutdown_IsNotAFailure()
    {
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(3));
        var logs = new CollectingLoggerProvider();
        await using (var replica = await ControlPlaneReplica.StartAsync(cluster.Directory, "clean", logs: logs))
        {
            Assert.True(await replica.WaitAsync(static r => r.Elector.Current.IsLeader, TimeSpan.FromSeconds(10)));
        }

        Assert.Equal(0, Environment.ExitCode);
        Assert.DoesNotContain(logs.Entries, e => e.Id.Id == 304);
    }

    /// <summary>
    /// Any background service that throws stops the host, which .NET 10 lets exit with code 0: the entry point asks
    /// <see cref="ControlPlaneApp.BackgroundServiceFailed"/> and exits with 1. A clean stop is not a failure.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ABackgroundServiceThatThrows_IsReportedAsAFailure_ACleanStopIsNot(bool throws)
    {
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(3));
        string[] args =
        [
            "--ControlPlane:HttpUrl=http://127.0.0.1:0",
            "--ControlPlane:GrpcUrl=http://127.0.0.1:0",
            $"--ControlPlane:MembershipFile={cluster.MembershipPath}",
            $"--ControlPlane:LeaseFile={Path.Combine(cluster.Directory, "leader.lock")}",
        ];
        var app = ControlPlaneApp.Build(args, builder =>
        {
            builder.Logging.ClearProviders();
            builder.Services.AddHostedService(_ => new Throwing(throws));
        });
        var stopping = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        app.Lifetime.ApplicationStopping.Register(stopping.SetResult);
        await app.StartAsync();
        if (throws)
        {
            await stopping.Task.WaitAsync(TimeSpan.FromSeconds(10)); // the host stops itself
        }

        await app.StopAsync();
        Assert.Equal(throws, ControlPlaneApp.BackgroundServiceFailed(app.Services));
        await app.DisposeAsync();
    }

    private sealed class Throwing(bool throws) : BackgroundService
    {
        protected override async Task ExecuteAsync(CancellationToken stoppingToken)
        {
            await Task.Delay(throws ? 50 : Timeout.Infinite, stoppingToken);
            throw new InvalidOperationException("an error nobody expected");
        }
    }

    private sealed class FailingMembership : IMembershipSource
    {
        public async IAsyncEnumerable<MembershipSnapshot> WatchAsync([EnumeratorCancellation] CancellationToken cancellationToken)
        {
            yield return MembershipSnapshot.Empty;
            await Task.Delay(50, cancellationToken);
            throw new InvalidOperationException("an error nobody expected");
        }
    }

    private sealed class FailingElector : ILeaderElector
    {
        public LeadershipState Current => LeadershipState.Unknown;

        public event Action<LeadershipState>? Changed { add { } remove { } }

        public async Task RunAsync(CancellationToken cancellationToken)
        {
            await Task.Delay(50, cancellationToken);
            throw new InvalidOperationException("an error nobody expected");
        }

        public bool RaiseEpochAbove(long epoch) => false;
    }
}

/// <summary>Tests that read or set the process's exit code do not run beside each other.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ExitCodeGroup
{
    public const string Name = "exit code";
}

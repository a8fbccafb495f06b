using System.Net;
using System.Net.Sockets;
using Sharding.Cli.Demo;
using Sharding.Testing;

namespace Sharding.EndToEnd.Tests;

/// <summary>
/// The demo chooses its ports before its child processes bind them, so another program can take one in between (this
/// happened in CI, with the test suites choosing from the same range): such a start is retried on new ports.
/// </summary>
public sealed class LocalClusterStartTests
{
    [Fact]
    public async Task PortTakenBeforeTheChildBindsIt_ThatStartIsRetriedOnNewPorts()
    {
        using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        using var taken = new TcpListener(IPAddress.Loopback, LoopbackPorts.Free());
        taken.Start();
        var takenPort = ((IPEndPoint)taken.LocalEndpoint).Port;
        var picks = 0;

        // Picks 1-3 are the pod's app, sidecar and admin ports, 4-5 the replica's HTTP and gRPC ports: the app's and the
        // replica's HTTP port collide once.
        var work = Directory.CreateTempSubdirectory("sharding-ports-test-").FullName;
        await using var cluster = new LocalCluster(ComponentPaths.Locate(), work)
        {
            PickPort = () => ++picks is 1 or 4 ? takenPort : LoopbackPorts.Free(),
        };

        await cluster.StartAsync(1, 1, cancel.Token);

        var pod = cluster.Pods.Single();
        var cp = cluster.ControlPlanes.Single();
        Assert.NotEqual(takenPort, cp.HttpPort);
        Assert.NotEqual(takenPort, pod.AppPort);
        Assert.Equal(6, cluster.StartedProcesses.Count); // the replica, the app and the sidecar twice each
        using var http = new HttpClient();
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync(new Uri(pod.AdminUrl + "/readyz"), cancel.Token)).StatusCode);
        foreach (var log in new[] { "cp-0.log", "demo-0-app.log" })
        {
            Assert.Contains("address already in use", await File.ReadAllTextAsync(Path.Combine(work, log), cancel.Token), StringComparison.OrdinalIgnoreCase);
        }
    }

    /// <summary>
    /// Two picks that land on the same free port are not given to one process: a sidecar whose data and admin ports were
    /// the same failed its option validation (no bind error, so no retry), which failed a CI run.
    /// </summary>
    [Fact]
    public async Task TheSameFreePortPickedTwice_IsNotGivenToOneProcess()
    {
        using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var picks = 0;
        var repeated = LoopbackPorts.Free();

        // Picks 1-3 are the pod's app, sidecar and admin ports: the sidecar's two come up the same.
        var work = Directory.CreateTempSubdirectory("sharding-ports-test-").FullName;
        await using var cluster = new LocalCluster(ComponentPaths.Locate(), work)
        {
            PickPort = () => ++picks is 2 or 3 ? repeated : LoopbackPorts.Free(),
        };

        await cluster.StartAsync(1, 1, cancel.Token);

        var pod = cluster.Pods.Single();
        Assert.Equal(repeated, pod.SidecarPort);
        Assert.NotEqual(pod.SidecarPort, pod.AdminPort);
        Assert.Equal(3, cluster.StartedProcesses.Count); // the replica, the app and the sidecar, once each: no retry
        using var http = new HttpClient();
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync(new Uri(pod.AdminUrl + "/readyz"), cancel.Token)).StatusCode);
    }
}

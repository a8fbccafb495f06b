using System.Net.Sockets;
using System.Reflection;
using System.Runtime.InteropServices;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Sharding.Sidecar.Tests.Infrastructure;
using Sharding.Sidecar.Transport;
using Sharding.Testing;

namespace Sharding.Sidecar.Tests.Transport;

/// <summary>
/// An event loop whose epoll_wait fails cannot serve its connections any more: it says so (to the sidecar, which logs it
/// and stops with exit code 1, so the pod restarts) instead of an exception that kills the process before the log is out.
/// </summary>
public sealed class EpollLoopFailureTests
{
    [Fact]
    public async Task A_failing_epoll_wait_ends_the_loop_and_is_reported()
    {
        var failed = new TaskCompletionSource<(EpollLoop, Exception)>(TaskCreationOptions.RunContinuationsAsynchronously);
        var loop = new EpollLoop("test-io", 0, inline: true, onFatal: (l, error) => failed.TrySetResult((l, error)));
        Break(loop);

        var (reported, error) = await failed.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Same(loop, reported);
        Assert.IsType<SocketException>(error);
        loop.Dispose(); // the ended thread left its fds to Dispose: it returns at once and closes them
    }

    [Fact]
    public async Task The_sidecar_logs_a_failed_loop_and_stops_with_exit_code_1()
    {
        var directory = Directory.CreateTempSubdirectory("sharding-loop-failure-").FullName;
        var exitCode = Environment.ExitCode;
        try
        {
            var port = TestSidecar.FreePort();
            var map = Path.Combine(directory, "map.yaml");
            await File.WriteAllTextAsync(map, Cluster.MapYaml([port]));
            using var logs = new CollectingLoggerProvider();
            await using var sidecar = await TestSidecar.StartAsync(
                "pod-0", port, TestSidecar.FreePort(), map, new Dictionary<string, string?> { ["Sidecar:IoThreads"] = "2" }, logs: logs);
            var stopping = sidecar.Services.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping;
            var stopped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using var registration = stopping.Register(() => stopped.TrySetResult());

            var loops = sidecar.Services.GetRequiredService<EpollLoops>();
            var broken = loops.Next();
            Break(broken);

            await stopped.Task.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.True(broken.Failed);
            for (var i = 0; i < 8; i++)
            {
                Assert.NotSame(broken, loops.Next()); // connections accepted while the others drain go to a working loop
            }

            var entry = Assert.Single(logs.Entries, e => e.Id.Id == 3);
            Assert.Equal(LogLevel.Critical, entry.Level);
            Assert.Contains("sharding-io-", entry.Message, StringComparison.Ordinal);
            Assert.Equal(1, Environment.ExitCode);
        }
        finally
        {
            Environment.ExitCode = exitCode; // this test process's own
            Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>
    /// Puts /dev/null in place of the loop's epoll fd (its blocked epoll_wait keeps the old one) and wakes it: the next
    /// epoll_wait fails with EINVAL. The fd number stays the loop's, so nothing else's fd is touched.
    /// </summary>
    private static void Break(EpollLoop loop)
    {
        var epoll = Field(loop, "_epoll");
        using var devNull = File.OpenHandle("/dev/null");
        Assert.Equal(epoll, Dup2((int)devNull.DangerousGetHandle(), epoll));
        Native.EventFdSignal(Field(loop, "_wake"));
    }

    private static int Field(EpollLoop loop, string name) =>
        (int)typeof(EpollLoop).GetField(name, BindingFlags.Instance | BindingFlags.NonPublic)!.GetValue(loop)!;

#pragma warning disable SYSLIB1054, CA5392 // LibraryImport would need unsafe code in the test project for this one call
    [DllImport("libc", EntryPoint = "dup2", SetLastError = true)]
    private static extern int Dup2(int oldFd, int newFd);
#pragma warning restore SYSLIB1054, CA5392
}

using Microsoft.Extensions.Options;
using Sharding.Sidecar.Hosting;
using Sharding.Sidecar.Tests.Infrastructure;

namespace Sharding.Sidecar.Tests.Hosting;

/// <summary>
/// Settings that cannot work are refused at start, naming the key: a timeout longer than .NET timers take (it used to start,
/// then every request got a 500 or a reset connection), Polly's one-day limits, and the app's port reused by the sidecar.
/// </summary>
public sealed class OptionLimitsTests
{
    /// <summary>A one-member map (the sidecar's own pod on <paramref name="port"/>) in a directory of its own.</summary>
    private static string MapFile(int port)
    {
        var path = Path.Combine(Directory.CreateTempSubdirectory("sharding-map-").FullName, "map.yaml");
        File.WriteAllText(path, $"service: echo\nmembers:\n  - {{ name: pod-0, address: \"127.0.0.1:{port}\" }}\n");
        return path;
    }

    private static SidecarOptions Valid() => new() { PodName = "pod-0", ForwardingSecret = new string('s', 16), MapFile = "/tmp/map.yaml" };

    [Theory]
    [InlineData("Sidecar:ResponseHeadersTimeout")]
    [InlineData("Sidecar:ActivityTimeout")]
    [InlineData("Sidecar:DrainGrace")]
    [InlineData("Sidecar:MaxConnectionAge")]
    [InlineData("Sidecar:StreamThreshold")]
    public async Task Sidecar_ATimeoutOfAYear_IsRefusedAtStart_NamingTheKey(string key)
    {
        var port = TestSidecar.FreePort();
        var path = MapFile(port);
        var failure = await Assert.ThrowsAsync<OptionsValidationException>(() =>
            TestSidecar.StartAsync("pod-0", port, TestSidecar.FreePort(), path, new Dictionary<string, string?> { [key] = "365.00:00:00" }));
        Assert.Contains(failure.Failures, f => f.StartsWith(key + " must be at most ", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("-1")]
    [InlineData("1001")]
    public async Task Sidecar_AnIdleYieldCountOutOfRange_IsRefusedAtStart_NamingTheKey(string value)
    {
        var port = TestSidecar.FreePort();
        var failure = await Assert.ThrowsAsync<OptionsValidationException>(() =>
            TestSidecar.StartAsync("pod-0", port, TestSidecar.FreePort(), MapFile(port), new Dictionary<string, string?> { ["Sidecar:IdleYields"] = value }));
        Assert.Contains(failure.Failures, f => f.Contains("IdleYields", StringComparison.Ordinal) && f.Contains("between 0 and 1000", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Sidecar_AppPortEqualToTheDataPort_IsRefusedAtStart()
    {
        var port = TestSidecar.FreePort();
        var path = MapFile(port);
        var failure = await Assert.ThrowsAsync<OptionsValidationException>(() => TestSidecar.StartAsync("pod-0", port, port, path));
        Assert.Contains(failure.Failures, f => f.StartsWith($"Sidecar:Port and Sidecar:AppPort are both {port}", StringComparison.Ordinal));
    }

    [Fact]
    public void Validate_LimitsAndPortConflicts_AreNamed_AndTheLimitsThemselvesPass()
    {
        var options = Valid();
        options.Port = 8080;
        options.AdminPort = 8080 + 1;
        options.AppPort = 8080;
        options.ConnectTimeout = TimeSpan.FromDays(30);
        options.RetryBaseDelay = TimeSpan.FromDays(2);
        options.BreakerDuration = TimeSpan.FromDays(2);
        options.BreakerSamplingDuration = TimeSpan.FromDays(2);
        options.MaxConnectionAge = TimeSpan.FromDays(48); // under the timer limit, over it with 10 % jitter
        var failures = new SidecarOptionsValidator().Validate(null, options).Failures!.ToList();
        foreach (var key in new[] { "ConnectTimeout", "RetryBaseDelay", "BreakerDuration", "BreakerSamplingDuration", "MaxConnectionAge" })
        {
            Assert.Contains(failures, f => f.StartsWith($"Sidecar:{key} must be at most ", StringComparison.Ordinal));
        }

        Assert.Contains(failures, f => f.StartsWith("Sidecar:Port and Sidecar:AppPort are both 8080", StringComparison.Ordinal));
        Assert.Equal(6, failures.Count);

        var admin = Valid();
        admin.AdminPort = admin.AppPort;
        Assert.Contains(new SidecarOptionsValidator().Validate(null, admin).Failures!, f => f.StartsWith("Sidecar:AdminPort and Sidecar:AppPort are both", StringComparison.Ordinal));

        // The app on a Unix socket, or a sidecar port bound to another (non-loopback) address: no conflict.
        var socket = Valid();
        socket.AppUnixSocket = "/tmp/app.sock";
        socket.AppPort = socket.Port;
        Assert.True(new SidecarOptionsValidator().Validate(null, socket).Succeeded);
        var podIp = Valid();
        podIp.ListenAddress = "10.1.2.3";
        podIp.AppPort = podIp.Port;
        Assert.True(new SidecarOptionsValidator().Validate(null, podIp).Succeeded);

        var atTheLimits = Valid();
        atTheLimits.ResponseHeadersTimeout = SidecarOptionsValidator.TimerMax;
        atTheLimits.ActivityTimeout = SidecarOptionsValidator.TimerMax;
        atTheLimits.DrainGrace = SidecarOptionsValidator.TimerMax;
        atTheLimits.StreamThreshold = SidecarOptionsValidator.TimerMax;
        atTheLimits.ConnectTimeout = SidecarOptionsValidator.ConnectTimeoutMax;
        atTheLimits.BreakerDuration = TimeSpan.FromDays(1);
        atTheLimits.BreakerSamplingDuration = TimeSpan.FromDays(1);
        atTheLimits.RetryBaseDelay = TimeSpan.FromDays(1);
        atTheLimits.MaxConnectionAge = TimeSpan.FromDays(45);
        atTheLimits.ResponseHeadersTimeout = Timeout.InfiniteTimeSpan;
        Assert.True(new SidecarOptionsValidator().Validate(null, atTheLimits).Succeeded, string.Join('\n', new SidecarOptionsValidator().Validate(null, atTheLimits).Failures ?? []));
    }
}

using Sharding.Sidecar.Hosting;

namespace Sharding.Sidecar.Tests.Hosting;

public sealed class SidecarOptionsValidatorTests
{
    private static SidecarOptions Valid() => new() { PodName = "pod-0", ForwardingSecret = new string('s', 16), MapFile = "/tmp/map.yaml" };

    [Fact]
    public void Validate_Defaults_WithRequiredValues_Succeed() =>
        Assert.True(new SidecarOptionsValidator().Validate(null, Valid()).Succeeded);

    [Fact]
    public void Validate_ListsEveryProblem_NamingTheKey()
    {
        var options = new SidecarOptions
        {
            ForwardingSecret = "short",
            ListenAddress = "not-an-ip",
            Port = 9000,
            AdminPort = 9000,
            ConnectTimeout = TimeSpan.Zero,
            BreakerFailureRatio = 2,
            BreakerSamplingDuration = TimeSpan.FromMilliseconds(10),
        };

        var result = new SidecarOptionsValidator().Validate(null, options);

        Assert.True(result.Failed);
        var failures = result.Failures!.ToList();
        Assert.Contains(failures, f => f.StartsWith("Sidecar:PodName is empty", StringComparison.Ordinal) && f.Contains("POD_NAME", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.StartsWith("Sidecar:ForwardingSecret must be at least 16", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.StartsWith("Sidecar:MapFile is empty", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.StartsWith("Sidecar:ListenAddress 'not-an-ip'", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.StartsWith("Sidecar:Port and Sidecar:AdminPort are both 9000", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.StartsWith("Sidecar:ConnectTimeout must be positive", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.StartsWith("Sidecar:BreakerFailureRatio", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.StartsWith("Sidecar:BreakerSamplingDuration", StringComparison.Ordinal));
        Assert.Equal(8, failures.Count);
    }
}

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
        Assert.Contains(failures, f => f.StartsWith("Sidecar:ControlPlaneUrls (e.g.", StringComparison.Ordinal) && f.Contains("Sidecar:MapFile", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.StartsWith("Sidecar:ListenAddress 'not-an-ip'", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.StartsWith("Sidecar:Port and Sidecar:AdminPort are both 9000", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.StartsWith("Sidecar:ConnectTimeout must be positive", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.StartsWith("Sidecar:BreakerFailureRatio", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.StartsWith("Sidecar:BreakerSamplingDuration", StringComparison.Ordinal));
        Assert.Equal(8, failures.Count);
    }

    [Fact]
    public void Validate_MinResponseDataRate_NegativeOrAShortGracePeriod_IsNamed_AndZeroTurnsItOff()
    {
        var negative = Valid();
        negative.MinResponseDataRate = -1;
        Assert.Contains(new SidecarOptionsValidator().Validate(null, negative).Failures!, f => f.StartsWith("Sidecar:MinResponseDataRate must be zero (off)", StringComparison.Ordinal));

        var shortGrace = Valid();
        shortGrace.MinResponseDataRateGracePeriod = TimeSpan.FromSeconds(1);
        Assert.Contains(new SidecarOptionsValidator().Validate(null, shortGrace).Failures!, f => f.StartsWith("Sidecar:MinResponseDataRateGracePeriod must be more than 1 s", StringComparison.Ordinal));

        var off = Valid();
        off.MinResponseDataRate = 0;
        off.MinResponseDataRateGracePeriod = TimeSpan.Zero;
        Assert.True(new SidecarOptionsValidator().Validate(null, off).Succeeded);
    }

    [Fact]
    public void Validate_BothOrBadControlPlaneSettings_NamesEachProblem()
    {
        var both = Valid();
        both.ControlPlaneUrls = ["http://127.0.0.1:15001"];
        both.Service = "svc";
        Assert.Contains(new SidecarOptionsValidator().Validate(null, both).Failures!, f => f.StartsWith("Sidecar:MapFile and Sidecar:ControlPlaneUrls are both set", StringComparison.Ordinal));

        var bad = Valid();
        bad.MapFile = null;
        bad.ControlPlaneUrls = ["not a url", "ftp://x"];
        var failures = new SidecarOptionsValidator().Validate(null, bad).Failures!.ToList();
        Assert.Contains(failures, f => f == "Sidecar:ControlPlaneUrls entry 'not a url' is not an absolute http(s) URL.");
        Assert.Contains(failures, f => f == "Sidecar:ControlPlaneUrls entry 'ftp://x' is not an absolute http(s) URL.");
        Assert.Contains(failures, f => f.StartsWith("Sidecar:Service is required with Sidecar:ControlPlaneUrls", StringComparison.Ordinal));

        var good = Valid();
        good.MapFile = null;
        good.ControlPlaneUrls = ["http://127.0.0.1:15001", "http://127.0.0.1:15011"];
        good.Service = "svc";
        Assert.True(new SidecarOptionsValidator().Validate(null, good).Succeeded);
    }
}

using Microsoft.Extensions.Options;

namespace Sharding.Sidecar.Hosting;

/// <summary>Checks <see cref="SidecarOptions"/> and lists every problem with the key to fix.</summary>
internal sealed class SidecarOptionsValidator : IValidateOptions<SidecarOptions>
{
    /// <summary>The longest delay .NET timers take (<c>CancelAfter</c>, <c>Task.Delay</c>, <c>ITimer</c>): 2^32 − 2 ms, about
    /// 49.7 days. A longer timeout was accepted at start and then threw on every request (500s, reset connections), or
    /// silently never fired in a fire-and-forget drain.</summary>
    internal static readonly TimeSpan TimerMax = TimeSpan.FromMilliseconds(uint.MaxValue - 1);

    /// <summary>The longest <c>SocketsHttpHandler.ConnectTimeout</c>: <see cref="int.MaxValue"/> ms, about 24.8 days.</summary>
    internal static readonly TimeSpan ConnectTimeoutMax = TimeSpan.FromMilliseconds(int.MaxValue);

    /// <summary>Polly's limit for retry delays and circuit-breaker durations: one day.</summary>
    internal static readonly TimeSpan PollyMax = TimeSpan.FromDays(1);

    public ValidateOptionsResult Validate(string? name, SidecarOptions options)
    {
        var failures = new List<string>();
        const string P = SidecarOptions.SectionName + ":";
        if (string.IsNullOrWhiteSpace(options.PodName))
        {
            failures.Add($"{P}PodName is empty: set it or the POD_NAME environment variable (downward API metadata.name) to this pod's member name.");
        }

        if (string.IsNullOrEmpty(options.ForwardingSecret) || options.ForwardingSecret.Length < 16)
        {
            failures.Add($"{P}ForwardingSecret must be at least 16 characters and the same on every sidecar (e.g. from a Kubernetes Secret via Sidecar__ForwardingSecret).");
        }

        var hasFile = !string.IsNullOrWhiteSpace(options.MapFile);
        var hasControlPlane = options.ControlPlaneUrls.Length > 0;
        if (hasFile == hasControlPlane)
        {
            failures.Add(hasFile
                ? $"{P}MapFile and {P}ControlPlaneUrls are both set: choose the control plane (production) or a static map file (no control plane)."
                : $"{P}ControlPlaneUrls (e.g. http://sharding-controlplane.sharding-system.svc:8081) or {P}MapFile (a JSON or YAML shard-map file) is required.");
        }

        foreach (var url in options.ControlPlaneUrls)
        {
            if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            {
                failures.Add($"{P}ControlPlaneUrls entry '{url}' is not an absolute http(s) URL.");
            }
        }

        if (hasControlPlane && string.IsNullOrWhiteSpace(options.Service))
        {
            failures.Add($"{P}Service is required with {P}ControlPlaneUrls: it names the sharded service whose map to follow.");
        }

        if (!System.Net.IPAddress.TryParse(options.ListenAddress, out _))
        {
            failures.Add($"{P}ListenAddress '{options.ListenAddress}' is not an IP address.");
        }

        if (!System.Net.IPAddress.TryParse(options.AdminListenAddress, out _))
        {
            failures.Add($"{P}AdminListenAddress '{options.AdminListenAddress}' is not an IP address.");
        }

        if (options.Port != 0 && options.Port == options.AdminPort)
        {
            failures.Add($"{P}Port and {P}AdminPort are both {options.Port}: give the admin API its own port.");
        }

        // The app listens on 127.0.0.1:AppPort: a sidecar port on the same number over loopback either fails to bind (or takes
        // the app's port first) or, for the data port, forwards every locally owned request to itself, over and over.
        if (options.AppUnixSocket is null && options.AppPort == options.Port && CoversLoopback(options.ListenAddress))
        {
            failures.Add($"{P}Port and {P}AppPort are both {options.Port}: the sidecar would forward the app's requests to itself; give the app another port.");
        }

        if (options.AppUnixSocket is null && options.AppPort == options.AdminPort && CoversLoopback(options.AdminListenAddress))
        {
            failures.Add($"{P}AdminPort and {P}AppPort are both {options.AdminPort}: the admin port and the app cannot both listen on it; give the admin API its own port.");
        }

        if (options.AppUnixSocket is null && options.AppPort is < 1 or > 65535)
        {
            failures.Add($"{P}AppPort {options.AppPort} must be 1..65535 (or set {P}AppUnixSocket).");
        }

        Positive(failures, $"{P}ProofWindow", options.ProofWindow);
        Positive(failures, $"{P}ConnectTimeout", options.ConnectTimeout);
        Positive(failures, $"{P}RetryBaseDelay", options.RetryBaseDelay);
        Positive(failures, $"{P}BreakerDuration", options.BreakerDuration);
        Positive(failures, $"{P}StreamThreshold", options.StreamThreshold);
        Positive(failures, $"{P}DrainGrace", options.DrainGrace);
        AtMost(failures, $"{P}ConnectTimeout", options.ConnectTimeout, ConnectTimeoutMax);
        AtMost(failures, $"{P}RetryBaseDelay", options.RetryBaseDelay, PollyMax);
        AtMost(failures, $"{P}BreakerDuration", options.BreakerDuration, PollyMax);
        AtMost(failures, $"{P}BreakerSamplingDuration", options.BreakerSamplingDuration, PollyMax);
        AtMost(failures, $"{P}StreamThreshold", options.StreamThreshold, TimerMax);
        AtMost(failures, $"{P}DrainGrace", options.DrainGrace, TimerMax);
        AtMost(failures, $"{P}ResponseHeadersTimeout", options.ResponseHeadersTimeout, TimerMax, "; for no limit use 0 or -00:00:00.001");
        AtMost(failures, $"{P}ActivityTimeout", options.ActivityTimeout, TimerMax, "; for no limit use 0");
        if (options.MaxConnectionAgeJitter is >= 0 and <= 1)
        {
            // The age plus its jitter is one Task.Delay.
            AtMost(failures, $"{P}MaxConnectionAge", options.MaxConnectionAge, TimerMax / (1 + options.MaxConnectionAgeJitter), " (with its jitter); for no limit use 0");
        }

        if (options.SkewWait < TimeSpan.Zero || options.SkewWait > TimeSpan.FromSeconds(10))
        {
            failures.Add($"{P}SkewWait must be 0 (never wait) .. 00:00:10, got {options.SkewWait}; the default 00:00:00.1 covers map propagation.");
        }

        if (options.MaxConnectionAge < TimeSpan.Zero)
        {
            failures.Add($"{P}MaxConnectionAge must be zero (off) or positive, got {options.MaxConnectionAge}.");
        }
        if (options.BreakerSamplingDuration < TimeSpan.FromMilliseconds(500))
        {
            failures.Add($"{P}BreakerSamplingDuration must be at least 00:00:00.5 (Polly's minimum), got {options.BreakerSamplingDuration}.");
        }

        if (options.ResponseHeadersTimeout < TimeSpan.Zero && options.ResponseHeadersTimeout != Timeout.InfiniteTimeSpan)
        {
            failures.Add($"{P}ResponseHeadersTimeout must be positive, zero (off) or -00:00:00.001 (infinite).");
        }

        if (options.ActivityTimeout < TimeSpan.Zero)
        {
            failures.Add($"{P}ActivityTimeout must be zero (off) or positive.");
        }

        if (!(options.MinResponseDataRate >= 0) || double.IsInfinity(options.MinResponseDataRate))
        {
            failures.Add($"{P}MinResponseDataRate must be zero (off) or a positive number of bytes per second, got {options.MinResponseDataRate}.");
        }
        else if (options.MinResponseDataRate > 0 && options.MinResponseDataRateGracePeriod <= TimeSpan.FromSeconds(1))
        {
            // Kestrel checks rates once a second and refuses a shorter grace period (MinDataRate).
            failures.Add($"{P}MinResponseDataRateGracePeriod must be more than 1 s, got {options.MinResponseDataRateGracePeriod}.");
        }

        if (options.ConnectRetries is < 0 or > 10)
        {
            failures.Add($"{P}ConnectRetries must be 0..10, got {options.ConnectRetries}.");
        }

        if (options.BreakerFailureRatio is <= 0 or > 1)
        {
            failures.Add($"{P}BreakerFailureRatio must be in (0, 1], got {options.BreakerFailureRatio}.");
        }

        if (options.BreakerMinimumThroughput < 2)
        {
            failures.Add($"{P}BreakerMinimumThroughput must be at least 2, got {options.BreakerMinimumThroughput}.");
        }

        if (options.TlsCertificatePath is { } cert && !File.Exists(cert))
        {
            failures.Add($"{P}TlsCertificatePath '{cert}' does not exist.");
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }

    private static void AtMost(List<string> failures, string key, TimeSpan value, TimeSpan max, string? hint = null)
    {
        if (value > max)
        {
            failures.Add($"{key} must be at most {max:c}, got {value:c}{hint}.");
        }
    }

    private static bool CoversLoopback(string address) =>
        System.Net.IPAddress.TryParse(address, out var ip)
        && (ip.Equals(System.Net.IPAddress.Any) || ip.Equals(System.Net.IPAddress.IPv6Any) || System.Net.IPAddress.IsLoopback(ip));

    private static void Positive(List<string> failures, string key, TimeSpan value)
    {
        if (value <= TimeSpan.Zero)
        {
            failures.Add($"{key} must be positive, got {value}.");
        }
    }
}

/// <summary>Fills <see cref="SidecarOptions.PodName"/> from the downward-API variable <c>POD_NAME</c> when unset.</summary>
internal sealed class ConfigureSidecarOptions : IPostConfigureOptions<SidecarOptions>
{
    public void PostConfigure(string? name, SidecarOptions options)
    {
        if (string.IsNullOrWhiteSpace(options.PodName))
        {
            options.PodName = Environment.GetEnvironmentVariable("POD_NAME") ?? string.Empty;
        }
    }
}

namespace Sharding.SampleApp;

/// <summary>Settings of the sample app (section <c>SampleApp</c>, or the environment variables named below).</summary>
internal sealed class SampleAppOptions
{
    public const string Section = "SampleApp";

    /// <summary>This pod's name (<c>POD_NAME</c>), echoed in every reply so tests see who served a request.</summary>
    public string PodName { get; set; } = "sample-0";

    /// <summary>
    /// The sidecar's admin URL (<c>SIDECAR_ADMIN_URL</c>, e.g. <c>http://127.0.0.1:15090</c>): every served key is checked
    /// against its ownership API. Empty turns the misroute detector off (benchmarks).
    /// </summary>
    public string SidecarAdminUrl { get; set; } = string.Empty;

    /// <summary>How often a watch stream sends the key's value even when it did not change (a heartbeat).</summary>
    public TimeSpan WatchHeartbeat { get; set; } = TimeSpan.FromSeconds(1);

    public void ApplyEnvironment()
    {
        if (Environment.GetEnvironmentVariable("POD_NAME") is { Length: > 0 } pod)
        {
            PodName = pod;
        }

        if (Environment.GetEnvironmentVariable("SIDECAR_ADMIN_URL") is { Length: > 0 } admin)
        {
            SidecarAdminUrl = admin;
        }
    }
}

using Microsoft.Extensions.Options;
using Sharding.Mapping;
using Sharding.Protocol;
using Sharding.Sidecar.Hosting;

namespace Sharding.Sidecar.MapSync;

/// <summary>
/// Feeds the store from the control plane's <c>sharding.v1.Assignments/Watch</c> stream (any replica; the watcher rotates over
/// them with jittered backoff, verifies every table's checksum and keeps the last map while disconnected: static stability).
/// </summary>
internal sealed partial class ControlPlaneMapSource(
    IOptions<SidecarOptions> options, SidecarMetrics metrics, TimeProvider timeProvider, ILoggerFactory loggerFactory) : IShardMapSource
{
    private readonly ILogger _logger = loggerFactory.CreateLogger<ControlPlaneMapSource>();

    public async Task RunAsync(ShardMapStore store, CancellationToken cancellationToken)
    {
        var settings = options.Value;
        var watcher = new AssignmentsWatcher(
            new AssignmentsWatcherOptions
            {
                ControlPlaneUrls = [.. settings.ControlPlaneUrls.Select(static u => new Uri(u))],
                Service = settings.Service,
                SubscriberName = settings.PodName,
                TimeProvider = timeProvider,
            },
            invoker: null,
            logger: loggerFactory.CreateLogger<AssignmentsWatcher>());
        await using (watcher.ConfigureAwait(false))
        {
            // The watcher keeps its own store per service; every map it applies (checksum verified) goes into ours, which
            // refuses anything not newer, so a reconnect to a lagging replica can never move the sidecar backwards.
            watcher.MapApplied += applied =>
            {
                store.TryPublish(applied.Map);
                metrics.MapLoaded(ok: true);
            };
            var connected = false;
            var checksumFailures = 0L;
            watcher.StatusChanged += status =>
            {
                // An update whose rebuilt table does not match its checksum is refused (and a snapshot asked for instead).
                for (; checksumFailures < status.ChecksumFailures; checksumFailures++)
                {
                    metrics.MapLoaded(ok: false);
                }

                if (status.Connected != connected)
                {
                    connected = status.Connected;
                    Log.SubscriptionChanged(_logger, settings.Service, status.Connected, status.ControlPlane, status.Generation);
                }
            };
            await watcher.RunAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 720, EventName = "SubscriptionChanged", Level = LogLevel.Information,
            Message = "Control-plane subscription for {Service}: connected {Connected} (replica {ControlPlane}); serving generation {Generation}")]
        public static partial void SubscriptionChanged(ILogger logger, string service, bool connected, Uri? controlPlane, long generation);
    }
}

using System.Net;
using Sharding.Sidecar.Hosting;
using Sharding.Sidecar.Transport;

namespace Sharding.Sidecar.PeerLink;

/// <summary>
/// The links to one other sidecar: one per event loop, opened on first use, so a tunnel's frames are written and read on
/// the thread of the client connection it serves. A sidecar that does not speak the link is asked again after a minute.
/// </summary>
internal sealed partial class PeerLinks : IDisposable
{
    /// <summary>How long a sidecar that answered as a plain HTTP/2 server is reached over HTTP/1.1 connections.</summary>
    public static readonly TimeSpan UnsupportedFor = TimeSpan.FromMinutes(1);

    private readonly Lock _lock = new();
    private readonly Task<LinkConnection?>?[] _links;
    private readonly EndPoint _endPoint;
    private readonly TimeSpan _connectTimeout;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly SidecarMetrics? _metrics;
    private long _unsupportedSince = long.MinValue;
    private bool _disposed;

    public PeerLinks(EndPoint endPoint, int loops, TimeSpan connectTimeout, TimeProvider time, SidecarMetrics? metrics, ILogger logger)
    {
        _metrics = metrics;
        _links = new Task<LinkConnection?>?[loops];
        _endPoint = endPoint;
        _connectTimeout = connectTimeout;
        _time = time;
        _logger = logger;
    }

    /// <summary>
    /// A new tunnel on <paramref name="loop"/>'s link; null when the other sidecar does not speak the link or it is full
    /// (the caller opens a connection of its own). A sidecar that cannot be reached throws, as a connect would.
    /// </summary>
    public async ValueTask<LinkStream?> OpenStreamAsync(EpollLoop loop, CancellationToken cancellationToken)
    {
        // Bounded: a link that closed or went away is replaced once.
        for (var attempt = 0; attempt < 2; attempt++)
        {
            Task<LinkConnection?>? pending;
            lock (_lock)
            {
                if (_disposed || (_unsupportedSince != long.MinValue && _time.GetElapsedTime(_unsupportedSince) < UnsupportedFor))
                {
                    return null;
                }

                pending = _links[loop.Index] ??= ConnectAsync(loop);
            }

            LinkConnection? link;
            try
            {
                link = await pending.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (Exception) when (pending.IsFaulted || pending.IsCanceled)
            {
                Forget(loop, pending);
                throw;
            }

            if (link is null)
            {
                Forget(loop, pending); // ConnectAsync marked the sidecar as not speaking the link, once for all its waiters
                return null;
            }

            if (link.TryOpenStream() is { } stream)
            {
                return stream;
            }

            if (link.IsUsable)
            {
                return null; // full (MaxStreams) after all: a connection of its own
            }

            Forget(loop, pending);
        }

        return null;
    }

    private async Task<LinkConnection?> ConnectAsync(EpollLoop loop)
    {
        try
        {
            var link = await LinkConnection.ConnectAsync(_endPoint, loop, _connectTimeout, _metrics, _logger, CancellationToken.None).ConfigureAwait(false);
            _metrics?.PeerLinkOpened(link is null ? "unsupported" : "linked");
            if (link is null)
            {
                lock (_lock)
                {
                    _unsupportedSince = _time.GetTimestamp();
                }

                Log.Unsupported(_logger, _endPoint);
            }

            return link;
        }
        catch
        {
            _metrics?.PeerLinkOpened("failed");
            throw;
        }
    }

    private void Forget(EpollLoop loop, Task<LinkConnection?> link)
    {
        lock (_lock)
        {
            if (ReferenceEquals(_links[loop.Index], link))
            {
                _links[loop.Index] = null;
            }
        }
    }

    /// <summary>The member left the map: no new streams; those under way finish, then each link closes (GOAWAY).</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
            foreach (var link in _links)
            {
                link?.ContinueWith(
                    static connecting => connecting.Result?.GoAway(),
                    CancellationToken.None,
                    TaskContinuationOptions.OnlyOnRanToCompletion | TaskContinuationOptions.ExecuteSynchronously,
                    TaskScheduler.Default);
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 951, EventName = "PeerLinkUnsupported", Level = LogLevel.Information,
            Message = "The sidecar at {EndPoint} does not speak the peer link (an older version?): forwarding to it over HTTP/1.1 connections")]
        public static partial void Unsupported(ILogger logger, EndPoint endPoint);
    }
}

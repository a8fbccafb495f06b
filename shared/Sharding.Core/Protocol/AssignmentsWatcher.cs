using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Polly;
using Polly.Retry;
using Sharding.Mapping;
using Sharding.Protocol.V1;

namespace Sharding.Protocol;

/// <summary>A map applied by an <see cref="AssignmentsWatcher"/>.</summary>
/// <param name="Map">The new current map.</param>
/// <param name="Previous">The map it replaced, if any.</param>
/// <param name="Kind">Whether it came as a snapshot or a delta.</param>
/// <param name="Update">The received message (leader epoch, publish time...).</param>
public sealed record ShardMapApplied(ShardMap Map, ShardMap? Previous, UpdateKind Kind, ShardMapUpdate Update);

/// <summary>
/// Subscribes to <c>sharding.v1.Assignments/Watch</c> and keeps a <see cref="ShardMapStore"/> per service current: the sidecar's
/// MapSync, the client library and control-plane followers all use it.
/// </summary>
/// <remarks>
/// <para>Usage (sidecar):</para>
/// <code>
/// await using var watcher = new AssignmentsWatcher(new AssignmentsWatcherOptions
/// {
///     ControlPlaneUrls = [new Uri("http://127.0.0.1:15001"), new Uri("http://127.0.0.1:15011")],
///     Service = "sharded-svc",
///     SubscriberName = podName,
/// }, logger: loggerFactory.CreateLogger&lt;AssignmentsWatcher&gt;());
/// watcher.Start();
/// ShardMap? map = watcher.Store.Current;                 // route with it; null until the first map
/// bool ready = await watcher.Store.WaitForGenerationAsync(0, TimeSpan.FromSeconds(5), ct);
/// watcher.MapApplied += applied => drain(applied.Previous, applied.Map);
/// AssignmentsWatcherStatus status = watcher.Status;      // connected, generation, last error: metrics and /readyz
/// </code>
/// <para>Behaviour:</para>
/// <list type="number">
/// <item>Opens an HTTP/2 stream (h2c prior knowledge for http:// URLs, <see cref="HttpVersionPolicy.RequestVersionExact"/>) to one
///   control-plane URL, sending the generation and checksum it holds, so a replica that still has that generation answers with a
///   delta instead of a snapshot.</item>
/// <item>Applies each snapshot or delta with <see cref="ShardMapCodec.Apply"/> and publishes it to the service's store; an older or
///   equal generation is ignored (the store never goes back). A checksum mismatch or a delta on the wrong base drops the stream and
///   re-subscribes asking for a snapshot.</item>
/// <item>A stream silent for <see cref="AssignmentsWatcherOptions.IdleTimeout"/> (the server pings every
///   <see cref="AssignmentsWatcherOptions.PingInterval"/>) is dropped; HTTP/2 PINGs also run underneath.</item>
/// <item>Reconnects with jittered exponential backoff (Polly) between <see cref="AssignmentsWatcherOptions.MinReconnectDelay"/> and
///   <see cref="AssignmentsWatcherOptions.MaxReconnectDelay"/>, moving to the next URL after each failure; a stream that worked resets
///   the backoff. Maps are kept while disconnected (static stability).</item>
/// </list>
/// Events are raised on the watcher's loop: keep handlers short.
/// Log event ids 790–799 (see docs/protocol.md).
/// </remarks>
public sealed partial class AssignmentsWatcher : IAsyncDisposable
{
    private readonly AssignmentsWatcherOptions _options;
    private readonly HttpMessageInvoker _invoker;
    private readonly bool _disposeInvoker;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, ShardMapStore> _stores = new(StringComparer.Ordinal);
    private readonly ResiliencePipeline _reconnect;
    private readonly CancellationTokenSource _stopping = new();
    private readonly object _statusGate = new();
    private AssignmentsWatcherStatus _status = new(false, null, -1, null, null, 0, 0, 0);
    private readonly object _lifecycle = new();
    private Task? _loop;
    private bool _disposed;
    private int _urlIndex;
    private bool _needSnapshot;
    private long _streams;

    /// <summary>Creates a watcher; call <see cref="Start"/> or <see cref="RunAsync"/> to subscribe.</summary>
    /// <param name="options">Settings (validated here).</param>
    /// <param name="invoker">An HTTP invoker to share (not disposed by the watcher); by default one over a tuned <see cref="SocketsHttpHandler"/>.</param>
    /// <param name="logger">Logs; none by default.</param>
    /// <exception cref="ArgumentException">Invalid options.</exception>
    public AssignmentsWatcher(AssignmentsWatcherOptions options, HttpMessageInvoker? invoker = null, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        _logger = logger ?? NullLogger.Instance;
        _disposeInvoker = invoker is null;
        _invoker = invoker ?? new HttpMessageInvoker(CreateHandler(options));
        if (!string.IsNullOrEmpty(options.Service))
        {
            _stores[options.Service] = new ShardMapStore();
        }

        _reconnect = new ResiliencePipelineBuilder { TimeProvider = options.TimeProvider }
            .AddRetry(new RetryStrategyOptions
            {
                ShouldHandle = new PredicateBuilder().Handle<Exception>(ex => ex is not OperationCanceledException || !_stopping.IsCancellationRequested),
                MaxRetryAttempts = int.MaxValue,
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = options.MinReconnectDelay,
                MaxDelay = options.MaxReconnectDelay,
            })
            .Build();
    }

    /// <summary>Raised after a map was applied (on the watcher's loop).</summary>
    public event Action<ShardMapApplied>? MapApplied;

    /// <summary>Raised on every keep-alive ping (followers use the first one after a burst of snapshots as "in sync").</summary>
    public event Action<ShardMapUpdate>? PingReceived;

    /// <summary>Raised when <see cref="Status"/> changes.</summary>
    public event Action<AssignmentsWatcherStatus>? StatusChanged;

    /// <summary>
    /// Raised when a stream attempt fails (on the watcher's loop, before reconnecting), with the cause: a
    /// <see cref="GrpcCallException"/> carries the server's status, e.g. <see cref="GrpcStatusCode.NotFound"/> for an unknown service.
    /// </summary>
    public event Action<Exception>? StreamFailed;

    /// <summary>The followed service's store (single-service mode).</summary>
    /// <exception cref="InvalidOperationException">The watcher follows every service: use <see cref="GetStore"/>.</exception>
    public ShardMapStore Store => !string.IsNullOrEmpty(_options.Service)
        ? _stores[_options.Service]
        : throw new InvalidOperationException("This watcher follows every service; use GetStore(service).");

    /// <summary>The stores of every service seen so far.</summary>
    public IReadOnlyDictionary<string, ShardMapStore> Stores => _stores;

    /// <summary>The subscription state.</summary>
    public AssignmentsWatcherStatus Status
    {
        get
        {
            lock (_statusGate)
            {
                return _status;
            }
        }
    }

    /// <summary>The store of a service (created empty when unknown).</summary>
    /// <param name="service">The service name.</param>
    /// <returns>Its store.</returns>
    public ShardMapStore GetStore(string service) => _stores.GetOrAdd(service, static _ => new ShardMapStore());

    /// <summary>Starts the subscription loop in the background (until <see cref="DisposeAsync"/>); once only, never after it.</summary>
    public void Start()
    {
        // Under the lock: two racing calls would start two loops, and one racing DisposeAsync a loop nobody stops.
        lock (_lifecycle)
        {
            if (!_disposed && _loop is null)
            {
                _loop = Task.Run(() => RunAsync(_stopping.Token));
            }
        }
    }

    /// <summary>Runs the subscription loop until cancelled.</summary>
    /// <param name="cancellationToken">Stops the loop.</param>
    /// <returns>Completes when stopped.</returns>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _stopping.Token);
        var token = linked.Token;
        while (!token.IsCancellationRequested)
        {
            try
            {
                // Each pipeline run ends after a stream that worked and then broke, so the backoff starts small again.
                await _reconnect.ExecuteAsync(static (state, ct) => state.RunStreamAsync(ct), this, token).ConfigureAwait(false);
                await Task.Delay(Jitter(_options.MinReconnectDelay), _options.TimeProvider, token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                break;
            }
        }
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        Task? loop;
        lock (_lifecycle)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            loop = _loop;
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        if (loop is not null)
        {
            try
            {
                await loop.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
        }

        if (_disposeInvoker)
        {
            _invoker.Dispose();
        }

        _stopping.Dispose();
    }

    private static TimeSpan Jitter(TimeSpan max) => TimeSpan.FromTicks((long)(max.Ticks * Random.Shared.NextDouble()));

    private static SocketsHttpHandler CreateHandler(AssignmentsWatcherOptions options) => new()
    {
        UseProxy = false,
        AllowAutoRedirect = false,
        UseCookies = false,
        AutomaticDecompression = DecompressionMethods.None,
        ConnectTimeout = options.ConnectTimeout,
        EnableMultipleHttp2Connections = true,
        // HTTP/2 PINGs underneath the application pings (SocketsHttpHandler accepts 1 s at least).
        KeepAlivePingDelay = options.PingInterval < TimeSpan.FromSeconds(1) ? TimeSpan.FromSeconds(1) : options.PingInterval,
        KeepAlivePingTimeout = options.IdleTimeout < TimeSpan.FromSeconds(1) ? TimeSpan.FromSeconds(1) : options.IdleTimeout,
        KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
        PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30),
    };

    /// <summary>One stream: connect, apply updates until it ends. Returns normally when a stream that delivered something ended.</summary>
    private async ValueTask RunStreamAsync(CancellationToken cancellationToken)
    {
        var urls = _options.ControlPlaneUrls;
        var url = urls[(int)((uint)_urlIndex % (uint)urls.Count)];
        var delivered = false;
        var deliveredAt = 0L;
        try
        {
            var request = new WatchRequest
            {
                Pod = _options.SubscriberName,
                Service = _options.Service ?? string.Empty,
                PingIntervalMs = (uint)Math.Max(1, _options.PingInterval.TotalMilliseconds),
            };
            if (!_needSnapshot && !string.IsNullOrEmpty(_options.Service) && Store.Current is { } held)
            {
                request.KnownGeneration = (ulong)held.Generation;
                request.KnownChecksum = held.Checksum;
            }

            if (Interlocked.Increment(ref _streams) > 1)
            {
                UpdateStatus(s => s with { Reconnects = s.Reconnects + 1, ControlPlane = url });
            }

            Log.Subscribing(_logger, url, _options.Service ?? "*", request.KnownGeneration);
            GrpcServerStreamingCall<ShardMapUpdate> call;
            using (var connect = new CancellationTokenSource(_options.ConnectTimeout, _options.TimeProvider))
            using (var connectLinked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, connect.Token))
            {
                try
                {
                    call = await GrpcClient.StartServerStreamingAsync(
                        _invoker, url, GrpcProtocol.WatchPath, request, ShardMapUpdate.Parser, deadline: null, _options.MaxMessageBytes, connectLinked.Token)
                        .ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (connect.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
                {
                    throw new TimeoutException($"no response headers from {url} within {_options.ConnectTimeout.TotalMilliseconds:0} ms");
                }
            }

            await using (call.ConfigureAwait(false))
            {
                using var idle = new CancellationTokenSource(Timeout.InfiniteTimeSpan, _options.TimeProvider);
                using var readLinked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, idle.Token);
                while (true)
                {
                    idle.CancelAfter(_options.IdleTimeout);
                    ShardMapUpdate? update;
                    try
                    {
                        update = await call.ReadAsync(readLinked.Token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException) when (idle.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
                    {
                        throw new TimeoutException($"the stream from {url} was silent for {_options.IdleTimeout.TotalMilliseconds:0} ms (no update, no ping)");
                    }

                    if (update is null)
                    {
                        throw new GrpcCallException(GrpcStatusCode.Unavailable, $"{url} ended the stream");
                    }

                    if (!delivered)
                    {
                        delivered = true;
                        deliveredAt = _options.TimeProvider.GetTimestamp();
                        UpdateStatus(s => s with { Connected = true, ControlPlane = url });
                        Log.Subscribed(_logger, url, _options.Service ?? "*");
                    }

                    Handle(update);
                }
            }
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            _urlIndex++;
            UpdateStatus(s => s with { Connected = false, LastError = ex.Message, LastErrorAt = _options.TimeProvider.GetUtcNow() });
            Log.StreamFailed(_logger, url, ex.Message, ex is GrpcCallException or ShardMapUpdateException ? null : ex);
            StreamFailed?.Invoke(ex);
            // A stream counts as having worked (the backoff starts small again) once it lived twice the longest backoff: a
            // replica or proxy that answers and then drops every stream at once gets backed-off reconnects, not a storm of
            // them from every subscriber, each fetching a snapshot.
            if (!delivered || ex is ShardMapUpdateException || _options.TimeProvider.GetElapsedTime(deliveredAt) < _options.MaxReconnectDelay * 2)
            {
                throw;
            }
        }
        finally
        {
            if (cancellationToken.IsCancellationRequested)
            {
                UpdateStatus(s => s with { Connected = false });
            }
        }
    }

    private void Handle(ShardMapUpdate update)
    {
        if (update.Kind == UpdateKind.Ping)
        {
            PingReceived?.Invoke(update);
            return;
        }

        if (!string.IsNullOrEmpty(_options.Service) && !string.Equals(update.Service, _options.Service, StringComparison.Ordinal))
        {
            return;
        }

        var store = GetStore(update.Service);
        var current = store.Current;
        if (current is not null && (long)update.Generation <= current.Generation)
        {
            return;
        }

        ShardMap map;
        try
        {
            map = ShardMapCodec.Apply(update, current);
        }
        catch (ShardMapUpdateException ex)
        {
            _needSnapshot = true;
            if (ex.Error == ShardMapUpdateError.ChecksumMismatch)
            {
                UpdateStatus(s => s with { ChecksumFailures = s.ChecksumFailures + 1 });
            }

            Log.UpdateRejected(_logger, update.Service, (long)update.Generation, ex.Error, ex.Message);
            throw;
        }

        _needSnapshot = false;
        if (store.TryPublish(map))
        {
            UpdateStatus(s => s with { UpdatesApplied = s.UpdatesApplied + 1, Generation = Math.Max(s.Generation, map.Generation) });
            Log.MapApplied(_logger, map.Service, map.Generation, update.Kind, map.Members.Length);
            MapApplied?.Invoke(new ShardMapApplied(map, current, update.Kind, update));
        }
    }

    private void UpdateStatus(Func<AssignmentsWatcherStatus, AssignmentsWatcherStatus> change)
    {
        AssignmentsWatcherStatus next;
        lock (_statusGate)
        {
            next = change(_status);
            if (next == _status)
            {
                return;
            }

            _status = next;
        }

        StatusChanged?.Invoke(next);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 790, EventName = "Subscribing", Level = LogLevel.Debug, Message = "Subscribing to {Url} for service {Service} holding generation {KnownGeneration}")]
        public static partial void Subscribing(ILogger logger, Uri url, string service, ulong knownGeneration);

        [LoggerMessage(EventId = 791, EventName = "Subscribed", Level = LogLevel.Information, Message = "Subscribed to {Url} for service {Service}")]
        public static partial void Subscribed(ILogger logger, Uri url, string service);

        [LoggerMessage(EventId = 792, EventName = "StreamFailed", Level = LogLevel.Warning, Message = "Assignment stream from {Url} failed: {Reason}; keeping the last map and reconnecting")]
        public static partial void StreamFailed(ILogger logger, Uri url, string reason, Exception? exception);

        [LoggerMessage(EventId = 793, EventName = "UpdateRejected", Level = LogLevel.Warning, Message = "Update for {Service} generation {Generation} rejected ({Error}): {Reason}; re-subscribing for a snapshot")]
        public static partial void UpdateRejected(ILogger logger, string service, long generation, ShardMapUpdateError error, string reason);

        [LoggerMessage(EventId = 794, EventName = "MapApplied", Level = LogLevel.Debug, Message = "Applied {Kind} of {Service} generation {Generation} ({MemberCount} members)")]
        public static partial void MapApplied(ILogger logger, string service, long generation, UpdateKind kind, int memberCount);
    }
}

using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Sharding.Keys;
using Sharding.Mapping;
using Sharding.Protocol;

namespace Sharding.Client;

/// <summary>
/// Follows one sharded service's shard map from the control plane (<c>Assignments/Watch</c> through the shared
/// <see cref="AssignmentsWatcher"/>) and answers who owns a key; <see cref="ShardRoutingHandler"/> routes HTTP requests with it.
/// </summary>
/// <remarks>
/// <para>Invariants: the routing snapshot (map + compiled key rules) sits in one volatile field and is swapped whole; a reader
/// takes it once per request. Generations only move forward (<see cref="ShardMapStore"/> refuses older ones). The last map
/// stays after the subscription breaks or stops (static stability).</para>
/// <para>An unknown service (NOT_FOUND from the control plane) sets <see cref="ShardRouterState.ServiceNotFound"/>, logs an error
/// (event 1003) and makes <see cref="WaitForMapAsync"/> throw <see cref="ShardServiceNotFoundException"/>; the subscription keeps
/// retrying with backoff in case the service gets created.</para>
/// <para>Started by the host (a hosted service) or lazily by the first request or wait; disposed with the service provider.</para>
/// Log event ids 1001–1009.
/// </remarks>
public sealed partial class ShardRouter : IShardRouter, IAsyncDisposable, IDisposable
{
    private readonly AssignmentsWatcher _watcher;
    private readonly ILogger _logger;
    private readonly object _gate = new();
    private readonly bool _ownsMetrics;
    private readonly string _controlPlanes;
    private volatile RoutingSnapshot? _snapshot;
    private TaskCompletionSource _signal = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private ShardRouterState _state;
    private string? _lastError;
    private int _started;
    private int _disposed;

    /// <summary>Creates a router (not started: call <see cref="Start"/>, or let the first request start it).</summary>
    /// <param name="options">Settings; validated here.</param>
    /// <param name="loggerFactory">Logs; none by default.</param>
    /// <param name="meterFactory">Creates the <c>Sharding.Client</c> meter; a private meter by default.</param>
    /// <param name="timeProvider">The clock for timeouts and backoff; the system clock by default.</param>
    /// <exception cref="ArgumentException">Invalid options (the message lists every problem).</exception>
    public ShardRouter(ShardRoutingOptions options, ILoggerFactory? loggerFactory = null, IMeterFactory? meterFactory = null, TimeProvider? timeProvider = null)
        : this(options, loggerFactory, new ShardClientMetrics(meterFactory), ownsMetrics: true, timeProvider)
    {
    }

    internal ShardRouter(ShardRoutingOptions options, ILoggerFactory? loggerFactory, ShardClientMetrics metrics, bool ownsMetrics, TimeProvider? timeProvider)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = ShardRoutingOptionsValidator.Collect(options);
        if (errors.Count > 0)
        {
            if (ownsMetrics)
            {
                metrics.Dispose();
            }

            throw new ArgumentException("Invalid ShardRoutingOptions: " + string.Join(" ", errors), nameof(options));
        }

        loggerFactory ??= NullLoggerFactory.Instance;
        _logger = loggerFactory.CreateLogger<ShardRouter>();
        Service = options.Service.Trim();
        Options = options;
        Metrics = metrics;
        _ownsMetrics = ownsMetrics;
        var urls = new List<Uri>(options.ControlPlaneAddresses.Count);
        foreach (var text in options.ControlPlaneAddresses)
        {
            if (ShardRoutingOptionsValidator.TryParseUrl(text, out var url))
            {
                urls.Add(url);
            }
        }

        _controlPlanes = string.Join(", ", urls);
        _watcher = new AssignmentsWatcher(
            new AssignmentsWatcherOptions
            {
                ControlPlaneUrls = urls,
                Service = Service,
                SubscriberName = options.SubscriberName ?? DefaultSubscriberName(),
                PingInterval = options.PingInterval,
                IdleTimeout = options.IdleTimeout,
                ConnectTimeout = options.ConnectTimeout,
                MinReconnectDelay = options.MinReconnectDelay,
                MaxReconnectDelay = options.MaxReconnectDelay,
                TimeProvider = timeProvider ?? TimeProvider.System,
            },
            invoker: null,
            loggerFactory.CreateLogger<AssignmentsWatcher>());
        _watcher.Store.Changed += OnMapChanged;
        _watcher.StatusChanged += OnStatusChanged;
        _watcher.StreamFailed += OnStreamFailed;
        Metrics.Register(this);
    }

    /// <inheritdoc />
    public event EventHandler<ShardMapChangedEventArgs>? MapChanged;

    /// <inheritdoc />
    public string Service { get; }

    /// <inheritdoc />
    public long Generation => _snapshot?.Map.Generation ?? -1;

    /// <inheritdoc />
    public ShardMap? CurrentMap => _snapshot?.Map;

    /// <inheritdoc />
    public ShardRouterState State
    {
        get
        {
            lock (_gate)
            {
                return _state;
            }
        }
    }

    /// <inheritdoc />
    public string? LastError
    {
        get
        {
            lock (_gate)
            {
                return _lastError;
            }
        }
    }

    /// <summary>The subscription's own status (control plane in use, reconnects, checksum failures).</summary>
    public AssignmentsWatcherStatus SubscriptionStatus => _watcher.Status;

    internal ShardRoutingOptions Options { get; }

    internal ShardClientMetrics Metrics { get; }

    /// <summary>The snapshot a request routes with, read once; starts the subscription on first use.</summary>
    internal RoutingSnapshot? Snapshot
    {
        get
        {
            if (_started == 0)
            {
                Start();
            }

            return _snapshot;
        }
    }

    /// <summary>A router that never subscribes and routes with <paramref name="map"/> (tests and benchmarks).</summary>
    internal static ShardRouter CreateStatic(ShardMap map, ShardRoutingOptions? options = null)
    {
        options ??= new ShardRoutingOptions();
        options.Service = map.Service;
        if (options.ControlPlaneAddresses.Count == 0)
        {
            options.ControlPlaneAddresses = ["http://127.0.0.1:9"];
        }

        var router = new ShardRouter(options);
        router._started = 1;
        router.TryPublish(map);
        return router;
    }

    /// <summary>Publishes a map as if it came from the control plane (only a newer generation gets in).</summary>
    internal bool TryPublish(ShardMap map) => _watcher.Store.TryPublish(map);

    /// <summary>Starts the subscription in the background (idempotent).</summary>
    public void Start()
    {
        if (Interlocked.Exchange(ref _started, 1) == 0 && Volatile.Read(ref _disposed) == 0)
        {
            Log.Starting(_logger, Service, _controlPlanes);
            _watcher.Start();
        }
    }

    /// <inheritdoc />
    public ShardLookup OwnerOf(ReadOnlySpan<char> key)
    {
        var snapshot = Snapshot;
        if (snapshot is null)
        {
            return new ShardLookup(ShardLookupStatus.NoMap, null, -1);
        }

        var owner = snapshot.Map.OwnerOf(key);
        return owner is null
            ? new ShardLookup(ShardLookupStatus.EmptyMap, null, snapshot.Map.Generation)
            : new ShardLookup(ShardLookupStatus.Found, owner, snapshot.Map.Generation);
    }

    /// <summary>The owner of <paramref name="key"/> on the current map.</summary>
    /// <param name="key">The shard key.</param>
    /// <returns>The owner and generation, or why there is none.</returns>
    public ShardLookup OwnerOf(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        return OwnerOf(key.AsSpan());
    }

    /// <inheritdoc />
    public async ValueTask<ShardMap> WaitForMapAsync(CancellationToken cancellationToken = default)
    {
        Start();
        while (true)
        {
            Task signal;
            lock (_gate)
            {
                if (_snapshot is { } snapshot)
                {
                    return snapshot.Map;
                }

                if (_state == ShardRouterState.ServiceNotFound)
                {
                    throw new ShardServiceNotFoundException(Service, _lastError ?? "NOT_FOUND", null);
                }

                if (Volatile.Read(ref _disposed) != 0)
                {
                    throw new ObjectDisposedException(nameof(ShardRouter), $"the router of service '{Service}' was stopped before a map arrived");
                }

                signal = _signal.Task;
            }

            await signal.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Stops the subscription; the last map keeps answering.</summary>
    /// <returns>Completes when the subscription loop ended.</returns>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _watcher.DisposeAsync().ConfigureAwait(false);
        _watcher.Store.Changed -= OnMapChanged;
        _watcher.StatusChanged -= OnStatusChanged;
        _watcher.StreamFailed -= OnStreamFailed;
        SetState(ShardRouterState.Stopped, error: null, keepError: true);
        Metrics.Unregister(this);
        if (_ownsMetrics)
        {
            Metrics.Dispose();
        }
    }

    /// <inheritdoc />
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    private static string DefaultSubscriberName() =>
        (Environment.GetEnvironmentVariable("POD_NAME") is { Length: > 0 } pod ? pod : Environment.MachineName) + "/client";

    private void OnMapChanged(ShardMap map, ShardMap? previous)
    {
        // Key rules compile once per policy, not per request; a new generation with the same policy keeps the extractor.
        var current = _snapshot;
        var extractor = ShardKeyExtractor.For(map.KeyPolicy, current?.Extractor);
        var unroutable = RoutingSnapshot.FindUnroutable(map);
        foreach (var member in unroutable ?? [])
        {
            Log.UnroutableAddress(_logger, Service, member.Name, member.Address, map.Generation);
        }

        lock (_gate)
        {
            _snapshot = new RoutingSnapshot(map, extractor, unroutable);
            SignalLocked();
        }

        Log.MapChanged(_logger, Service, map.Generation, previous?.Generation ?? -1, map.Members.Length);
        MapChanged?.Invoke(this, new ShardMapChangedEventArgs(map, previous));
    }

    private void OnStatusChanged(AssignmentsWatcherStatus status)
    {
        if (status.Connected && State != ShardRouterState.Connected)
        {
            SetState(ShardRouterState.Connected, error: null, keepError: false);
            Log.Connected(_logger, Service, status.ControlPlane);
        }
    }

    private void OnStreamFailed(Exception exception)
    {
        if (Volatile.Read(ref _disposed) != 0)
        {
            return;
        }

        if (exception is GrpcCallException { StatusCode: GrpcStatusCode.NotFound } notFound)
        {
            // Log before waking waiters, so whoever sees the state or the exception also finds the log entry.
            if (State != ShardRouterState.ServiceNotFound)
            {
                Log.ServiceNotFound(_logger, Service, notFound.Detail, Generation);
            }

            SetState(ShardRouterState.ServiceNotFound, notFound.Detail, keepError: false);
            return;
        }

        if (SetState(ShardRouterState.Reconnecting, exception.Message, keepError: false) == ShardRouterState.Connected)
        {
            Log.SubscriptionLost(_logger, Service, exception.Message, Generation);
        }
    }

    /// <summary>Sets the state, wakes waiters; returns the previous state.</summary>
    private ShardRouterState SetState(ShardRouterState state, string? error, bool keepError)
    {
        lock (_gate)
        {
            var previous = _state;
            _state = state;
            if (!keepError)
            {
                _lastError = error;
            }

            SignalLocked();
            return previous;
        }
    }

    private void SignalLocked()
    {
        var signal = _signal;
        _signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        signal.TrySetResult();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 1001, EventName = "RouterStarting", Level = LogLevel.Information, Message = "Following the shard map of service {Service} from {ControlPlanes}")]
        public static partial void Starting(ILogger logger, string service, string controlPlanes);

        [LoggerMessage(EventId = 1002, EventName = "MapChanged", Level = LogLevel.Information, Message = "Shard map of service {Service} is now generation {Generation} (was {PreviousGeneration}), {MemberCount} members")]
        public static partial void MapChanged(ILogger logger, string service, long generation, long previousGeneration, int memberCount);

        [LoggerMessage(EventId = 1003, EventName = "ServiceNotFound", Level = LogLevel.Error, Message = "The control plane does not know the sharded service {Service}: {Detail}. Requests go to the Service address (generation {Generation} held); check the service name given to AddShardRouting/AddShardRouter")]
        public static partial void ServiceNotFound(ILogger logger, string service, string detail, long generation);

        [LoggerMessage(EventId = 1004, EventName = "SubscriptionLost", Level = LogLevel.Warning, Message = "Lost the shard-map subscription of service {Service} ({Reason}); routing with generation {Generation} while reconnecting")]
        public static partial void SubscriptionLost(ILogger logger, string service, string reason, long generation);

        [LoggerMessage(EventId = 1006, EventName = "UnroutableAddress", Level = LogLevel.Warning, Message = "Member {Member} of service {Service} has the address '{Address}' in generation {Generation}, not host:port: requests for its keys go to the Service address")]
        public static partial void UnroutableAddress(ILogger logger, string service, string member, string address, long generation);

        [LoggerMessage(EventId = 1005, EventName = "Connected", Level = LogLevel.Debug, Message = "Shard-map subscription of service {Service} connected to {ControlPlane}")]
        public static partial void Connected(ILogger logger, string service, Uri? controlPlane);
    }
}

/// <summary>What a request routes with: a map, its compiled key rules and its members whose address cannot be routed to.</summary>
internal sealed record RoutingSnapshot(ShardMap Map, ShardKeyExtractor Extractor, HashSet<ShardMember>? Unroutable = null)
{
    /// <summary>Whether a request can be sent to <paramref name="member"/>'s address (no allocation; null set when all can).</summary>
    public bool CanRoute(ShardMember member) => Unroutable is not { } set || !set.Contains(member);

    /// <summary>
    /// The members whose address is not <c>host:port</c> with an explicit port (an IPv6 host in brackets), or null: spliced
    /// into <c>scheme://address/path</c> such an address would fail to parse, replace the path, turn it into a query or a
    /// fragment, or pick port 80.
    /// </summary>
    public static HashSet<ShardMember>? FindUnroutable(ShardMap map)
    {
        HashSet<ShardMember>? unroutable = null;
        foreach (var member in map.Members)
        {
            if (!MemberAddress.IsHostPort(member.Address))
            {
                (unroutable ??= new HashSet<ShardMember>(ReferenceEqualityComparer.Instance)).Add(member);
            }
        }

        return unroutable;
    }
}

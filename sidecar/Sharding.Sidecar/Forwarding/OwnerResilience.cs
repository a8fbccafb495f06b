using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Options;
using Polly;
using Polly.CircuitBreaker;
using Polly.Retry;
using Sharding.Mapping;
using Sharding.Metrics;
using Sharding.Sidecar.Hosting;

namespace Sharding.Sidecar.Forwarding;

/// <summary>
/// One Polly pipeline per owner: connect retries with jittered exponential backoff, only while nothing of the request was
/// sent, inside-out of a circuit breaker that opens on connect failures. An open circuit answers 503 + Retry-After; a
/// stateful key is never re-routed to another member.
/// </summary>
internal sealed class OwnerResilience
{
    /// <summary>The request body of the attempt, so the retry predicate can see whether sending started.</summary>
    public static readonly ResiliencePropertyKey<StreamCopyHttpContent?> BodyKey = new("sharding.body");

    /// <summary>The stand-in outcome of <see cref="RecordReached"/> (never sent, never disposed).</summary>
    private static readonly HttpResponseMessage Reached = new(System.Net.HttpStatusCode.OK);

    private readonly ConcurrentDictionary<string, ResiliencePipeline<HttpResponseMessage>> _pipelines = new(StringComparer.Ordinal);
    private readonly OwnerCircuitStates _states;
    private readonly IOptions<SidecarOptions> _options;
    private readonly TimeProvider _timeProvider;
    private readonly Func<string, ResiliencePipeline<HttpResponseMessage>> _create;
    private SidecarMetrics? _metrics;

    public OwnerResilience(OwnerCircuitStates states, IOptions<SidecarOptions> options, TimeProvider timeProvider, ShardMapStore store)
    {
        _states = states;
        _options = options;
        _timeProvider = timeProvider;
        _create = Create;
        store.Changed += (map, _) => Prune(map);
    }

    /// <summary>Set once at start (the metrics need the circuit states, so they cannot be a constructor argument).</summary>
    public void AttachMetrics(SidecarMetrics metrics) => _metrics = metrics;

    public ResiliencePipeline<HttpResponseMessage> For(string owner) => _pipelines.GetOrAdd(owner, _create);

    /// <summary>
    /// Counts a request that reached <paramref name="owner"/> outside the pipeline (an HTTP/1.1 fast-path forward), so the
    /// breaker's failure ratio has every attempt in its denominator. Without it the breaker saw only the full path's attempts,
    /// mostly the fast path's handed-over connect failures, and five of them opened a busy, healthy owner's circuit.
    /// </summary>
    public void RecordReached(string owner)
    {
        try
        {
            For(owner).Execute(static () => Reached);
        }
        catch (Exception ex) when (ex is BrokenCircuitException or IsolatedCircuitException)
        {
            // The circuit opened since the fast path looked: nothing to count.
        }
    }

    /// <summary>Whether the failure is a connect failure (nothing reached the owner).</summary>
    public static bool IsConnectFailure(Exception? exception) =>
        exception is HttpRequestException { HttpRequestError: HttpRequestError.ConnectionError }
        || (exception is HttpRequestException { InnerException: System.Net.Sockets.SocketException });

    private ResiliencePipeline<HttpResponseMessage> Create(string owner)
    {
        var options = _options.Value;
        var stateProvider = new CircuitBreakerStateProvider();
        _states.Register(owner, stateProvider);
        var builder = new ResiliencePipelineBuilder<HttpResponseMessage> { TimeProvider = _timeProvider };
        if (options.ConnectRetries > 0)
        {
            builder.AddRetry(new RetryStrategyOptions<HttpResponseMessage>
            {
                MaxRetryAttempts = options.ConnectRetries,
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = options.RetryBaseDelay,
                ShouldHandle = static args => ValueTask.FromResult(
                    IsConnectFailure(args.Outcome.Exception)
                    && !(args.Context.Properties.GetValue(BodyKey, null)?.Started ?? false)),
                OnRetry = args =>
                {
                    _metrics?.Retry(owner);
                    return ValueTask.CompletedTask;
                },
            });
        }

        builder.AddCircuitBreaker(new CircuitBreakerStrategyOptions<HttpResponseMessage>
        {
            FailureRatio = options.BreakerFailureRatio,
            MinimumThroughput = options.BreakerMinimumThroughput,
            SamplingDuration = options.BreakerSamplingDuration,
            BreakDuration = options.BreakerDuration,
            StateProvider = stateProvider,
            ShouldHandle = static args => ValueTask.FromResult(IsConnectFailure(args.Outcome.Exception)),
        });
        return builder.Build();
    }

    private void Prune(ShardMap map)
    {
        foreach (var owner in _pipelines.Keys)
        {
            if (map.FindMember(owner) is null && _pipelines.TryRemove(owner, out _))
            {
                _states.Unregister(owner);
            }
        }
    }
}

/// <summary>The circuit-breaker state of every owner, for the gauge and the admin view.</summary>
internal sealed class OwnerCircuitStates
{
    private readonly ConcurrentDictionary<string, CircuitBreakerStateProvider> _providers = new(StringComparer.Ordinal);

    public void Register(string owner, CircuitBreakerStateProvider provider) => _providers[owner] = provider;

    public void Unregister(string owner) => _providers.TryRemove(owner, out _);

    public CircuitState? StateOf(string owner) => _providers.TryGetValue(owner, out var provider) ? provider.CircuitState : null;

    public IEnumerable<Measurement<int>> Observe()
    {
        foreach (var (owner, provider) in _providers)
        {
            yield return new Measurement<int>((int)provider.CircuitState, new KeyValuePair<string, object?>(SidecarMetricNames.OwnerTag, owner));
        }
    }
}

using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace Sharding.Client.Tests.Infrastructure;

/// <summary>Runs a class's tests by <see cref="TestPriorityAttribute"/> (cluster tests that stop or change things go last).</summary>
public sealed class PriorityOrderer : ITestCaseOrderer
{
    public const string TypeName = "Sharding.Client.Tests.Infrastructure.PriorityOrderer";
    public const string AssemblyName = "Sharding.Client.Tests";

    public IEnumerable<TTestCase> OrderTestCases<TTestCase>(IEnumerable<TTestCase> testCases)
        where TTestCase : ITestCase =>
        testCases.OrderBy(static c => c.TestMethod.Method.GetCustomAttributes(typeof(TestPriorityAttribute).AssemblyQualifiedName!)
            .FirstOrDefault()?.GetNamedArgument<int>(nameof(TestPriorityAttribute.Priority)) ?? 0)
            .ThenBy(static c => c.TestMethod.Method.Name, StringComparer.Ordinal);
}

[AttributeUsage(AttributeTargets.Method)]
public sealed class TestPriorityAttribute(int priority) : Attribute
{
    public int Priority { get; } = priority;
}

/// <summary>Collects log entries so tests assert by EventId.</summary>
internal sealed class CollectingLoggerProvider : ILoggerProvider
{
    public ConcurrentQueue<(string Category, LogLevel Level, EventId Id, string Message)> Entries { get; } = new();

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    private sealed class Logger(CollectingLoggerProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Debug;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            owner.Entries.Enqueue((category, logLevel, eventId, formatter(state, exception)));
    }
}

/// <summary>A service provider with one routed HTTP client, as an app would register it.</summary>
internal sealed class RoutedClient : IAsyncDisposable
{
    public const string ClientName = "sharded";

    private readonly ServiceProvider _provider;

    public RoutedClient(string serviceAddress, IReadOnlyList<string> controlPlanes, string service = LocalCluster.Service, Action<ShardRoutingOptions>? configure = null)
    {
        var services = new ServiceCollection();
        services.AddLogging(b => b.SetMinimumLevel(LogLevel.Debug).AddProvider(Logs));
        services.AddHttpClient(ClientName, c =>
            {
                c.BaseAddress = new Uri(serviceAddress);
                c.Timeout = TimeSpan.FromSeconds(30);
            })
            .ConfigurePrimaryHttpMessageHandler(static () => new SocketsHttpHandler { UseProxy = false, AllowAutoRedirect = false, UseCookies = false })
            .AddShardRouting(service, o =>
            {
                o.ControlPlaneAddresses = [.. controlPlanes];
                o.PingInterval = TimeSpan.FromMilliseconds(500);
                o.IdleTimeout = TimeSpan.FromSeconds(2);
                o.ConnectTimeout = TimeSpan.FromSeconds(1);
                o.MaxReconnectDelay = TimeSpan.FromMilliseconds(500);
                configure?.Invoke(o);
            })
            .AddHttpMessageHandler(static () => new SentToHandler());
        _provider = services.BuildServiceProvider();
        Client = _provider.GetRequiredService<IHttpClientFactory>().CreateClient(ClientName);
        Router = _provider.GetRequiredKeyedService<ShardRouter>(service);
    }

    public const string SentToHeader = "x-test-sent-to";

    public CollectingLoggerProvider Logs { get; } = new();

    public IServiceProvider Services => _provider;

    public HttpClient Client { get; }

    public ShardRouter Router { get; }

    public static HttpRequestMessage Counter(string key)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "/counter") { Version = HttpVersion.Version11 };
        request.Headers.TryAddWithoutValidation("x-shard-key", key);
        return request;
    }

    public async ValueTask DisposeAsync() => await _provider.DisposeAsync().ConfigureAwait(false);
}

/// <summary>Inside the routing handler: tells the test where the request was sent (a response header).</summary>
internal sealed class SentToHandler : DelegatingHandler
{
    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var authority = request.RequestUri!.Authority;
        var response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
        response.Headers.TryAddWithoutValidation(RoutedClient.SentToHeader, authority);
        return response;
    }
}

/// <summary>Records the Sharding.Client meter of one service provider.</summary>
internal sealed class ClientMetricsRecorder : IDisposable
{
    private readonly System.Diagnostics.Metrics.MeterListener _listener = new();

    public ClientMetricsRecorder(IServiceProvider services)
    {
        var factory = services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>();
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == Sharding.Metrics.ClientMetricNames.MeterName && ReferenceEquals(instrument.Meter.Scope, factory))
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) => Record(instrument.Name, value, tags));
        _listener.SetMeasurementEventCallback<int>((instrument, value, tags, _) => Record(instrument.Name, value, tags));
        _listener.Start();
    }

    public ConcurrentDictionary<string, long> Sums { get; } = new();

    public ConcurrentDictionary<string, long> Last { get; } = new();

    public long Sum(string key) => Sums.TryGetValue(key, out var value) ? value : 0;

    public void Observe() => _listener.RecordObservableInstruments();

    public void Dispose() => _listener.Dispose();

    private void Record(string name, long value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var key = name;
        foreach (var tag in tags)
        {
            key += $"|{tag.Key}={tag.Value}";
        }

        Sums.AddOrUpdate(key, value, (_, old) => old + value);
        Last[key] = value;
    }
}

/// <summary>Random shard keys: letters, digits, '-', '_', and now and then a non-ASCII char (percent-encoded where URLs carry it).</summary>
internal static class RandomKeys
{
    private const string Alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";

    public static string Next(Random random, bool ascii = false)
    {
        var length = random.Next(1, 40);
        Span<char> chars = stackalloc char[length];
        for (var i = 0; i < length; i++)
        {
            chars[i] = !ascii && random.Next(50) == 0 ? "éüß漢ж"[random.Next(5)] : Alphabet[random.Next(Alphabet.Length)];
        }

        return new string(chars);
    }
}

/// <summary>The cluster shared by the end-to-end tests (started once per run).</summary>
public sealed class ClusterFixture : IAsyncLifetime
{
    internal LocalCluster Cluster { get; private set; } = null!;

    public async Task InitializeAsync() => Cluster = await LocalCluster.StartAsync();

    public async Task DisposeAsync() => await Cluster.DisposeAsync();
}

[CollectionDefinition(Name)]
public sealed class ClusterTests : ICollectionFixture<ClusterFixture>
{
    public const string Name = "cluster";
}

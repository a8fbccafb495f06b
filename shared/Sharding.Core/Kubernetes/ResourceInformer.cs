using System.Globalization;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Polly;
using Polly.Retry;

namespace Sharding.Kubernetes;

/// <summary>What an informer reports.</summary>
public enum InformerEventKind
{
    /// <summary>An object appeared (or was first seen in a list).</summary>
    Added,

    /// <summary>An object changed.</summary>
    Modified,

    /// <summary>An object was deleted, or vanished between two lists (it then carries the last state known).</summary>
    Deleted,

    /// <summary>A full list was applied: the cache now matches the server at the list's resourceVersion.</summary>
    Synced,
}

/// <summary>One informer notification.</summary>
/// <typeparam name="T">The object kind.</typeparam>
/// <param name="Kind">What happened.</param>
/// <param name="Item">The object (null for <see cref="InformerEventKind.Synced"/>).</param>
public readonly record struct InformerEvent<T>(InformerEventKind Kind, T? Item)
    where T : class;

/// <summary>The list and watch calls an informer drives.</summary>
/// <typeparam name="T">The object kind.</typeparam>
public interface IListWatchSource<T>
    where T : class
{
    /// <summary>Lists every object.</summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The objects and the list's resourceVersion.</returns>
    Task<(IReadOnlyList<T> Items, string ResourceVersion)> ListAsync(CancellationToken cancellationToken);

    /// <summary>Watches from a resourceVersion, with bookmarks.</summary>
    /// <param name="resourceVersion">The version to start after.</param>
    /// <param name="cancellationToken">Cancels the watch.</param>
    /// <returns>The events until the server ends the stream.</returns>
    IAsyncEnumerable<WatchEvent<T>> WatchAsync(string resourceVersion, CancellationToken cancellationToken);

    /// <summary>The cache key of an object (namespace/name).</summary>
    /// <param name="item">The object.</param>
    /// <returns>The key.</returns>
    string KeyOf(T item);

    /// <summary>The object's resourceVersion.</summary>
    /// <param name="item">The object.</param>
    /// <returns>The version.</returns>
    string? ResourceVersionOf(T item);
}

/// <summary>Pods matching a label selector, in one namespace or all, as an <see cref="IListWatchSource{T}"/>.</summary>
/// <param name="client">The client.</param>
/// <param name="namespaceName">Namespace, or null for all namespaces.</param>
/// <param name="labelSelector">Label selector.</param>
/// <param name="watchTimeoutSeconds">How long one watch request lasts before the server ends it.</param>
public sealed class PodListWatchSource(KubernetesClient client, string? namespaceName, string? labelSelector, int watchTimeoutSeconds = 300)
    : IListWatchSource<Pod>
{
    /// <inheritdoc />
    public async Task<(IReadOnlyList<Pod> Items, string ResourceVersion)> ListAsync(CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(client);
        var list = await client.ListPodsAsync(namespaceName, labelSelector, cancellationToken).ConfigureAwait(false);
        var items = new Pod[list.Items.Count];
        for (var i = 0; i < items.Length; i++)
        {
            items[i] = WithoutUnreadMetadata(list.Items[i]);
        }

        return (items, list.Metadata.ResourceVersion ?? "0");
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<WatchEvent<Pod>> WatchAsync(string resourceVersion, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(client);
        await foreach (var change in client.WatchPodsAsync(namespaceName, labelSelector, resourceVersion, allowWatchBookmarks: true, watchTimeoutSeconds, cancellationToken)
            .ConfigureAwait(false))
        {
            yield return change.Item is { } pod ? change with { Item = WithoutUnreadMetadata(pod) } : change;
        }
    }

    /// <summary>
    /// Pods stay cached for as long as they run, so the metadata fields Sharding never reads (<c>managedFields</c> is a few KB per
    /// pod) stay out of the cache. <see cref="ObjectMeta"/> keeps them only for objects written back whole (the Lease).
    /// </summary>
    private static Pod WithoutUnreadMetadata(Pod pod) =>
        pod.Metadata.ExtensionData is null ? pod : pod with { Metadata = pod.Metadata with { ExtensionData = null } };

    /// <inheritdoc />
    public string KeyOf(Pod item)
    {
        ArgumentNullException.ThrowIfNull(item);
        return item.Metadata.Namespace + "/" + item.Metadata.Name;
    }

    /// <inheritdoc />
    public string? ResourceVersionOf(Pod item)
    {
        ArgumentNullException.ThrowIfNull(item);
        return item.Metadata.ResourceVersion;
    }
}

/// <summary>Informer tuning.</summary>
public sealed record ResourceInformerOptions
{
    /// <summary>First retry delay after an error.</summary>
    /// <value>1 second, doubling per failure.</value>
    public TimeSpan BackoffBase { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Largest retry delay.</summary>
    /// <value>30 seconds: an apiserver back after a restart is noticed within half a minute.</value>
    public TimeSpan BackoffMax { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Randomize delays so many replicas do not reconnect in step.</summary>
    /// <value>True.</value>
    public bool UseJitter { get; init; } = true;

    /// <summary>A watch that ends cleanly sooner than this without delivering anything counts as a failure and backs off.</summary>
    /// <value>1 second, as client-go's reflector: a watch that lasted its timeoutSeconds, or delivered events, resumes at once.</value>
    public TimeSpan MinimumWatchDuration { get; init; } = TimeSpan.FromSeconds(1);
}

/// <summary>
/// A list-then-watch cache after client-go's reflector: it lists, watches from the list's resourceVersion, resumes from the
/// last version seen when a watch ends or drops, lists again on <c>410 Gone</c> (HTTP or an ERROR event) and reports
/// objects that vanished meanwhile as deleted, and backs off (Polly, exponential with jitter) on errors.
/// </summary>
/// <typeparam name="T">The object kind.</typeparam>
/// <remarks>
/// Steps: (1) list and diff against the cache (Added/Modified/Deleted), then Synced; (2) watch from the last version;
/// (3) a watch that ends cleanly resumes at once from the last version (event or bookmark), unless it ended sooner than
/// <see cref="ResourceInformerOptions.MinimumWatchDuration"/> with nothing delivered: that counts as an error (5);
/// (4) 410 goes back to 1 (after a backoff when the version came from the list just made); (5) any other error waits (backoff)
/// and resumes at 2, or 1 if nothing was listed yet. A 403 is logged with the RBAC rule that is missing.
/// </remarks>
public sealed partial class ResourceInformer<T>
    where T : class
{
    private readonly IListWatchSource<T> _source;
    private readonly ILogger _logger;
    private readonly ResiliencePipeline _pipeline;
    private readonly TimeProvider _timeProvider;
    private readonly TimeSpan _minimumWatchDuration;
    private readonly Dictionary<string, T> _cache = new(StringComparer.Ordinal);
    private string? _resourceVersion;
    private bool _mustList = true;

    /// <summary>Creates the informer.</summary>
    /// <param name="source">List and watch calls.</param>
    /// <param name="options">Backoff.</param>
    /// <param name="timeProvider">Clock for backoff delays.</param>
    /// <param name="logger">Logger.</param>
    public ResourceInformer(IListWatchSource<T> source, ResourceInformerOptions? options = null, TimeProvider? timeProvider = null, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        options ??= new ResourceInformerOptions();
        _source = source;
        _logger = logger ?? NullLogger.Instance;
        _timeProvider = timeProvider ?? TimeProvider.System;
        _minimumWatchDuration = options.MinimumWatchDuration;
        _pipeline = new ResiliencePipelineBuilder { TimeProvider = _timeProvider }
            .AddRetry(new RetryStrategyOptions
            {
                // Let shutdown through; everything else (HTTP, I/O, JSON, Status errors) is retried.
                ShouldHandle = new PredicateBuilder().Handle<Exception>(static ex => ex is not OperationCanceledException),
                MaxRetryAttempts = int.MaxValue,
                BackoffType = DelayBackoffType.Exponential,
                Delay = options.BackoffBase,
                MaxDelay = options.BackoffMax,
                UseJitter = options.UseJitter,
                OnRetry = args =>
                {
                    LogRetrying(args.Outcome.Exception);
                    return ValueTask.CompletedTask;
                },
            })
            .Build();
    }

    /// <summary>Runs until cancelled, reporting every change.</summary>
    /// <param name="cancellationToken">Stops the informer.</param>
    /// <returns>Events: adds, changes, deletes and a Synced after every full list.</returns>
    public async IAsyncEnumerable<InformerEvent<T>> RunAsync([EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var channel = Channel.CreateUnbounded<InformerEvent<T>>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var producer = Task.Run(() => ProduceAsync(channel.Writer, stop.Token), CancellationToken.None);
        try
        {
            await foreach (var item in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                yield return item;
            }
        }
        finally
        {
            await stop.CancelAsync().ConfigureAwait(false);
            try
            {
                await producer.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
        }
    }

    private async Task ProduceAsync(ChannelWriter<InformerEvent<T>> writer, CancellationToken cancellationToken)
    {
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                // One pipeline execution per watch session, so a session that ends cleanly resets the backoff.
                await _pipeline.ExecuteAsync(
                    static async (state, ct) => await state.self.SessionAsync(state.writer, ct).ConfigureAwait(false),
                    (self: this, writer),
                    cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
        finally
        {
            writer.TryComplete();
        }
    }

    private async ValueTask SessionAsync(ChannelWriter<InformerEvent<T>> writer, CancellationToken cancellationToken)
    {
        var listed = _mustList || _resourceVersion is null;
        try
        {
            // Step 1: list and diff.
            if (listed)
            {
                var (items, listVersion) = await _source.ListAsync(cancellationToken).ConfigureAwait(false);
                await ApplyListAsync(writer, items, cancellationToken).ConfigureAwait(false);
                _resourceVersion = listVersion;
                _mustList = false;
                LogListed(_cache.Count, listVersion);
                await writer.WriteAsync(new InformerEvent<T>(InformerEventKind.Synced, null), cancellationToken).ConfigureAwait(false);
            }

            // Step 2: watch from the last version.
            var watchStart = _timeProvider.GetTimestamp();
            var delivered = false;
            await foreach (var change in _source.WatchAsync(_resourceVersion!, cancellationToken).ConfigureAwait(false))
            {
                delivered = true;
                switch (change.Type)
                {
                    case WatchEventType.Error:
                        var status = change.Status!;
                        if (status.Code == 410 || status.Reason is "Expired" or "Gone")
                        {
                            // Step 4: the version left the server's window; list again.
                            Expired(listed, status.Message);
                            return;
                        }

                        throw new KubernetesApiException(status, "watch", "objects", string.Empty, null);
                    case WatchEventType.Bookmark:
                        _resourceVersion = change.ResourceVersion ?? _resourceVersion;
                        break;
                    case WatchEventType.Deleted:
                        _cache.Remove(_source.KeyOf(change.Item!));
                        _resourceVersion = change.ResourceVersion ?? _resourceVersion;
                        await writer.WriteAsync(new InformerEvent<T>(InformerEventKind.Deleted, change.Item), cancellationToken).ConfigureAwait(false);
                        break;
                    default:
                        var key = _source.KeyOf(change.Item!);
                        var kind = _cache.ContainsKey(key) ? InformerEventKind.Modified : InformerEventKind.Added;
                        _cache[key] = change.Item!;
                        _resourceVersion = change.ResourceVersion ?? _resourceVersion;
                        await writer.WriteAsync(new InformerEvent<T>(kind, change.Item), cancellationToken).ConfigureAwait(false);
                        break;
                }
            }

            // Step 3: the server ended the watch (timeoutSeconds) or the connection closed cleanly: resume. One that ended at once
            // with nothing (a proxy closing every watch, an apiserver shedding load) would be reopened in a hot loop: back off.
            var lasted = _timeProvider.GetElapsedTime(watchStart);
            if (!delivered && lasted < _minimumWatchDuration)
            {
                throw new IOException(string.Create(
                    CultureInfo.InvariantCulture, $"The watch from resourceVersion {_resourceVersion} ended after {lasted.TotalMilliseconds:0} ms without any event."));
            }

            LogWatchEnded(_resourceVersion!);
        }
        catch (KubernetesApiException ex) when (ex.IsGone)
        {
            Expired(listed, ex.Message);
        }
        catch (KubernetesApiException ex) when (ex.IsForbidden)
        {
            LogForbidden(ex.Message, ex.MissingPermission);
            throw;
        }
        catch (OperationCanceledException ex) when (!cancellationToken.IsCancellationRequested)
        {
            // The client's own request timeout, not our shutdown: a failure like any other. Left as an OperationCanceledException
            // it would pass the retry policy (which lets shutdown through) and end the informer for good.
            throw new TimeoutException("The list or watch request timed out.", ex);
        }
    }

    /// <summary>
    /// A 410 for a version that left the server's window lists again at once. For the version a list returned a moment ago it
    /// is not the window (a server or proxy that cannot keep any watch): listing again at once would be a hot loop of whole
    /// lists, so that one backs off, as client-go's reflector does.
    /// </summary>
    private void Expired(bool listed, string? message)
    {
        _mustList = true;
        LogExpired(_resourceVersion ?? "?", message);
        if (listed)
        {
            throw new IOException($"The watch from resourceVersion {_resourceVersion}, which a list had just returned, expired at once: {message}");
        }
    }

    private async ValueTask ApplyListAsync(ChannelWriter<InformerEvent<T>> writer, IReadOnlyList<T> items, CancellationToken cancellationToken)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var item in items)
        {
            var key = _source.KeyOf(item);
            seen.Add(key);
            if (_cache.TryGetValue(key, out var old))
            {
                if (string.Equals(_source.ResourceVersionOf(old), _source.ResourceVersionOf(item), StringComparison.Ordinal))
                {
                    continue;
                }

                _cache[key] = item;
                await writer.WriteAsync(new InformerEvent<T>(InformerEventKind.Modified, item), cancellationToken).ConfigureAwait(false);
            }
            else
            {
                _cache[key] = item;
                await writer.WriteAsync(new InformerEvent<T>(InformerEventKind.Added, item), cancellationToken).ConfigureAwait(false);
            }
        }

        // Objects deleted while we were not watching: their DELETED events are lost, so report them now.
        foreach (var key in _cache.Keys.Where(k => !seen.Contains(k)).ToList())
        {
            var gone = _cache[key];
            _cache.Remove(key);
            await writer.WriteAsync(new InformerEvent<T>(InformerEventKind.Deleted, gone), cancellationToken).ConfigureAwait(false);
        }
    }

    [LoggerMessage(EventId = 250, EventName = "InformerListed", Level = LogLevel.Debug, Message = "Listed {Count} objects at resourceVersion {ResourceVersion}")]
    private partial void LogListed(int count, string resourceVersion);

    [LoggerMessage(EventId = 251, EventName = "InformerExpired", Level = LogLevel.Information, Message = "Watch from resourceVersion {ResourceVersion} expired ({Message}); listing again")]
    private partial void LogExpired(string resourceVersion, string? message);

    [LoggerMessage(EventId = 252, EventName = "InformerRetrying", Level = LogLevel.Warning, Message = "List or watch failed; retrying with backoff")]
    private partial void LogRetrying(Exception? exception);

    [LoggerMessage(EventId = 253, EventName = "InformerForbidden", Level = LogLevel.Error, Message = "{Message}. RBAC does not allow it: grant {Permission}")]
    private partial void LogForbidden(string message, string permission);

    [LoggerMessage(EventId = 254, EventName = "InformerWatchEnded", Level = LogLevel.Debug, Message = "Watch ended; resuming from resourceVersion {ResourceVersion}")]
    private partial void LogWatchEnded(string resourceVersion);
}

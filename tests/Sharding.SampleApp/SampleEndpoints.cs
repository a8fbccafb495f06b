using System.Globalization;
using System.Text;
using Microsoft.Extensions.Options;

namespace Sharding.SampleApp;

/// <summary>The sample app's HTTP surface.</summary>
internal static class SampleEndpoints
{
    private const string KeyHeader = "x-shard-key";

    public static void MapSampleEndpoints(this WebApplication app)
    {
        // Counters: the key comes from x-shard-key, or the path (/counters/{key}) for path-rule tests.
        app.MapPost("/counter", (HttpContext context, CounterStore store, OwnershipChecker checker, IOptions<SampleAppOptions> options) =>
            Increment(context, KeyFromHeader(context), store, checker, options.Value));
        app.MapGet("/counter", (HttpContext context, CounterStore store, OwnershipChecker checker, IOptions<SampleAppOptions> options) =>
            Read(context, KeyFromHeader(context), store, checker, options.Value));
        app.MapPost("/counters/{key}", (HttpContext context, string key, CounterStore store, OwnershipChecker checker, IOptions<SampleAppOptions> options) =>
            Increment(context, key, store, checker, options.Value));
        app.MapGet("/counters/{key}", (HttpContext context, string key, CounterStore store, OwnershipChecker checker, IOptions<SampleAppOptions> options) =>
            Read(context, key, store, checker, options.Value));

        // Watch a key's counter as server-sent events: one event now, then on every change or heartbeat.
        app.MapGet("/watch", WatchAsync);

        // The same watch over gRPC server streaming (h2c): sample.v1.Counter/Watch, see GrpcWatch.
        app.MapPost(GrpcWatch.Path, GrpcWatch.HandleAsync);

        app.MapGet("/stats", (CounterStore store, OwnershipChecker checker) => Results.Json(checker.Snapshot(store.KeyCount), SampleJsonContext.Default.OwnershipStats));
        app.MapGet("/served", (OwnershipChecker checker) => Results.Json(checker.Served, SampleJsonContext.Default.IReadOnlyCollectionServedRecord));
        app.MapGet("/healthz", () => "ok");
    }

    internal static string? KeyFromHeader(HttpContext context) =>
        context.Request.Headers.TryGetValue(KeyHeader, out var values) && values.Count > 0 && !string.IsNullOrEmpty(values[0]) ? values[0] : null;

    private static async Task<IResult> Increment(HttpContext context, string? key, CounterStore store, OwnershipChecker checker, SampleAppOptions options)
    {
        if (key is null)
        {
            return Results.BadRequest("missing x-shard-key");
        }

        var value = store.Increment(key);
        await checker.CheckAsync(key, RoutedGeneration(context), context.RequestAborted).ConfigureAwait(false);
        return Results.Json(new CounterReply(options.PodName, key, value), SampleJsonContext.Default.CounterReply);
    }

    private static async Task<IResult> Read(HttpContext context, string? key, CounterStore store, OwnershipChecker checker, SampleAppOptions options)
    {
        if (key is null)
        {
            return Results.BadRequest("missing x-shard-key");
        }

        await checker.CheckAsync(key, RoutedGeneration(context), context.RequestAborted).ConfigureAwait(false);
        return Results.Json(new CounterReply(options.PodName, key, store.Get(key)), SampleJsonContext.Default.CounterReply);
    }

    private static async Task WatchAsync(HttpContext context, CounterStore store, OwnershipChecker checker, IOptions<SampleAppOptions> options, TimeProvider time)
    {
        var key = KeyFromHeader(context) ?? context.Request.Query["key"].ToString();
        if (string.IsNullOrEmpty(key))
        {
            context.Response.StatusCode = StatusCodes.Status400BadRequest;
            await context.Response.WriteAsync("missing x-shard-key", context.RequestAborted).ConfigureAwait(false);
            return;
        }

        await checker.CheckAsync(key, RoutedGeneration(context), context.RequestAborted).ConfigureAwait(false);
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
        var pod = options.Value.PodName;
        var token = context.RequestAborted;
        try
        {
            while (!token.IsCancellationRequested)
            {
                var changed = store.NextChangeAsync(key);
                var line = string.Create(CultureInfo.InvariantCulture, $"data: {{\"pod\":\"{pod}\",\"key\":\"{JsonEscape(key)}\",\"value\":{store.Get(key)}}}\n\n");
                checker.RecordServed(key, RoutedGeneration(context));
                await context.Response.WriteAsync(line, Encoding.UTF8, token).ConfigureAwait(false);
                await context.Response.Body.FlushAsync(token).ConfigureAwait(false);
                await Task.WhenAny(changed, Task.Delay(options.Value.WatchHeartbeat, time, token)).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            // The client (or the draining sidecar) ended the stream.
        }
    }

    internal static long RoutedGeneration(HttpContext context) =>
        context.Request.Headers.TryGetValue("x-sharding-generation", out var values)
        && long.TryParse(values.ToString(), NumberStyles.None, CultureInfo.InvariantCulture, out var generation) ? generation : -1;

    private static string JsonEscape(string text) => System.Text.Json.JsonEncodedText.Encode(text).ToString();
}

internal sealed record CounterReply(string Pod, string Key, long Value);

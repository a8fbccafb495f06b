using System.Buffers;
using System.Text.Json;
using Microsoft.Extensions.Options;
using Sharding.Mapping;
using Sharding.Net;

namespace Sharding.Sidecar.Hosting;

/// <summary>
/// What this pod owns, for the app beside the sidecar (admin port, loopback callers only; others get 403).
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item><c>GET /v1/ownership?key=K</c> → <c>{"key":"K","owned":true,"owner":"pod-1","generation":7}</c>.</item>
/// <item><c>POST /v1/ownership/check</c> with <c>["a","b"]</c> or <c>{"keys":["a","b"]}</c> (at most
/// <see cref="SidecarOptions.OwnershipCheckMaxKeys"/> keys; 400 malformed, 413 too many or too large) →
/// <c>{"generation":7,"self":"pod-1","owned":["a"],"others":[{"key":"b","owner":"pod-2"}]}</c>.</item>
/// <item><c>GET /v1/ownership/watch</c> → NDJSON (<c>application/x-ndjson</c>), one line now and one per new generation:
/// <c>{"generation":7,"self":"pod-1","member":true,"members":["pod-0","pod-1"]}</c>.</item>
/// </list>
/// Every answer is computed on one map snapshot, so owner and generation always agree.
/// </remarks>
internal sealed class OwnershipApi(ShardMapStore store, IOptions<SidecarOptions> options, IHostApplicationLifetime lifetime)
{
    public const string PathPrefix = "/v1/ownership";
    private const int MaxKeyLength = Keys.ShardKeyExtractor.MaxKeyLength;

    private readonly SidecarOptions _options = options.Value;

    public async Task HandleAsync(HttpContext context, string path)
    {
        var response = context.Response;
        if (ClientAddress.Of(context.Connection.RemoteIpAddress) is not { } remote || !System.Net.IPAddress.IsLoopback(remote))
        {
            await PlainAsync(context, StatusCodes.Status403Forbidden, "the ownership API answers loopback callers only (the app beside this sidecar)").ConfigureAwait(false);
            return;
        }

        var map = store.Current;
        if (map is null || map.IsEmpty)
        {
            response.Headers.RetryAfter = "1";
            await PlainAsync(context, StatusCodes.Status503ServiceUnavailable, "no shard map yet").ConfigureAwait(false);
            return;
        }

        var method = context.Request.Method;
        switch (path)
        {
            case PathPrefix when HttpMethods.IsGet(method):
                await OneAsync(context, map).ConfigureAwait(false);
                return;
            case PathPrefix + "/check" when HttpMethods.IsPost(method):
                await CheckAsync(context, map).ConfigureAwait(false);
                return;
            case PathPrefix + "/watch" when HttpMethods.IsGet(method):
                await WatchAsync(context).ConfigureAwait(false);
                return;
            case PathPrefix or PathPrefix + "/check" or PathPrefix + "/watch":
                await PlainAsync(context, StatusCodes.Status405MethodNotAllowed, "use GET /v1/ownership?key=K, POST /v1/ownership/check, GET /v1/ownership/watch").ConfigureAwait(false);
                return;
            default:
                await PlainAsync(context, StatusCodes.Status404NotFound, "use GET /v1/ownership?key=K, POST /v1/ownership/check, GET /v1/ownership/watch").ConfigureAwait(false);
                return;
        }
    }

    private async Task OneAsync(HttpContext context, ShardMap map)
    {
        var key = context.Request.Query["key"];
        if (key.Count != 1 || string.IsNullOrEmpty(key[0]) || key[0]!.Length > MaxKeyLength)
        {
            await PlainAsync(context, StatusCodes.Status400BadRequest, $"give exactly one ?key= of 1..{MaxKeyLength} characters").ConfigureAwait(false);
            return;
        }

        var owner = map.OwnerOf(key[0].AsSpan())!;
        context.Response.ContentType = "application/json; charset=utf-8";
        await using var json = new Utf8JsonWriter(context.Response.BodyWriter);
        json.WriteStartObject();
        json.WriteString("key", key[0]);
        json.WriteBoolean("owned", IsSelf(owner));
        json.WriteString("owner", owner.Name);
        json.WriteNumber("generation", map.Generation);
        json.WriteEndObject();
        await json.FlushAsync(context.RequestAborted).ConfigureAwait(false);
    }

    private async Task CheckAsync(HttpContext context, ShardMap map)
    {
        // Bounded body: a key list of the allowed size with room for JSON quoting.
        var maxBytes = (long)_options.OwnershipCheckMaxKeys * (MaxKeyLength + 8) + 64;
        if (context.Request.ContentLength > maxBytes)
        {
            await PlainAsync(context, StatusCodes.Status413PayloadTooLarge, $"the body is over {maxBytes} bytes").ConfigureAwait(false);
            return;
        }

        List<string> keys;
        try
        {
            using var body = new MemoryStream();
            var buffer = new byte[16 * 1024];
            int read;

            // Bounded by maxBytes.
            while ((read = await context.Request.Body.ReadAsync(buffer, context.RequestAborted).ConfigureAwait(false)) > 0)
            {
                if (body.Length + read > maxBytes)
                {
                    await PlainAsync(context, StatusCodes.Status413PayloadTooLarge, $"the body is over {maxBytes} bytes").ConfigureAwait(false);
                    return;
                }

                body.Write(buffer, 0, read);
            }

            keys = ParseKeys(body.GetBuffer().AsSpan(0, (int)body.Length));
        }
        catch (JsonException ex)
        {
            await PlainAsync(context, StatusCodes.Status400BadRequest, $"expected a JSON array of key strings or {{\"keys\":[...]}}: {ex.Message}").ConfigureAwait(false);
            return;
        }

        if (keys.Count > _options.OwnershipCheckMaxKeys)
        {
            await PlainAsync(context, StatusCodes.Status413PayloadTooLarge, $"{keys.Count} keys; at most {_options.OwnershipCheckMaxKeys} per request (Sidecar:OwnershipCheckMaxKeys)").ConfigureAwait(false);
            return;
        }

        foreach (var key in keys)
        {
            if (key.Length is 0 || key.Length > MaxKeyLength)
            {
                await PlainAsync(context, StatusCodes.Status400BadRequest, $"every key must have 1..{MaxKeyLength} characters").ConfigureAwait(false);
                return;
            }
        }

        context.Response.ContentType = "application/json; charset=utf-8";
        await using var json = new Utf8JsonWriter(context.Response.BodyWriter);
        json.WriteStartObject();
        json.WriteNumber("generation", map.Generation);
        json.WriteString("self", _options.PodName);
        json.WriteStartArray("owned");
        var owners = new ShardMember[keys.Count];
        for (var i = 0; i < keys.Count; i++)
        {
            owners[i] = map.OwnerOf(keys[i].AsSpan())!;
            if (IsSelf(owners[i]))
            {
                json.WriteStringValue(keys[i]);
            }
        }

        json.WriteEndArray();
        json.WriteStartArray("others");
        for (var i = 0; i < keys.Count; i++)
        {
            if (!IsSelf(owners[i]))
            {
                json.WriteStartObject();
                json.WriteString("key", keys[i]);
                json.WriteString("owner", owners[i].Name);
                json.WriteEndObject();
            }
        }

        json.WriteEndArray();
        json.WriteEndObject();
        await json.FlushAsync(context.RequestAborted).ConfigureAwait(false);
    }

    private static List<string> ParseKeys(ReadOnlySpan<byte> body)
    {
        var reader = new Utf8JsonReader(body);
        var keys = new List<string>();
        if (!reader.Read())
        {
            throw new JsonException("empty body");
        }

        var wrapped = false;
        if (reader.TokenType == JsonTokenType.StartObject)
        {
            // {"keys": [...]}
            if (!reader.Read() || reader.TokenType != JsonTokenType.PropertyName || !reader.ValueTextEquals("keys"u8) || !reader.Read())
            {
                throw new JsonException("the object must be {\"keys\":[...]}");
            }

            wrapped = true;
        }

        if (reader.TokenType != JsonTokenType.StartArray)
        {
            throw new JsonException("expected an array of strings");
        }

        // Bounded by the body.
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.String)
            {
                throw new JsonException("every key must be a string");
            }

            keys.Add(reader.GetString()!);
        }

        if (wrapped && (!reader.Read() || reader.TokenType != JsonTokenType.EndObject))
        {
            throw new JsonException("the object must have only \"keys\"");
        }

        if (reader.Read())
        {
            throw new JsonException("unexpected content after the key list");
        }

        return keys;
    }

    private async Task WatchAsync(HttpContext context)
    {
        var response = context.Response;
        response.ContentType = "application/x-ndjson";
        response.Headers.CacheControl = "no-cache";
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, lifetime.ApplicationStopping);
        var token = stop.Token;
        var last = -1L;
        try
        {
            // Bounded by the client or shutdown: one line per generation.
            while (!token.IsCancellationRequested)
            {
                var map = store.Current;
                if (map is not null && map.Generation > last)
                {
                    last = map.Generation;
                    await WriteGenerationAsync(response, map, token).ConfigureAwait(false);
                }

                await store.WaitForGenerationAsync(last + 1, Timeout.InfiniteTimeSpan, token).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
            // The app went away, or the sidecar is stopping: the stream ends.
        }
    }

    private async Task WriteGenerationAsync(HttpResponse response, ShardMap map, CancellationToken cancellationToken)
    {
        var json = new Utf8JsonWriter(response.BodyWriter);
        await using (json.ConfigureAwait(false))
        {
            json.WriteStartObject();
            json.WriteNumber("generation", map.Generation);
            json.WriteString("self", _options.PodName);
            json.WriteBoolean("member", map.FindMember(_options.PodName) is not null);
            json.WriteStartArray("members");
            foreach (var member in map.Members)
            {
                json.WriteStringValue(member.Name);
            }

            json.WriteEndArray();
            json.WriteEndObject();
            await json.FlushAsync(cancellationToken).ConfigureAwait(false);
        }

        response.BodyWriter.Write("\n"u8);
        await response.BodyWriter.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

    private bool IsSelf(ShardMember owner) => string.Equals(owner.Name, _options.PodName, StringComparison.Ordinal);

    private static async Task PlainAsync(HttpContext context, int status, string message)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "text/plain; charset=utf-8";
        await context.Response.WriteAsync(string.Concat(message, "\n"), context.RequestAborted).ConfigureAwait(false);
    }
}

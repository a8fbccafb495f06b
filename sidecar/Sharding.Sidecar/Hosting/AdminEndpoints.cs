using System.Text.Json;
using Sharding.Hashing;
using Sharding.Mapping;
using Sharding.Metrics;
using Sharding.Sidecar.Forwarding;

namespace Sharding.Sidecar.Hosting;

/// <summary>Marks connections accepted on the admin port (set by a connection middleware, read from the request's features).</summary>
internal sealed class AdminConnectionFeature
{
    public static readonly AdminConnectionFeature Instance = new();
}

/// <summary>
/// The admin port: <c>/metrics</c>, <c>/healthz</c>, <c>/readyz</c> (a map is present), <c>/v1/map</c>, and the ownership API
/// for the app beside the sidecar (loopback callers only): <c>/v1/ownership</c>, <c>/v1/ownership/check</c>, <c>/v1/ownership/watch</c>.
/// </summary>
internal sealed class AdminEndpoints(
    ShardMapStore store, PrometheusExporter exporter, OwnerCircuitStates circuits, Microsoft.Extensions.Options.IOptions<SidecarOptions> options,
    OwnershipApi ownership)
{
    public async Task HandleAsync(HttpContext context)
    {
        var path = context.Request.Path.Value ?? "/";
        var response = context.Response;
        if (path.StartsWith(OwnershipApi.PathPrefix, StringComparison.Ordinal))
        {
            await ownership.HandleAsync(context, path).ConfigureAwait(false);
            return;
        }

        if (!HttpMethods.IsGet(context.Request.Method) && !HttpMethods.IsHead(context.Request.Method))
        {
            response.StatusCode = StatusCodes.Status405MethodNotAllowed;
            return;
        }

        switch (path)
        {
            case "/metrics":
                response.ContentType = PrometheusExporter.ContentType;
                await response.WriteAsync(exporter.Collect(), context.RequestAborted).ConfigureAwait(false);
                return;
            case "/healthz":
                await response.WriteAsync("ok\n", context.RequestAborted).ConfigureAwait(false);
                return;
            case "/readyz":
                var map = store.Current;
                if (map is null)
                {
                    response.StatusCode = StatusCodes.Status503ServiceUnavailable;
                    await response.WriteAsync("no shard map yet\n", context.RequestAborted).ConfigureAwait(false);
                    return;
                }

                await response.WriteAsync($"ok: service {map.Service} generation {map.Generation}\n", context.RequestAborted).ConfigureAwait(false);
                return;
            case "/v1/map":
                await WriteMapAsync(context).ConfigureAwait(false);
                return;
            default:
                response.StatusCode = StatusCodes.Status404NotFound;
                await response.WriteAsync("unknown admin path: use /metrics, /healthz, /readyz, /v1/map or /v1/ownership\n", context.RequestAborted).ConfigureAwait(false);
                return;
        }
    }

    private async Task WriteMapAsync(HttpContext context)
    {
        var map = store.Current;
        var response = context.Response;
        if (map is null)
        {
            response.StatusCode = StatusCodes.Status503ServiceUnavailable;
            await response.WriteAsync("no shard map yet\n", context.RequestAborted).ConfigureAwait(false);
            return;
        }

        response.ContentType = "application/json; charset=utf-8";
        var writer = new JsonWriterOptions { Indented = true };
        await using var json = new Utf8JsonWriter(response.BodyWriter, writer);
        json.WriteStartObject();
        json.WriteString("service", map.Service);
        json.WriteNumber("generation", map.Generation);
        json.WriteString("self", options.Value.PodName);
        json.WriteString("algorithm", map.Algorithm.ToName());
        json.WriteString("hashKey", map.HashKeySource.ToString().ToLowerInvariant());
        json.WriteString("checksum", XxHash64.ToHex(map.Checksum));
        json.WriteStartArray("members");
        foreach (var member in map.Members)
        {
            json.WriteStartObject();
            json.WriteString("name", member.Name);
            json.WriteString("address", member.Address);
            json.WriteNumber("weight", member.Weight);
            json.WriteString("circuit", circuits.StateOf(member.Name)?.ToString().ToLowerInvariant() ?? "closed");
            json.WriteEndObject();
        }

        json.WriteEndArray();
        json.WriteStartObject("keys");
        json.WriteStartArray("rules");
        foreach (var rule in map.KeyPolicy.Rules)
        {
            json.WriteStringValue(rule.ToString());
        }

        json.WriteEndArray();
        json.WriteString("noKey", map.KeyPolicy.NoKey.ToString());
        if (map.KeyPolicy.FallbackMember is { } fallback)
        {
            json.WriteString("fallbackMember", fallback);
        }

        json.WriteNumber("maxBodyBytes", map.KeyPolicy.MaxBodyBytes);
        json.WriteEndObject();
        json.WriteEndObject();
        await json.FlushAsync(context.RequestAborted).ConfigureAwait(false);
    }
}

using Sharding.ControlPlane.Distribution;
using Sharding.Hashing;
using Sharding.Mapping;

namespace Sharding.ControlPlane.Lookup;

/// <summary>The directory service: which member owns a key, and the maps themselves, as JSON.</summary>
internal static class DirectoryEndpoints
{
    public static void MapDirectory(this IEndpointRouteBuilder endpoints)
    {
        endpoints.MapGet("/v1/services", (ShardMapRegistry registry) => registry.CutOff is { } cutOff
            ? CutOff(cutOff)
            : Results.Json(new ServiceList([.. registry.All.OrderBy(static p => p.Map.Service, StringComparer.Ordinal).Select(static p => Summary(p.Map))])));

        endpoints.MapGet("/v1/services/{service}/map", (string service, string? table, ShardMapRegistry registry) =>
        {
            // Parsed here, not bound as bool?: the framework answers a bad value with an empty 400.
            var withTable = true;
            if (table is not null && !bool.TryParse(table, out withTable))
            {
                return Results.Json(new ErrorView($"query parameter 'table' must be true or false, not '{table}'"), statusCode: StatusCodes.Status400BadRequest);
            }

            if (registry.CutOff is { } cutOff)
            {
                return CutOff(cutOff);
            }

            if (!registry.TryGet(service, out var publication))
            {
                return UnknownService(service, registry);
            }

            var map = publication.Map;
            var members = map.Members.Select(m => new MemberView(m.Name, m.Address, m.Weight, EntryCount(map, m))).ToArray();
            string[]? names = null;
            if (withTable && map.Table is MaglevTable maglev)
            {
                var byIndex = map.Table.Members.Select(h => map.Members.First(m => string.Equals(map.HashKeySource == HashKeySource.Address ? m.Address : m.Name, h.Name, StringComparison.Ordinal)).Name).ToArray();
                var entries = maglev.Entries;
                names = new string[entries.Length];
                for (var i = 0; i < names.Length; i++)
                {
                    names[i] = byIndex[entries[i]];
                }
            }

            return Results.Json(new MapView(
                map.Service, map.Generation, map.Algorithm.ToName(), map.TableOptions.MaglevTableSize, map.HashKeySource == HashKeySource.Address ? "address" : "name",
                XxHash64.ToHex(map.Checksum), [.. map.KeyPolicy.Rules.Select(static r => r.ToString())], members, names));
        });

        endpoints.MapGet("/v1/lookup", (string? service, string? key, ShardMapRegistry registry) =>
        {
            if (string.IsNullOrEmpty(service))
            {
                return Results.Json(new ErrorView("query parameter 'service' is required: /v1/lookup?service=S&key=K"), statusCode: StatusCodes.Status400BadRequest);
            }

            if (key is null)
            {
                return Results.Json(new ErrorView("query parameter 'key' is required: /v1/lookup?service=S&key=K"), statusCode: StatusCodes.Status400BadRequest);
            }

            if (registry.CutOff is { } cutOff)
            {
                return CutOff(cutOff);
            }

            if (!registry.TryGet(service, out var publication))
            {
                return UnknownService(service, registry);
            }

            var owner = publication.Map.OwnerOf(key.AsSpan());
            return owner is null
                ? Results.Json(new ErrorView($"service '{service}' has no member that can own keys at generation {publication.Map.Generation}"), statusCode: StatusCodes.Status503ServiceUnavailable)
                : Results.Json(new LookupView(service, key, owner.Name, owner.Address, publication.Map.Generation));
        });
    }

    /// <summary>404 naming the known services; 503 (retry) while this replica has no complete view, when it cannot tell yet.</summary>
    private static IResult UnknownService(string service, ShardMapRegistry registry) => registry.IsSynced
        ? Results.Json(new ErrorView($"unknown service '{service}'; known services: {string.Join(", ", registry.Services.Order(StringComparer.Ordinal))}"), statusCode: StatusCodes.Status404NotFound)
        : new RetryLater($"service '{service}' not found yet: this control plane replica is not in sync (no complete membership view yet); retry");

    /// <summary>503 (retry) while this follower cannot hear the leader: its maps may be stale, another replica's are not.</summary>
    private static RetryLater CutOff(string reason) =>
        new($"this control plane replica is cut off from the leader ({reason}), so its maps may be stale; ask another replica");

    /// <summary>503 with <c>Retry-After: 1</c> and the reason as JSON.</summary>
    private sealed class RetryLater(string message) : IResult
    {
        public Task ExecuteAsync(HttpContext httpContext)
        {
            httpContext.Response.Headers.RetryAfter = "1";
            return Results.Json(new ErrorView(message), statusCode: StatusCodes.Status503ServiceUnavailable).ExecuteAsync(httpContext);
        }
    }

    private static int EntryCount(ShardMap map, ShardMember member)
    {
        if (map.Table is not MaglevTable maglev)
        {
            return 0;
        }

        var hashKey = map.HashKeySource == HashKeySource.Address ? member.Address : member.Name;
        for (var i = 0; i < map.Table.Members.Length; i++)
        {
            if (string.Equals(map.Table.Members[i].Name, hashKey, StringComparison.Ordinal))
            {
                return maglev.EntryCount(i);
            }
        }

        return 0;
    }

    private static ServiceView Summary(ShardMap map) =>
        new(map.Service, map.Generation, map.Algorithm.ToName(), map.Members.Length, XxHash64.ToHex(map.Checksum));

    internal sealed record ServiceList(ServiceView[] Services);

    internal sealed record ServiceView(string Name, long Generation, string Algorithm, int Members, string Checksum);

    internal sealed record MemberView(string Name, string Address, uint Weight, int Entries);

    internal sealed record MapView(
        string Service, long Generation, string Algorithm, int TableSize, string HashKey, string Checksum, string[] KeyRules, MemberView[] Members, string[]? Table);

    internal sealed record LookupView(string Service, string Key, string Owner, string Address, long Generation);

    internal sealed record ErrorView(string Error);
}

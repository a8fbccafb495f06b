using System.Buffers;
using System.Collections.Immutable;
using System.Text;
using System.Text.Json;

namespace Sharding.Keys;

/// <summary>
/// Finds a request's shard key by a <see cref="ShardKeyPolicy"/>: the compiled form of its rules, built once per policy and
/// shared by all requests (immutable, thread-safe).
/// </summary>
/// <remarks>
/// <para>Used by the sidecar for incoming requests and by the client library for outgoing ones, so both find the same key.</para>
/// <para>
/// Rules that read the request line and headers (header, path, query, cookie) are tried first, in their configured order;
/// JSON body rules come after them, in order, because they need the body. Nothing here allocates per request: keys are
/// written into a caller-provided buffer of at least <see cref="MaxKeyLength"/> chars, decoding is done over spans.
/// </para>
/// <list type="bullet">
/// <item>header: the first value, trimmed;</item>
/// <item>path: a template such as <c>/docs/{key}/edit</c>; <c>*</c> or <c>{name}</c> match any one segment, a trailing
/// <c>...</c> or <c>**</c> any rest; the path may continue after the template; literal segments compare ordinally ignoring
/// case; the key segment is percent-decoded;</item>
/// <item>query: the first parameter of that name, percent- and '+'-decoded;</item>
/// <item>cookie: the first cookie of that name, surrounding quotes removed;</item>
/// <item>json: <c>$.a.b</c>, a string or number value; the reader stops as soon as the field is found.</item>
/// </list>
/// An empty value counts as no key.
/// </remarks>
public sealed class ShardKeyExtractor
{
    /// <summary>The longest key accepted, in chars; callers give destinations at least this long.</summary>
    public const int MaxKeyLength = 1024;

    private const string CookieHeader = "cookie";

    private readonly CompiledRule[] _requestRules;
    private readonly CompiledRule[] _bodyRules;

    /// <summary>Compiles a policy.</summary>
    /// <param name="policy">The policy.</param>
    public ShardKeyExtractor(ShardKeyPolicy policy)
    {
        ArgumentNullException.ThrowIfNull(policy);
        Policy = policy;
        var requestRules = new List<CompiledRule>();
        var bodyRules = new List<CompiledRule>();
        foreach (var rule in policy.Rules)
        {
            var compiled = new CompiledRule(rule);
            (rule.Kind == ShardKeyRuleKind.JsonBody ? bodyRules : requestRules).Add(compiled);
        }

        _requestRules = [.. requestRules];
        _bodyRules = [.. bodyRules];
        RulesDescription = policy.DescribeRules();
    }

    /// <summary>
    /// The extractor for <paramref name="policy"/>: <paramref name="current"/> when it was compiled from an equal policy (a new
    /// generation with the same rules), else a newly compiled one. Rules compile once per policy, not once per map.
    /// </summary>
    /// <param name="policy">The policy of the new map.</param>
    /// <param name="current">The extractor in use, if any.</param>
    /// <returns>An extractor for <paramref name="policy"/>.</returns>
    public static ShardKeyExtractor For(ShardKeyPolicy policy, ShardKeyExtractor? current) =>
        current is not null && current.Policy.Equals(policy) ? current : new ShardKeyExtractor(policy);

    /// <summary>The policy this extractor was built from.</summary>
    public ShardKeyPolicy Policy { get; }

    /// <summary>Whether a JSON body rule exists (the body may have to be read).</summary>
    public bool HasBodyRule => _bodyRules.Length > 0;

    /// <summary>
    /// Whether JSON body rules read a body of this <c>Content-Type</c>: a JSON one (<c>application/json</c>, <c>text/json</c>,
    /// any <c>+json</c> type) or none given. A gRPC body (<c>application/grpc</c>, even <c>+json</c>) is length-prefixed
    /// frames, and a multipart, form, text or binary body is no JSON document either: for those the no-key policy applies,
    /// not a 400 "not valid JSON" (an upload to a service that serves key-less requests locally must pass). The sidecar and
    /// the client library decide alike.
    /// </summary>
    /// <param name="contentType">The request's <c>Content-Type</c> value; empty when it has none.</param>
    /// <returns>Whether the body may be read for a JSON key.</returns>
    public static bool ReadsBodyOf(ReadOnlySpan<char> contentType)
    {
        var semicolon = contentType.IndexOf(';');
        var mediaType = (semicolon >= 0 ? contentType[..semicolon] : contentType).Trim();
        if (mediaType.IsEmpty)
        {
            return true;
        }

        return !Protocol.GrpcProtocol.IsGrpc(mediaType)
            && (mediaType.Equals("application/json", StringComparison.OrdinalIgnoreCase)
                || mediaType.Equals("text/json", StringComparison.OrdinalIgnoreCase)
                || mediaType.EndsWith("+json", StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>A guard over the whole body for the JSON body rules' paths (a member on them twice makes the key ambiguous).</summary>
    public JsonKeyPathGuard CreateBodyGuard() => new(_bodyRules.Select(static r => r.JsonPath));

    /// <summary>The rules in text form, as a 400 message names them.</summary>
    public string RulesDescription { get; }

    /// <summary>Tries the rules that read the request line and headers, in order.</summary>
    /// <typeparam name="TRequest">The request adapter (a struct, to avoid boxing).</typeparam>
    /// <param name="request">The request.</param>
    /// <param name="destination">Receives the key; at least <see cref="MaxKeyLength"/> chars.</param>
    /// <param name="length">The key's length in chars.</param>
    /// <returns><see cref="ShardKeyStatus.Found"/>, <see cref="ShardKeyStatus.TooLong"/>,
    /// <see cref="ShardKeyStatus.NeedsBody"/> (a body rule remains) or <see cref="ShardKeyStatus.NotFound"/>.</returns>
    public ShardKeyStatus TryExtract<TRequest>(scoped ref TRequest request, scoped Span<char> destination, out int length)
        where TRequest : IShardKeyRequest, allows ref struct
    {
        length = 0;
        foreach (var rule in _requestRules)
        {
            var status = rule.Rule.Kind switch
            {
                ShardKeyRuleKind.Header => FromHeader(ref request, rule.Rule.Argument, destination, out length),
                ShardKeyRuleKind.Path => FromPath(request.Path, rule.PathTemplate, destination, out length),
                ShardKeyRuleKind.Query => FromQuery(request.Query, rule.Rule.Argument, destination, out length),
                ShardKeyRuleKind.Cookie => FromCookie(ref request, rule.Rule.Argument, destination, out length),
                _ => ShardKeyStatus.NotFound,
            };
            if (status != ShardKeyStatus.NotFound)
            {
                return status;
            }
        }

        return _bodyRules.Length > 0 ? ShardKeyStatus.NeedsBody : ShardKeyStatus.NotFound;
    }

    /// <summary>Tries the JSON body rules, in order, over the body bytes read so far.</summary>
    /// <param name="body">The body read so far (from its first byte).</param>
    /// <param name="isFinalBlock">Whether the body is complete.</param>
    /// <param name="destination">Receives the key; at least <see cref="MaxKeyLength"/> chars.</param>
    /// <param name="length">The key's length in chars.</param>
    /// <param name="error">For <see cref="ShardKeyStatus.MalformedBody"/>: what is wrong and where.</param>
    /// <returns><see cref="ShardKeyStatus.Found"/>, <see cref="ShardKeyStatus.NotFound"/>, <see cref="ShardKeyStatus.NeedsMoreBody"/>,
    /// <see cref="ShardKeyStatus.TooLong"/> or <see cref="ShardKeyStatus.MalformedBody"/>.</returns>
    public ShardKeyStatus TryExtractFromBody(ReadOnlySpan<byte> body, bool isFinalBlock, Span<char> destination, out int length, out string? error)
    {
        length = 0;
        error = null;
        foreach (var rule in _bodyRules)
        {
            var status = JsonKeyFinder.Find(body, isFinalBlock, rule.JsonPath, destination, out length, out error);
            if (status != ShardKeyStatus.NotFound)
            {
                return status;
            }
        }

        return ShardKeyStatus.NotFound;
    }

    private static ShardKeyStatus FromHeader<TRequest>(scoped ref TRequest request, string name, scoped Span<char> destination, out int length)
        where TRequest : IShardKeyRequest, allows ref struct
    {
        length = 0;
        if (!request.TryGetHeader(name, out var value))
        {
            return ShardKeyStatus.NotFound;
        }

        return Copy(value.Trim(), destination, out length);
    }

    private static ShardKeyStatus Copy(ReadOnlySpan<char> value, Span<char> destination, out int length)
    {
        length = 0;
        if (value.IsEmpty)
        {
            return ShardKeyStatus.NotFound;
        }

        if (value.Length > MaxKeyLength || value.Length > destination.Length)
        {
            return ShardKeyStatus.TooLong;
        }

        value.CopyTo(destination);
        length = value.Length;
        return ShardKeyStatus.Found;
    }

    private static ShardKeyStatus Decode(ReadOnlySpan<char> value, bool plusIsSpace, Span<char> destination, out int length)
    {
        length = 0;
        if (value.IsEmpty)
        {
            return ShardKeyStatus.NotFound;
        }

        var limited = destination.Length > MaxKeyLength ? destination[..MaxKeyLength] : destination;
        if (!KeyText.TryDecode(value, plusIsSpace, limited, out length))
        {
            return ShardKeyStatus.TooLong;
        }

        return length == 0 ? ShardKeyStatus.NotFound : ShardKeyStatus.Found;
    }

    private static ShardKeyStatus FromPath(ReadOnlySpan<char> path, ImmutableArray<string> template, Span<char> destination, out int length)
    {
        length = 0;
        var rest = path;
        foreach (var part in template)
        {
            if (part.Length == 0)
            {
                continue;
            }

            if (part is "..." or "**")
            {
                return ShardKeyStatus.NotFound; // the {key} segment came earlier or never; a rest wildcard ends the template
            }

            // Next path segment.
            if (!rest.IsEmpty && rest[0] == '/')
            {
                rest = rest[1..];
            }

            var slash = rest.IndexOf('/');
            var segment = slash < 0 ? rest : rest[..slash];
            rest = slash < 0 ? [] : rest[slash..];
            if (part == "{key}")
            {
                return Decode(segment, plusIsSpace: false, destination, out length);
            }

            if (segment.IsEmpty)
            {
                return ShardKeyStatus.NotFound;
            }

            var isWildcard = part == "*" || (part[0] == '{' && part[^1] == '}');
            if (!isWildcard && !segment.Equals(part, StringComparison.OrdinalIgnoreCase))
            {
                return ShardKeyStatus.NotFound;
            }
        }

        return ShardKeyStatus.NotFound;
    }

    private static ShardKeyStatus FromQuery(ReadOnlySpan<char> query, string name, Span<char> destination, out int length)
    {
        length = 0;
        if (!query.IsEmpty && query[0] == '?')
        {
            query = query[1..];
        }

        // Bounded: each turn consumes at least one char.
        while (!query.IsEmpty)
        {
            var amp = query.IndexOf('&');
            var pair = amp < 0 ? query : query[..amp];
            query = amp < 0 ? [] : query[(amp + 1)..];
            var eq = pair.IndexOf('=');
            var pairName = eq < 0 ? pair : pair[..eq];
            if (pairName.Equals(name, StringComparison.Ordinal))
            {
                var status = Decode(eq < 0 ? [] : pair[(eq + 1)..], plusIsSpace: true, destination, out length);
                if (status != ShardKeyStatus.NotFound)
                {
                    return status;
                }
            }
        }

        return ShardKeyStatus.NotFound;
    }

    private static ShardKeyStatus FromCookie<TRequest>(scoped ref TRequest request, string name, scoped Span<char> destination, out int length)
        where TRequest : IShardKeyRequest, allows ref struct
    {
        length = 0;
        if (!request.TryGetHeader(CookieHeader, out var cookies))
        {
            return ShardKeyStatus.NotFound;
        }

        while (!cookies.IsEmpty)
        {
            var semicolon = cookies.IndexOf(';');
            var pair = (semicolon < 0 ? cookies : cookies[..semicolon]).Trim();
            cookies = semicolon < 0 ? [] : cookies[(semicolon + 1)..];
            var eq = pair.IndexOf('=');
            if (eq <= 0 || !pair[..eq].TrimEnd().Equals(name, StringComparison.Ordinal))
            {
                continue;
            }

            var value = pair[(eq + 1)..].Trim();
            if (value.Length >= 2 && value[0] == '"' && value[^1] == '"')
            {
                value = value[1..^1];
            }

            var status = Copy(value, destination, out length);
            if (status != ShardKeyStatus.NotFound)
            {
                return status;
            }
        }

        return ShardKeyStatus.NotFound;
    }

    private sealed class CompiledRule
    {
        public CompiledRule(ShardKeyRule rule)
        {
            Rule = rule;
            if (rule.Kind == ShardKeyRuleKind.Path)
            {
                PathTemplate = [.. rule.Argument.Split('/', StringSplitOptions.RemoveEmptyEntries)];
            }
            else if (rule.Kind == ShardKeyRuleKind.JsonBody)
            {
                var parts = rule.Argument[2..].Split('.');
                JsonPath = [.. parts.Select(static p => Encoding.UTF8.GetBytes(p))];
            }
        }

        public ShardKeyRule Rule { get; }

        public ImmutableArray<string> PathTemplate { get; } = [];

        public ImmutableArray<byte[]> JsonPath { get; } = [];
    }
}

/// <summary>Finds a <c>$.a.b</c> field in a JSON document with <see cref="Utf8JsonReader"/>, stopping at the field.</summary>
internal static class JsonKeyFinder
{
    public static ShardKeyStatus Find(
        ReadOnlySpan<byte> json, bool isFinalBlock, ImmutableArray<byte[]> path, Span<char> destination, out int length, out string? error)
    {
        length = 0;
        error = null;
        if (json.IsEmpty)
        {
            return isFinalBlock ? ShardKeyStatus.NotFound : ShardKeyStatus.NeedsMoreBody; // an empty body has no key
        }

        var reader = new Utf8JsonReader(json, isFinalBlock, default);

        // `matched` path segments lead to the object we are in; its properties sit at depth matched + 1.
        var matched = 0;
        try
        {
            if (!reader.Read())
            {
                return isFinalBlock ? ShardKeyStatus.NotFound : ShardKeyStatus.NeedsMoreBody; // an empty body has no key
            }

            if (reader.TokenType != JsonTokenType.StartObject)
            {
                return ShardKeyStatus.NotFound;
            }

            while (reader.Read())
            {
                switch (reader.TokenType)
                {
                    case JsonTokenType.EndObject when reader.CurrentDepth == matched:
                        return ShardKeyStatus.NotFound; // the object that should hold the next segment ended
                    case JsonTokenType.PropertyName when reader.CurrentDepth == matched + 1 && reader.ValueTextEquals(path[matched]):
                        if (!reader.Read())
                        {
                            return isFinalBlock ? Malformed("the body ends inside a value", out error) : ShardKeyStatus.NeedsMoreBody;
                        }

                        if (matched == path.Length - 1)
                        {
                            return ReadValue(ref reader, destination, out length, out error);
                        }

                        if (reader.TokenType != JsonTokenType.StartObject)
                        {
                            return ShardKeyStatus.NotFound;
                        }

                        matched++;
                        break;
                }
            }

            return isFinalBlock ? ShardKeyStatus.NotFound : ShardKeyStatus.NeedsMoreBody;
        }
        catch (JsonException ex)
        {
            return Malformed($"the body is not valid JSON: {ex.Message}", out error);
        }
    }

    private static ShardKeyStatus ReadValue(ref Utf8JsonReader reader, Span<char> destination, out int length, out string? error)
    {
        length = 0;
        error = null;
        if (reader.TokenType == JsonTokenType.String)
        {
            // The limit is in chars, as for the other rules, not in the raw bytes: unescaped, a string never has more chars
            // than bytes, and one char takes at most six (an escape such as \u00e9).
            var raw = reader.ValueSpan.Length;
            if (raw > ShardKeyExtractor.MaxKeyLength * 6 || reader.HasValueSequence)
            {
                return ShardKeyStatus.TooLong;
            }

            var limit = Math.Min(destination.Length, ShardKeyExtractor.MaxKeyLength);
            var rented = raw > limit ? ArrayPool<char>.Shared.Rent(raw) : null;
            try
            {
                length = reader.CopyString(rented ?? destination);
                if (length > limit)
                {
                    length = 0;
                    return ShardKeyStatus.TooLong;
                }

                rented?.AsSpan(0, length).CopyTo(destination);
            }
            catch (InvalidOperationException ex)
            {
                // Well-formed JSON whose string is not text: invalid UTF-8 or an escaped lone surrogate (\ud800).
                return Malformed($"the key is not valid text: {ex.Message}", out error);
            }
            finally
            {
                if (rented is not null)
                {
                    ArrayPool<char>.Shared.Return(rented);
                }
            }

            return length == 0 ? ShardKeyStatus.NotFound : ShardKeyStatus.Found;
        }

        if (reader.TokenType == JsonTokenType.Number)
        {
            var raw = reader.ValueSpan;
            if (raw.Length > Math.Min(destination.Length, ShardKeyExtractor.MaxKeyLength))
            {
                return ShardKeyStatus.TooLong;
            }

            length = Encoding.UTF8.GetChars(raw, destination);
            return ShardKeyStatus.Found;
        }

        return ShardKeyStatus.NotFound;
    }

    private static ShardKeyStatus Malformed(string message, out string error)
    {
        error = message;
        return ShardKeyStatus.MalformedBody;
    }
}

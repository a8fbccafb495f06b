using Microsoft.AspNetCore.Http.Features;
using Sharding.Keys;

namespace Sharding.Sidecar.Routing;

/// <summary>An incoming request seen by the shard-key rules: raw target (path and query as sent) and headers, no copies.</summary>
internal readonly ref struct HttpContextShardKeyRequest : IShardKeyRequest
{
    private readonly HttpRequest _request;
    private readonly ReadOnlySpan<char> _path;
    private readonly ReadOnlySpan<char> _query;

    public HttpContextShardKeyRequest(HttpContext context)
    {
        _request = context.Request;
        var raw = context.Features.Get<IHttpRequestFeature>()?.RawTarget;
        if (raw is { Length: > 0 } && raw[0] == '/')
        {
            var span = raw.AsSpan();
            var q = span.IndexOf('?');
            _path = q < 0 ? span : span[..q];
            _query = q < 0 ? [] : span[(q + 1)..];
        }
        else
        {
            _path = _request.Path.Value;
            var query = _request.QueryString.Value;
            _query = string.IsNullOrEmpty(query) ? [] : query.AsSpan(1);
        }
    }

    public string Method => _request.Method;

    public ReadOnlySpan<char> Path => _path;

    public ReadOnlySpan<char> Query => _query;

    public bool TryGetHeader(string name, out ReadOnlySpan<char> value)
    {
        var values = _request.Headers[name];
        if (values.Count == 0)
        {
            value = default;
            return false;
        }

        value = values.Count == 1 || !string.Equals(name, "cookie", StringComparison.OrdinalIgnoreCase)
            ? values[0]
            : string.Join("; ", values.ToArray());
        return true;
    }
}

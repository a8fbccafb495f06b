using System.Net.Http.Headers;

namespace Sharding.Keys;

/// <summary>An outgoing <see cref="HttpRequestMessage"/> seen by the shard-key rules (for client-side routing).</summary>
/// <remarks>Pass it by <c>ref</c> to <see cref="ShardKeyExtractor.TryExtract{TRequest}"/>; it is a struct, so it does not box.</remarks>
public readonly struct HttpRequestMessageShardKeyRequest : IShardKeyRequest
{
    private readonly HttpRequestMessage _request;
    private readonly string _pathAndQuery;
    private readonly int _queryStart;

    /// <summary>Wraps a request whose <see cref="HttpRequestMessage.RequestUri"/> is set (absolute or relative).</summary>
    /// <param name="request">The request.</param>
    public HttpRequestMessageShardKeyRequest(HttpRequestMessage request)
    {
        ArgumentNullException.ThrowIfNull(request);
        _request = request;
        var uri = request.RequestUri ?? throw new ArgumentException("The request has no RequestUri.", nameof(request));
        _pathAndQuery = uri.IsAbsoluteUri ? uri.PathAndQuery : uri.OriginalString;
        var fragment = _pathAndQuery.IndexOf('#', StringComparison.Ordinal);
        if (fragment >= 0)
        {
            _pathAndQuery = _pathAndQuery[..fragment];
        }

        _queryStart = _pathAndQuery.IndexOf('?', StringComparison.Ordinal);
    }

    /// <inheritdoc />
    public string Method => _request.Method.Method;

    /// <inheritdoc />
    public ReadOnlySpan<char> Path => _queryStart < 0 ? _pathAndQuery : _pathAndQuery.AsSpan(0, _queryStart);

    /// <inheritdoc />
    public ReadOnlySpan<char> Query => _queryStart < 0 ? [] : _pathAndQuery.AsSpan(_queryStart + 1);

    /// <inheritdoc />
    public bool TryGetHeader(string name, out ReadOnlySpan<char> value)
    {
        if (TryGet(_request.Headers.NonValidated, name, out var text)
            || (_request.Content is { } content && TryGet(content.Headers.NonValidated, name, out text)))
        {
            value = text;
            return true;
        }

        value = default;
        return false;
    }

    private static bool TryGet(HttpHeadersNonValidated headers, string name, out string? value)
    {
        value = null;
        if (!headers.TryGetValues(name, out var values) || values.Count == 0)
        {
            return false;
        }

        if (values.Count == 1)
        {
            foreach (var only in values)
            {
                value = only;
                return true;
            }
        }

        // Several values leave HttpClient as one field joined with ", " ("; " for cookie), HTTP/1.1 and HPACK alike: that
        // joined text is what the sidecar extracts the key from, so the owner is computed from it too.
        value = string.Join(string.Equals(name, "cookie", StringComparison.OrdinalIgnoreCase) ? "; " : ", ", values);
        return true;
    }
}

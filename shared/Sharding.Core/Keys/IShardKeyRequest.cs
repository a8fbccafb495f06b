namespace Sharding.Keys;

/// <summary>
/// The parts of an HTTP request that shard-key rules read: an abstraction both the sidecar's <c>HttpContext</c> and the
/// client library's <see cref="System.Net.Http.HttpRequestMessage"/> implement cheaply (see
/// <see cref="HttpRequestMessageShardKeyRequest"/>).
/// </summary>
/// <remarks>
/// Implement it on a struct and pass it to <see cref="ShardKeyExtractor.TryExtract{TRequest}"/> by reference: the extractor is
/// generic over the request type, so no boxing and no allocation happen per request.
/// </remarks>
public interface IShardKeyRequest
{
    /// <summary>The request method, e.g. <c>GET</c>.</summary>
    string Method { get; }

    /// <summary>The path as sent on the wire: percent-encoded, without the query, starting with <c>/</c>.</summary>
    ReadOnlySpan<char> Path { get; }

    /// <summary>The raw query string, without the leading <c>?</c>; empty when there is none.</summary>
    ReadOnlySpan<char> Query { get; }

    /// <summary>The first value of a request header (several <c>cookie</c> headers are joined with <c>"; "</c>).</summary>
    /// <param name="name">The header name, lower case.</param>
    /// <param name="value">The value when present.</param>
    /// <returns>Whether the header is present.</returns>
    bool TryGetHeader(string name, out ReadOnlySpan<char> value);
}

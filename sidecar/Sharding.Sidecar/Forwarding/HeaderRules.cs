using System.Net.Http.Headers;
using Microsoft.Extensions.Primitives;

namespace Sharding.Sidecar.Forwarding;

/// <summary>
/// Which headers cross the sidecar, in one place: hop-by-hop headers (RFC 9110 §7.6.1) and the sidecar's own
/// <c>x-sharding-*</c> headers never do; <c>te: trailers</c> does (gRPC needs it); upgrades keep Connection/Upgrade.
/// </summary>
internal static class HeaderRules
{
    public const string InternalPrefix = "x-sharding-";
    public const string Hop = "x-sharding-hop";
    public const string Generation = "x-sharding-generation";
    public const string Proof = "x-sharding-proof";
    public const string Key = "x-sharding-key";
    public const string Owner = "x-sharding-owner";

    /// <summary>Whether a request header is copied upstream.</summary>
    public static bool ShouldCopyRequestHeader(ReadOnlySpan<char> name, bool isUpgrade)
    {
        if (name.Length == 0 || name[0] == ':')
        {
            return false; // HTTP/2 pseudo-headers
        }

        if (name.StartsWith(InternalPrefix, StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        return !IsHopByHop(name, isUpgrade)
            && !name.Equals("host", StringComparison.OrdinalIgnoreCase)
            && !name.Equals("expect", StringComparison.OrdinalIgnoreCase); // Kestrel answers 100-continue itself when we read the body
    }

    /// <summary>Whether a response header is copied to the client.</summary>
    public static bool ShouldCopyResponseHeader(ReadOnlySpan<char> name, bool fromPeer, bool isUpgrade)
    {
        if (!fromPeer && name.StartsWith(InternalPrefix, StringComparison.OrdinalIgnoreCase))
        {
            return false; // the app cannot claim sidecar headers; the owner's sidecar can
        }

        return !IsHopByHop(name, isUpgrade);
    }

    /// <summary>
    /// Content-Length and Transfer-Encoding frame the body, which both paths relay as it came: a Connection header naming
    /// them must not take them away (without its length the peer would read the body as the next message: smuggling).
    /// </summary>
    public static bool IsFraming(ReadOnlySpan<char> name) =>
        name.Equals("content-length", StringComparison.OrdinalIgnoreCase) || name.Equals("transfer-encoding", StringComparison.OrdinalIgnoreCase);

    /// <inheritdoc cref="IsFraming(ReadOnlySpan{char})"/>
    public static bool IsFraming(ReadOnlySpan<byte> name) =>
        System.Text.Ascii.EqualsIgnoreCase(name, "content-length"u8) || System.Text.Ascii.EqualsIgnoreCase(name, "transfer-encoding"u8);

    private static bool IsHopByHop(ReadOnlySpan<char> name, bool isUpgrade) => name.Length switch
    {
        2 => name.Equals("te", StringComparison.OrdinalIgnoreCase),
        7 => name.Equals("upgrade", StringComparison.OrdinalIgnoreCase) && !isUpgrade || name.Equals("trailer", StringComparison.OrdinalIgnoreCase),
        10 => name.Equals("connection", StringComparison.OrdinalIgnoreCase) && !isUpgrade || name.Equals("keep-alive", StringComparison.OrdinalIgnoreCase),
        16 => name.Equals("proxy-connection", StringComparison.OrdinalIgnoreCase),
        17 => name.Equals("transfer-encoding", StringComparison.OrdinalIgnoreCase),
        18 => name.Equals("proxy-authenticate", StringComparison.OrdinalIgnoreCase),
        19 => name.Equals("proxy-authorization", StringComparison.OrdinalIgnoreCase),
        _ => false,
    };

    /// <summary>Copies the client's headers onto the upstream request (and its content).</summary>
    public static void CopyRequestHeaders(HttpRequest source, HttpRequestMessage destination, bool isUpgrade)
    {
        var connectionTokens = source.Headers.Connection;
        foreach (var header in source.Headers)
        {
            var name = header.Key;
            if (!ShouldCopyRequestHeader(name, isUpgrade))
            {
                if (name.Equals("te", StringComparison.OrdinalIgnoreCase) && ContainsToken(header.Value, "trailers"))
                {
                    destination.Headers.TryAddWithoutValidation("te", "trailers");
                }

                continue;
            }

            if (!isUpgrade && connectionTokens.Count > 0 && !IsFraming(name) && ContainsToken(connectionTokens, name))
            {
                continue; // named as hop-by-hop by the Connection header
            }

            var value = header.Value;
            var added = value.Count == 1
                ? destination.Headers.TryAddWithoutValidation(name, value[0])
                : destination.Headers.TryAddWithoutValidation(name, (IEnumerable<string>)value.ToArray()!);
            if (!added && destination.Content is { } content)
            {
                _ = value.Count == 1
                    ? content.Headers.TryAddWithoutValidation(name, value[0])
                    : content.Headers.TryAddWithoutValidation(name, (IEnumerable<string>)value.ToArray()!);
            }
        }
    }

    /// <summary>Copies upstream response headers (and content headers) onto the client's response, minus those the
    /// upstream's own Connection header names (hop-by-hop for that connection, RFC 9110 §7.6.1).</summary>
    public static void CopyResponseHeaders(HttpResponseMessage source, HttpResponse destination, bool fromPeer, bool isUpgrade)
    {
        var connection = !isUpgrade && source.Headers.NonValidated.TryGetValues("connection", out var values) ? values.ToString() : null;
        Copy(source.Headers.NonValidated, destination.Headers, fromPeer, isUpgrade, connection);
        Copy(source.Content.Headers.NonValidated, destination.Headers, fromPeer, isUpgrade, connection);
    }

    /// <summary>Copies upstream trailers onto the client's response, when its protocol carries trailers, by the response
    /// headers' rules: no hop-by-hop fields, and the app cannot claim the sidecar's <c>x-sharding-*</c> in a trailer either.</summary>
    public static void CopyTrailers(HttpResponseMessage source, HttpResponse destination, bool fromPeer)
    {
        var trailers = source.TrailingHeaders.NonValidated;
        if (trailers.Count == 0 || !destination.SupportsTrailers())
        {
            return;
        }

        foreach (var trailer in trailers)
        {
            if (ShouldCopyResponseHeader(trailer.Key, fromPeer, isUpgrade: false))
            {
                destination.AppendTrailer(trailer.Key, ToStringValues(trailer.Value));
            }
        }
    }

    private static void Copy(HttpHeadersNonValidated source, IHeaderDictionary destination, bool fromPeer, bool isUpgrade, string? connection)
    {
        foreach (var header in source)
        {
            if (ShouldCopyResponseHeader(header.Key, fromPeer, isUpgrade)
                && (connection is null || IsFraming(header.Key) || !HeaderTokens.Contains(connection, header.Key)))
            {
                destination[header.Key] = ToStringValues(header.Value);
            }
        }
    }

    private static StringValues ToStringValues(HeaderStringValues values)
    {
        if (values.Count == 1)
        {
            foreach (var value in values)
            {
                return value;
            }
        }

        var array = new string[values.Count];
        var i = 0;
        foreach (var value in values)
        {
            array[i++] = value;
        }

        return array;
    }

    /// <summary>Whether the request's Connection header names <paramref name="name"/> (which makes it hop-by-hop).</summary>
    public static bool IsNamedByConnection(IHeaderDictionary headers, string name) =>
        headers.Connection.Count > 0 && ContainsToken(headers.Connection, name);

    private static bool ContainsToken(StringValues values, string token)
    {
        foreach (var value in values)
        {
            if (HeaderTokens.Contains(value, token))
            {
                return true;
            }
        }

        return false;
    }
}

/// <summary>Comma-separated header tokens (RFC 9110 §5.6.1); an item's <c>;parameters</c> are ignored. Both paths use it.</summary>
internal static class HeaderTokens
{
    public static bool Contains(ReadOnlySpan<char> value, ReadOnlySpan<char> token)
    {
        // Bounded by the value: each turn consumes one item.
        var rest = value;
        while (!rest.IsEmpty)
        {
            var comma = rest.IndexOf(',');
            var item = (comma < 0 ? rest : rest[..comma]).Trim(" \t");
            var semicolon = item.IndexOf(';');
            if ((semicolon < 0 ? item : item[..semicolon].TrimEnd(" \t")).Equals(token, StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }

            rest = comma < 0 ? [] : rest[(comma + 1)..];
        }

        return false;
    }
}

using System.Buffers;
using System.Text;
using Sharding.Keys;
using Sharding.Protocol;
using Sharding.Sidecar.Forwarding;

namespace Sharding.Sidecar.FastPath;

/// <summary>One header line of a head: offsets into the head's text (name, value without surrounding whitespace, whole line with CRLF).</summary>
internal struct HeaderLine
{
    public int NameStart;
    public int NameLength;
    public int ValueStart;
    public int ValueLength;
    public int LineStart;
    public int LineEnd;
}

/// <summary>What the fast path needs to know of the request's headers, found while parsing.</summary>
[Flags]
internal enum RequestTraits
{
    None = 0,

    /// <summary><c>Connection: close</c>: answer, then close.</summary>
    Close = 1,

    /// <summary>The Connection header names other headers (they are hop-by-hop too).</summary>
    ConnectionTokens = 2,

    HasHost = 4,
    HasForwardedProto = 8,
    HasForwardedHost = 16,

    /// <summary><c>TE</c> contains <c>trailers</c> (passed on as <c>te: trailers</c>).</summary>
    TeTrailers = 32,
}

/// <summary>
/// An HTTP/1.1 request head parsed in place (RFC 9112 §2–5) over its Latin-1 text: offsets, no strings. Anything unusual
/// (absolute-form targets, HTTP/1.0, obsolete line folding, bare LF, control characters) makes <see cref="TryParse"/> refuse,
/// and the request goes to Kestrel, which answers it or rejects it with the right status.
/// </summary>
internal ref struct RequestHead
{
    public const int MaxHeaders = 64;

    public ReadOnlySpan<char> Text;
    public int MethodLength;
    public int TargetStart;
    public int TargetLength;
    public int RequestLineEnd;
    public int HeaderCount;
    public long ContentLength;
    public RequestTraits Traits;
    public int HostIndex;
    public int ConnectionIndex;
    public int ForwardedForIndex;

    // A forward from another sidecar: its internal headers (-1 when absent).
    public int HopIndex;
    public int SenderGenerationIndex;
    public int KeyIndex;
    public int ProofIndex;

    public readonly ReadOnlySpan<char> Method => Text[..MethodLength];

    public readonly ReadOnlySpan<char> Target => Text.Slice(TargetStart, TargetLength);

    public readonly ReadOnlySpan<char> Name(in HeaderLine line) => Text.Slice(line.NameStart, line.NameLength);

    public readonly ReadOnlySpan<char> Value(in HeaderLine line) => Text.Slice(line.ValueStart, line.ValueLength);

    /// <summary>Parses <paramref name="text"/>, the head including its final empty line.</summary>
    /// <returns>False when the head is not plain HTTP/1.1 in origin form (Kestrel takes it).</returns>
    public static bool TryParse(ReadOnlySpan<char> text, Span<HeaderLine> headers, out RequestHead head)
    {
        head = default;
        head.Text = text;
        head.ContentLength = -1;
        head.HostIndex = head.ConnectionIndex = head.ForwardedForIndex = -1;
        head.HopIndex = head.SenderGenerationIndex = head.KeyIndex = head.ProofIndex = -1;

        var lineEnd = text.IndexOf("\r\n");
        if (lineEnd < 0)
        {
            return false;
        }

        var line = text[..lineEnd];
        var space = line.IndexOf(' ');
        if (space <= 0 || !HttpToken.IsToken(line[..space]))
        {
            return false;
        }

        var rest = line[(space + 1)..];
        var space2 = rest.IndexOf(' ');
        if (space2 <= 0 || rest[0] != '/' || !rest[(space2 + 1)..].SequenceEqual("HTTP/1.1") || !IsVisible(rest[..space2]))
        {
            return false;
        }

        head.MethodLength = space;
        head.TargetStart = space + 1;
        head.TargetLength = space2;
        head.RequestLineEnd = lineEnd + 2;

        // Bounded by the text: each turn consumes one line.
        var position = head.RequestLineEnd;
        while (true)
        {
            var remaining = text[position..];
            var end = remaining.IndexOf("\r\n");
            if (end < 0)
            {
                return false;
            }

            if (end == 0)
            {
                return (head.Traits & RequestTraits.HasHost) != 0; // HTTP/1.1 requires Host; Kestrel answers 400 without it
            }

            if (head.HeaderCount == headers.Length)
            {
                return false;
            }

            var headerLine = remaining[..end];
            var colon = headerLine.IndexOf(':');
            if (colon <= 0 || !HttpToken.IsToken(headerLine[..colon]))
            {
                return false; // includes obs-fold (a line starting with whitespace) and whitespace before the colon
            }

            var valueStart = colon + 1;
            var valueEnd = headerLine.Length;
            while (valueStart < valueEnd && headerLine[valueStart] is ' ' or '\t')
            {
                valueStart++;
            }

            while (valueEnd > valueStart && headerLine[valueEnd - 1] is ' ' or '\t')
            {
                valueEnd--;
            }

            if (!IsFieldValue(headerLine[valueStart..valueEnd]))
            {
                return false;
            }

            ref var entry = ref headers[head.HeaderCount];
            entry.LineStart = position;
            entry.LineEnd = position + end + 2;
            entry.NameStart = position;
            entry.NameLength = colon;
            entry.ValueStart = position + valueStart;
            entry.ValueLength = valueEnd - valueStart;
            if (!head.Classify(entry, head.HeaderCount))
            {
                return false;
            }

            head.HeaderCount++;
            position = entry.LineEnd;
        }
    }

    /// <summary>Notes the headers the fast path acts on; false when one makes the request Kestrel's.</summary>
    private bool Classify(in HeaderLine line, int index)
    {
        var name = Name(line);
        var value = Value(line);
        switch (name.Length)
        {
            case 2 when name.Equals("te", StringComparison.OrdinalIgnoreCase):
                if (HeaderTokens.Contains(value, "trailers"))
                {
                    Traits |= RequestTraits.TeTrailers;
                }

                return true;
            case 4 when name.Equals("host", StringComparison.OrdinalIgnoreCase):
                if (HostIndex >= 0 || !IsValidHost(value))
                {
                    return false; // two Host headers, or one Kestrel refuses (a/b, a b, user@a, :80): Kestrel answers 400
                }

                HostIndex = index;
                Traits |= RequestTraits.HasHost;
                return true;
            case 6 when name.Equals("expect", StringComparison.OrdinalIgnoreCase):
            case 7 when name.Equals("upgrade", StringComparison.OrdinalIgnoreCase):
            case 17 when name.Equals("transfer-encoding", StringComparison.OrdinalIgnoreCase):
                return false;
            case 6 when name.Equals("accept", StringComparison.OrdinalIgnoreCase):
                // Event streams are long-lived: Kestrel's path tracks them from the start.
                return !value.Contains("text/event-stream", StringComparison.OrdinalIgnoreCase);
            case 10 when name.Equals("connection", StringComparison.OrdinalIgnoreCase):
                if (ConnectionIndex >= 0)
                {
                    return false;
                }

                ConnectionIndex = index;
                return ClassifyConnection(value);
            case 12 when name.Equals("content-type", StringComparison.OrdinalIgnoreCase):
                return !GrpcProtocol.IsGrpc(value);
            case 14 when name.Equals("content-length", StringComparison.OrdinalIgnoreCase):
                if (ContentLength >= 0 || value.IsEmpty || value.Length > 18)
                {
                    return false;
                }

                long length = 0;
                foreach (var c in value)
                {
                    if (!char.IsAsciiDigit(c))
                    {
                        return false;
                    }

                    length = (length * 10) + (c - '0');
                }

                ContentLength = length;
                return true;
            case 15 when name.Equals("x-forwarded-for", StringComparison.OrdinalIgnoreCase):
                if (ForwardedForIndex >= 0)
                {
                    return false; // rare; Kestrel's path joins several
                }

                ForwardedForIndex = index;
                return true;
            case 16 when name.Equals("x-forwarded-host", StringComparison.OrdinalIgnoreCase):
                Traits |= RequestTraits.HasForwardedHost;
                return true;
            case 17 when name.Equals("x-forwarded-proto", StringComparison.OrdinalIgnoreCase):
                Traits |= RequestTraits.HasForwardedProto;
                return true;
            case 14 when name.Equals("x-sharding-hop", StringComparison.OrdinalIgnoreCase):
                return Once(ref HopIndex, index);
            case 14 when name.Equals("x-sharding-key", StringComparison.OrdinalIgnoreCase):
                return Once(ref KeyIndex, index);
            case 16 when name.Equals("x-sharding-proof", StringComparison.OrdinalIgnoreCase):
                return Once(ref ProofIndex, index);
            case 21 when name.Equals("x-sharding-generation", StringComparison.OrdinalIgnoreCase):
                return Once(ref SenderGenerationIndex, index);
            default:
                return true;
        }
    }

    /// <summary>Internal headers count once; a repeated one is the full path's to reject.</summary>
    private static bool Once(ref int slot, int index)
    {
        if (slot >= 0)
        {
            return false;
        }

        slot = index;
        return true;
    }

    private bool ClassifyConnection(scoped ReadOnlySpan<char> value)
    {
        // Bounded by the value: each turn consumes one token.
        var rest = value;
        while (!rest.IsEmpty)
        {
            var comma = rest.IndexOf(',');
            var token = (comma < 0 ? rest : rest[..comma]).Trim(" \t");
            rest = comma < 0 ? [] : rest[(comma + 1)..];
            if (token.IsEmpty || token.Equals("keep-alive", StringComparison.OrdinalIgnoreCase))
            {
                continue;
            }

            if (token.Equals("close", StringComparison.OrdinalIgnoreCase))
            {
                Traits |= RequestTraits.Close;
            }
            else if (token.Equals("upgrade", StringComparison.OrdinalIgnoreCase))
            {
                return false;
            }
            else
            {
                Traits |= RequestTraits.ConnectionTokens;
            }
        }

        return true;
    }

    /// <summary>Kestrel's Host rule for origin-form requests (<c>HttpUtilities.IsHostHeaderValid</c>): empty; or reg-name /
    /// IPv4 characters (letters, digits, <c>!$&amp;'()-._~</c>) or an IPv6 literal in brackets, then an optional
    /// <c>:port</c> of at least one digit.</summary>
    internal static bool IsValidHost(ReadOnlySpan<char> host)
    {
        if (host.IsEmpty)
        {
            return true;
        }

        int end;
        if (host[0] == '[')
        {
            end = host.IndexOf(']');
            if (end < 4 || host[1..end].IndexOfAnyExcept(Ipv6Chars) >= 0)
            {
                return false; // [::1] is the shortest
            }

            end++;
        }
        else
        {
            end = host.IndexOfAnyExcept(HostChars);
            if (end == 0)
            {
                return false;
            }

            if (end < 0)
            {
                return true;
            }
        }

        var port = host[end..];
        return port.IsEmpty || (port.Length > 1 && port[0] == ':' && !port[1..].ContainsAnyExceptInRange('0', '9'));
    }

    private static readonly SearchValues<char> HostChars =
        SearchValues.Create("!$&'()-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");

    private static readonly SearchValues<char> Ipv6Chars = SearchValues.Create(":.0123456789ABCDEFabcdef");

    private static bool IsVisible(ReadOnlySpan<char> value) => value.IndexOfAnyExceptInRange((char)0x21, (char)0x7E) < 0;

    /// <summary>Field values: visible characters, spaces, tabs and obs-text; no controls (Kestrel decides about those).</summary>
    internal static bool IsFieldValue(ReadOnlySpan<char> value)
    {
        foreach (var c in value)
        {
            if ((c < 0x20 && c != '\t') || c == 0x7F)
            {
                return false;
            }
        }

        return true;
    }
}

/// <summary>The parsed head as the shard-key rules see it (no copies; several cookie headers are joined). Header values are
/// UTF-8, as Kestrel decodes them on the full path and as Envoy hashes their bytes: a value the head's Latin-1 text (a char
/// per byte) holds non-ASCII in is decoded again (the fast path hands heads that are not valid UTF-8 to Kestrel).</summary>
internal readonly ref struct RequestHeadKeyRequest : IShardKeyRequest
{
    private readonly ReadOnlySpan<char> _text;
    private readonly ReadOnlySpan<HeaderLine> _headers;
    private readonly ReadOnlySpan<char> _path;
    private readonly ReadOnlySpan<char> _query;
    private readonly string _method;

    public RequestHeadKeyRequest(in RequestHead head, ReadOnlySpan<HeaderLine> headers)
    {
        _text = head.Text;
        _headers = headers[..head.HeaderCount];
        var target = head.Target;
        var q = target.IndexOf('?');
        _path = q < 0 ? target : target[..q];
        _query = q < 0 ? [] : target[(q + 1)..];
        _method = KnownMethod(head.Method);
    }

    public string Method => _method;

    public ReadOnlySpan<char> Path => _path;

    public ReadOnlySpan<char> Query => _query;

    public bool TryGetHeader(string name, out ReadOnlySpan<char> value)
    {
        var found = -1;
        var count = 0;
        for (var i = 0; i < _headers.Length; i++)
        {
            if (_text.Slice(_headers[i].NameStart, _headers[i].NameLength).Equals(name, StringComparison.OrdinalIgnoreCase))
            {
                found = found < 0 ? i : found;
                count++;
            }
        }

        if (found < 0)
        {
            value = default;
            return false;
        }

        if (count == 1 || !string.Equals(name, "cookie", StringComparison.OrdinalIgnoreCase))
        {
            value = _text.Slice(_headers[found].ValueStart, _headers[found].ValueLength);
            if (!Ascii.IsValid(value))
            {
                value = FromUtf8(value);
            }

            return true;
        }

        var parts = new List<string>(count);
        foreach (var line in _headers)
        {
            if (_text.Slice(line.NameStart, line.NameLength).Equals(name, StringComparison.OrdinalIgnoreCase))
            {
                parts.Add(_text.Slice(line.ValueStart, line.ValueLength).ToString());
            }
        }

        value = string.Join("; ", parts);
        if (!Ascii.IsValid(value))
        {
            value = FromUtf8(value);
        }

        return true;
    }

    /// <summary>The text whose bytes <paramref name="latin1"/> holds one per char, read as UTF-8.</summary>
    private static string FromUtf8(ReadOnlySpan<char> latin1)
    {
        var bytes = latin1.Length <= 1024 ? stackalloc byte[latin1.Length] : new byte[latin1.Length];
        Encoding.Latin1.GetBytes(latin1, bytes);
        return Encoding.UTF8.GetString(bytes);
    }

    private static string KnownMethod(ReadOnlySpan<char> method) => method switch
    {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => method.ToString(),
    };
}

/// <summary>RFC 9110 §5.6.2 token characters, one set for request and response heads.</summary>
internal static class HttpToken
{
    private const string Characters = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    private static readonly SearchValues<char> Chars = SearchValues.Create(Characters);
    private static readonly SearchValues<byte> Bytes = SearchValues.Create(System.Text.Encoding.ASCII.GetBytes(Characters));

    public static bool IsToken(ReadOnlySpan<char> value) => value.IndexOfAnyExcept(Chars) < 0;

    public static bool IsToken(ReadOnlySpan<byte> value) => value.IndexOfAnyExcept(Bytes) < 0;
}

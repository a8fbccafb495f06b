using System.Buffers;
using System.Text;
using Sharding.Sidecar.Forwarding;

namespace Sharding.Sidecar.FastPath;

/// <summary>How the app's response body is delimited (RFC 9112 §6.3).</summary>
internal enum BodyFraming
{
    /// <summary>No body: HEAD, 1xx, 204, 304.</summary>
    None,

    /// <summary>Content-Length bytes.</summary>
    Length,

    /// <summary>Chunked transfer coding, passed through as it is.</summary>
    Chunked,

    /// <summary>Until the app closes the connection (the client's connection closes after it too).</summary>
    UntilClose,
}

/// <summary>
/// The app's response head, parsed from bytes, and written on to the client with hop-by-hop and <c>x-sharding-*</c> headers
/// removed and the sidecar's own headers added: the same header rules as <see cref="Forwarding.HeaderRules"/>, on bytes.
/// </summary>
internal struct ResponseHead
{
    public int StatusCode;
    public BodyFraming Framing;
    public long ContentLength;

    /// <summary>The app asked to close its connection (or spoke HTTP/1.0 without keep-alive): do not reuse it.</summary>
    public bool UpstreamClose;

    /// <summary>The response is an event stream (tracked for draining at once).</summary>
    public bool IsEventStream;

    /// <summary>Control characters other than HTAB (and DEL): never part of a status line or a field value (RFC 9110 §5.5).</summary>
    private static readonly SearchValues<byte> Controls = SearchValues.Create(
        [.. Enumerable.Range(0, 0x20).Where(static c => c != '\t').Select(static c => (byte)c), (byte)0x7F]);

    /// <summary>Whether a field value holds a control character other than HTAB (never valid, RFC 9110 §5.5).</summary>
    public static bool HasControl(ReadOnlySpan<byte> value) => value.ContainsAny(Controls);

    /// <summary>Parses the head in <paramref name="head"/> (ending with its empty line).</summary>
    /// <returns>False when it is not a valid HTTP/1.x response head.</returns>
    public static bool TryParse(ReadOnlySpan<byte> head, bool isHeadRequest, out ResponseHead response)
    {
        response = default;
        response.ContentLength = -1;
        var lineEnd = head.IndexOf("\r\n"u8);
        if (lineEnd < 12 || !head.StartsWith("HTTP/1."u8) || head[8] != ' ')
        {
            return false;
        }

        var http10 = head[7] == '0';
        if (!http10 && head[7] != '1')
        {
            return false;
        }

        var code = head.Slice(9, 3);
        if (!char.IsAsciiDigit((char)code[0]) || !char.IsAsciiDigit((char)code[1]) || !char.IsAsciiDigit((char)code[2])
            || (lineEnd > 12 && head[12] != ' ') || HasControl(head[..lineEnd]))
        {
            return false; // a bare CR or LF, or a NUL, would pass on to the client as it is
        }

        response.StatusCode = ((code[0] - '0') * 100) + ((code[1] - '0') * 10) + (code[2] - '0');
        var chunked = false;
        var hasTransferEncoding = false;
        var keepAlive = false;

        // Bounded by the head (at most UpstreamConnection.MaxHeadBytes, as SocketsHttpHandler's limit): each turn consumes one
        // line. There is no count limit of its own, as there is none on the path through HttpClient.
        var position = lineEnd + 2;
        while (true)
        {
            var remaining = head[position..];
            var end = remaining.IndexOf("\r\n"u8);
            if (end < 0)
            {
                return false;
            }

            if (end == 0)
            {
                break;
            }

            var line = remaining[..end];
            position += end + 2;
            var colon = line.IndexOf((byte)':');
            if (colon <= 0 || !HttpToken.IsToken(line[..colon]))
            {
                return false; // includes whitespace before the colon (RFC 9112 §5.1)
            }

            var name = line[..colon];
            var value = line[(colon + 1)..].Trim(" \t"u8);
            if (HasControl(value))
            {
                return false; // RFC 9110 §5.5: CR, LF or NUL in a value is rejected, not passed on (nor other controls)
            }

            if (Ascii.EqualsIgnoreCase(name, "content-length"u8))
            {
                if (!TryParseLength(value, out var length) || (response.ContentLength >= 0 && response.ContentLength != length))
                {
                    return false;
                }

                response.ContentLength = length;
            }
            else if (Ascii.EqualsIgnoreCase(name, "transfer-encoding"u8))
            {
                hasTransferEncoding = true;
                var last = value.LastIndexOf((byte)',');
                chunked = Ascii.EqualsIgnoreCase((last < 0 ? value : value[(last + 1)..]).Trim(" \t"u8), "chunked"u8);
            }
            else if (Ascii.EqualsIgnoreCase(name, "connection"u8))
            {
                var text = Encoding.Latin1.GetString(value);
                response.UpstreamClose |= HeaderTokens.Contains(text, "close");
                keepAlive |= HeaderTokens.Contains(text, "keep-alive");
            }
            else if (Ascii.EqualsIgnoreCase(name, "content-type"u8))
            {
                response.IsEventStream = value.Length >= 17 && Ascii.EqualsIgnoreCase(value[..17], "text/event-stream"u8);
            }
        }

        if (http10 && !keepAlive)
        {
            response.UpstreamClose = true;
        }

        if (isHeadRequest || response.StatusCode is < 200 or 204 or 304)
        {
            response.Framing = BodyFraming.None;
        }
        else if (hasTransferEncoding)
        {
            // RFC 9112 §6.3: Transfer-Encoding wins over Content-Length; not chunked last means "until close". Both at once
            // may be an attempt at response splitting: the connection is not used again.
            response.Framing = chunked ? BodyFraming.Chunked : BodyFraming.UntilClose;
            response.UpstreamClose |= response.ContentLength >= 0;
            response.ContentLength = -1;
        }
        else if (response.ContentLength >= 0)
        {
            response.Framing = BodyFraming.Length;
        }
        else
        {
            response.Framing = BodyFraming.UntilClose;
        }

        if (response.Framing == BodyFraming.UntilClose)
        {
            response.UpstreamClose = true;
        }

        return true;
    }

    /// <summary>
    /// Writes the head for the client: status line as HTTP/1.1, the upstream's headers minus hop-by-hop ones (and those its
    /// Connection header names) and, from the app, minus <c>x-sharding-*</c> (the owner's sidecar may send them), then
    /// <paramref name="extra"/> (the sidecar's headers, each line with its CRLF), then the empty line. Transfer-Encoding stays:
    /// the body passes through in the coding it came in.
    /// </summary>
    /// <returns>Bytes written; -1 when <paramref name="destination"/> is too small.</returns>
    public static int WriteForClient(ReadOnlySpan<byte> head, ReadOnlySpan<byte> extra, bool close, bool fromPeer, Span<byte> destination)
    {
        var lineEnd = head.IndexOf("\r\n"u8);
        var written = 0;
        if (!Append(destination, ref written, "HTTP/1.1"u8) || !Append(destination, ref written, head[8..(lineEnd + 2)]))
        {
            return -1;
        }

        // The names the Connection headers list are hop-by-hop too (ranges into the head; a few are plenty).
        Span<Range> named = stackalloc Range[32];
        var namedCount = 0;
        var hasTransferEncoding = false;
        var position = lineEnd + 2;
        var scanPosition = position;

        // Bounded by the head: each turn consumes one line.
        while (true)
        {
            var end = head[scanPosition..].IndexOf("\r\n"u8);
            if (end <= 0)
            {
                break;
            }

            var line = head.Slice(scanPosition, end);
            var colon = line.IndexOf((byte)':');
            if (Ascii.EqualsIgnoreCase(line[..colon], "connection"u8))
            {
                namedCount += SplitTokens(head, scanPosition + colon + 1, scanPosition + end, named[namedCount..]);
            }
            else if (Ascii.EqualsIgnoreCase(line[..colon], "transfer-encoding"u8))
            {
                hasTransferEncoding = true;
            }

            scanPosition += end + 2;
        }

        // Bounded by the head: each turn consumes one line.
        while (true)
        {
            var remaining = head[position..];
            var end = remaining.IndexOf("\r\n"u8);
            if (end <= 0)
            {
                break;
            }

            var line = remaining[..(end + 2)];
            position += end + 2;
            var name = line[..line.IndexOf((byte)':')];
            if (IsDropped(name, fromPeer) || IsNamed(name, head, named[..namedCount])
                || (hasTransferEncoding && Ascii.EqualsIgnoreCase(name, "content-length"u8))) // RFC 9112 §6.3: the coding wins, the length goes
            {
                continue;
            }

            if (!Append(destination, ref written, line))
            {
                return -1;
            }
        }

        if (!Append(destination, ref written, extra)
            || (close && !Append(destination, ref written, "connection: close\r\n"u8))
            || !Append(destination, ref written, "\r\n"u8))
        {
            return -1;
        }

        return written;
    }

    /// <summary>
    /// Writes a chunked body's trailer section (its field lines and the final CRLF, as <see cref="ChunkedScanner"/> checked
    /// them) for the client, by the full path's trailer rules: hop-by-hop fields and, from the app, <c>x-sharding-*</c> are
    /// dropped, as are lines without a valid field name (obs-fold continuations included).
    /// </summary>
    public static void WriteTrailersForClient(ReadOnlySpan<byte> section, bool fromPeer, System.Buffers.IBufferWriter<byte> output)
    {
        var destination = output.GetSpan(section.Length);
        var written = 0;

        // Bounded by the section: each turn consumes one line.
        while (true)
        {
            var end = section.IndexOf("\r\n"u8);
            if (end <= 0)
            {
                break; // the final CRLF
            }

            var line = section[..(end + 2)];
            section = section[(end + 2)..];
            var colon = line.IndexOf((byte)':');
            if (colon <= 0 || !HttpToken.IsToken(line[..colon]) || !ShouldCopy(line[..colon], fromPeer))
            {
                continue; // not a field line either path would pass (an obs-fold line starts with whitespace: RFC 9112 §5.2)
            }

            line.CopyTo(destination[written..]);
            written += line.Length;
        }

        "\r\n"u8.CopyTo(destination[written..]);
        output.Advance(written + 2);
    }

    /// <summary><see cref="Forwarding.HeaderRules.ShouldCopyResponseHeader"/> for a name in the response's bytes.</summary>
    private static bool ShouldCopy(ReadOnlySpan<byte> name, bool fromPeer)
    {
        Span<char> chars = name.Length <= 128 ? stackalloc char[name.Length] : new char[name.Length];
        Encoding.Latin1.GetChars(name, chars);
        return Forwarding.HeaderRules.ShouldCopyResponseHeader(chars, fromPeer, isUpgrade: false);
    }

    /// <summary>The full path's response rules (<see cref="Forwarding.HeaderRules"/>), except that Transfer-Encoding and
    /// Trailer stay: the body and its trailers pass through in the coding they came in.</summary>
    private static bool IsDropped(ReadOnlySpan<byte> name, bool fromPeer)
    {
        if (Ascii.EqualsIgnoreCase(name, "transfer-encoding"u8) || Ascii.EqualsIgnoreCase(name, "trailer"u8))
        {
            return false;
        }

        return !ShouldCopy(name, fromPeer);
    }

    private static bool IsNamed(ReadOnlySpan<byte> name, ReadOnlySpan<byte> head, ReadOnlySpan<Range> named)
    {
        foreach (var range in named)
        {
            var token = head[range];
            if (Ascii.EqualsIgnoreCase(name, token) && !HeaderRules.IsFraming(token))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The comma-separated tokens of <c>head[start..end]</c>, trimmed, as ranges into the head.</summary>
    private static int SplitTokens(ReadOnlySpan<byte> head, int start, int end, Span<Range> into)
    {
        var count = 0;
        var itemStart = start;

        // Bounded by the value.
        for (var i = start; i <= end && count < into.Length; i++)
        {
            if (i == end || head[i] == ',')
            {
                var s = itemStart;
                var e = i;
                while (s < e && head[s] is (byte)' ' or (byte)'\t')
                {
                    s++;
                }

                while (e > s && head[e - 1] is (byte)' ' or (byte)'\t')
                {
                    e--;
                }

                if (e > s)
                {
                    into[count++] = s..e;
                }

                itemStart = i + 1;
            }
        }

        return count;
    }

    private static bool TryParseLength(ReadOnlySpan<byte> value, out long length)
    {
        length = 0;
        if (value.IsEmpty || value.Length > 18)
        {
            return false;
        }

        foreach (var b in value)
        {
            if (b is < (byte)'0' or > (byte)'9')
            {
                return false;
            }

            length = (length * 10) + (b - '0');
        }

        return true;
    }

    private static bool Append(Span<byte> destination, ref int written, ReadOnlySpan<byte> bytes)
    {
        if (!bytes.TryCopyTo(destination[written..]))
        {
            return false;
        }

        written += bytes.Length;
        return true;
    }
}

/// <summary>
/// Follows a chunked body (RFC 9112 §7.1) as it passes through unchanged, to find where it ends and whether the bytes so far
/// end on a chunk boundary (where a drain can end the stream cleanly).
/// </summary>
internal struct ChunkedScanner
{
    private State _state;
    private long _remaining;
    private int _digits;

    private enum State
    {
        Size,
        Extension,
        SizeLf,
        Data,
        DataCr,
        DataLf,
        TrailerStart,
        TrailerLine,
        TrailerLf,
        FinalLf,
        Done,
    }

    public readonly bool IsDone => _state == State.Done;

    /// <summary>Where the trailer section (after the last chunk's line) starts in the data of the last <see cref="Scan"/>:
    /// 0 when that scan began inside it, -1 when it has none of it.</summary>
    public int TrailersAt { get; private set; }

    /// <summary>Whether the bytes scanned so far end exactly after a whole chunk (or at the start).</summary>
    public readonly bool AtBoundary => _state == State.Size && _digits == 0;

    /// <summary>Scans <paramref name="data"/>; returns how many bytes belong to the body (less than all once it is done),
    /// or -1 when the framing is invalid.</summary>
    public int Scan(ReadOnlySpan<byte> data)
    {
        var i = 0;
        TrailersAt = _state is State.TrailerStart or State.TrailerLine or State.TrailerLf or State.FinalLf && !data.IsEmpty ? 0 : -1;

        // Bounded by data: every turn consumes at least one byte or ends.
        while (i < data.Length && _state != State.Done)
        {
            var b = data[i];
            switch (_state)
            {
                case State.Size:
                    var digit = HexValue(b);
                    if (digit >= 0)
                    {
                        if (++_digits > 15)
                        {
                            return -1;
                        }

                        _remaining = (_remaining << 4) | (uint)digit;
                    }
                    else if (_digits == 0)
                    {
                        return -1;
                    }
                    else if (b == '\r')
                    {
                        _state = State.SizeLf;
                    }
                    else if (b is (byte)';' or (byte)' ' or (byte)'\t')
                    {
                        _state = State.Extension;
                    }
                    else
                    {
                        return -1;
                    }

                    i++;
                    break;
                case State.Extension:
                    // A bare LF ends a line for lenient clients but not for us: reject it rather than disagree on where the
                    // body ends (the bytes pass through to the client unchanged).
                    var cr = data[i..].IndexOfAny((byte)'\r', (byte)'\n');
                    if (cr < 0)
                    {
                        i = data.Length;
                    }
                    else if (data[i + cr] == '\n')
                    {
                        return -1;
                    }
                    else
                    {
                        i += cr + 1;
                        _state = State.SizeLf;
                    }

                    break;
                case State.SizeLf:
                    if (b != '\n')
                    {
                        return -1;
                    }

                    i++;
                    _digits = 0;
                    _state = _remaining == 0 ? State.TrailerStart : State.Data;
                    if (_state == State.TrailerStart)
                    {
                        TrailersAt = i;
                    }

                    break;
                case State.Data:
                    var take = (int)Math.Min(_remaining, data.Length - i);
                    i += take;
                    _remaining -= take;
                    if (_remaining == 0)
                    {
                        _state = State.DataCr;
                    }

                    break;
                case State.DataCr:
                    if (b != '\r')
                    {
                        return -1;
                    }

                    i++;
                    _state = State.DataLf;
                    break;
                case State.DataLf:
                    if (b != '\n')
                    {
                        return -1;
                    }

                    i++;
                    _state = State.Size;
                    break;
                case State.TrailerStart:
                    if (b == '\n')
                    {
                        return -1;
                    }

                    i++;
                    _state = b == '\r' ? State.FinalLf : State.TrailerLine;
                    break;
                case State.TrailerLine:
                    var lineCr = data[i..].IndexOfAny((byte)'\r', (byte)'\n');
                    if (lineCr < 0)
                    {
                        i = data.Length;
                    }
                    else if (data[i + lineCr] == '\n')
                    {
                        return -1; // a bare LF, as in an extension
                    }
                    else
                    {
                        i += lineCr + 1;
                        _state = State.TrailerLf;
                    }

                    break;
                case State.TrailerLf:
                    if (b != '\n')
                    {
                        return -1;
                    }

                    i++;
                    _state = State.TrailerStart;
                    break;
                case State.FinalLf:
                    if (b != '\n')
                    {
                        return -1;
                    }

                    i++;
                    _state = State.Done;
                    break;
            }
        }

        return i;
    }

    private static int HexValue(byte b) => b switch
    {
        >= (byte)'0' and <= (byte)'9' => b - '0',
        >= (byte)'a' and <= (byte)'f' => b - 'a' + 10,
        >= (byte)'A' and <= (byte)'F' => b - 'A' + 10,
        _ => -1,
    };
}

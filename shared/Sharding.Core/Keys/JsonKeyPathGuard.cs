using System.Collections.Immutable;
using System.Text;

namespace Sharding.Keys;

/// <summary>
/// Watches a whole JSON body, block by block and with constant memory, for a member on a key rule's path (<c>$.a.b</c>) that
/// appears twice in its object. Key extraction takes the first occurrence, while most JSON parsers keep the last: such a
/// body could be routed by one key and served by another, so the sidecar refuses it.
/// </summary>
/// <remarks>
/// A structural scan only (strings, escapes, nesting): the body's prefix was already validated where the key was read, and
/// what follows is the app's to validate. Property names on the path are compared after unescaping, so <c>"\u0069d"</c> is
/// <c>"id"</c>. Not thread-safe: one guard per request.
/// </remarks>
public sealed class JsonKeyPathGuard
{
    private readonly PathState[] _paths;
    private int _depth;
    private bool _inString;
    private bool _escape;
    private int _unicodeDigits = -1; // -1: not in a \uXXXX escape; else how many hex digits were read
    private int _unicodeValue;
    private char _highSurrogate;

    // A property name being compared: which path (-1: none) and the name's unescaped UTF-8 bytes so far.
    private readonly byte[] _name;
    private int _nameLength;
    private bool _nameTooLong;
    private bool _capturing;

    public JsonKeyPathGuard(IEnumerable<ImmutableArray<byte[]>> paths)
    {
        _paths = [.. paths.Where(static p => p.Length > 0).Select(static p => new PathState(p))];
        var longest = _paths.Length == 0 ? 0 : _paths.Max(static p => p.Segments.Max(static s => s.Length));
        _name = new byte[longest + 4];
    }

    /// <summary>The duplicated member (<c>$.a</c>), once found; then the guard has stopped looking.</summary>
    public string? Duplicate { get; private set; }

    /// <summary>Why the body is refused, once a duplicate was found.</summary>
    public string? Message => Duplicate is null
        ? null
        : $"the JSON body has the member {Duplicate} more than once, so its shard key is ambiguous";

    /// <summary>Scans the next bytes of the body; false once a duplicate was found.</summary>
    public bool Feed(ReadOnlySpan<byte> bytes)
    {
        if (Duplicate is not null)
        {
            return false;
        }

        foreach (var b in bytes)
        {
            if (_inString)
            {
                InString(b);
            }
            else
            {
                Structural(b);
            }
        }

        return Duplicate is null;
    }

    private void Structural(byte b)
    {
        switch (b)
        {
            case (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n':
                return;
            case (byte)'"':
                _inString = true;
                _capturing = false;
                foreach (var path in _paths)
                {
                    path.ValuePending = false;
                    if (path.ExpectsName(_depth))
                    {
                        _capturing = true;
                    }
                }

                _nameLength = 0;
                _nameTooLong = false;
                _highSurrogate = default;
                return;
            case (byte)'{':
                _depth++;
                foreach (var path in _paths)
                {
                    path.OpenObject(_depth);
                }

                return;
            case (byte)'[':
                _depth++;
                foreach (var path in _paths)
                {
                    path.ValuePending = false;
                }

                return;
            case (byte)'}' or (byte)']':
                foreach (var path in _paths)
                {
                    path.Close(_depth);
                }

                _depth = Math.Max(0, _depth - 1);
                return;
            case (byte)',':
                foreach (var path in _paths)
                {
                    path.Comma(_depth);
                }

                return;
            case (byte)':':
                return;
            default:
                // A number or literal: a value, so a matched member's value is not an object.
                foreach (var path in _paths)
                {
                    path.ValuePending = false;
                }

                return;
        }
    }

    private void InString(byte b)
    {
        if (_unicodeDigits >= 0)
        {
            var digit = HexValue(b);
            _unicodeValue = (_unicodeValue << 4) | Math.Max(digit, 0);
            if (++_unicodeDigits == 4)
            {
                _unicodeDigits = -1;
                AppendEscapedChar((char)_unicodeValue);
            }

            return;
        }

        if (_escape)
        {
            _escape = false;
            switch (b)
            {
                case (byte)'u':
                    _unicodeDigits = 0;
                    _unicodeValue = 0;
                    return;
                case (byte)'b': AppendNameByte(0x08); return;
                case (byte)'f': AppendNameByte(0x0C); return;
                case (byte)'n': AppendNameByte(0x0A); return;
                case (byte)'r': AppendNameByte(0x0D); return;
                case (byte)'t': AppendNameByte(0x09); return;
                default: AppendNameByte(b); return; // \" \\ \/
            }
        }

        if (b == (byte)'\\')
        {
            _escape = true;
            return;
        }

        if (b == (byte)'"')
        {
            _inString = false;
            if (_capturing)
            {
                NameEnded();
            }

            return;
        }

        AppendNameByte(b);
    }

    private void AppendEscapedChar(char c)
    {
        if (!_capturing)
        {
            return;
        }

        if (char.IsHighSurrogate(c))
        {
            _highSurrogate = c;
            return;
        }

        Span<char> chars = stackalloc char[2];
        var count = 0;
        if (_highSurrogate != default)
        {
            chars[count++] = _highSurrogate;
            _highSurrogate = default;
        }

        chars[count++] = c;
        Span<byte> utf8 = stackalloc byte[8];
        var written = Encoding.UTF8.GetBytes(chars[..count], utf8);
        foreach (var b in utf8[..written])
        {
            AppendNameByte(b);
        }
    }

    private void AppendNameByte(byte b)
    {
        if (!_capturing || _nameTooLong)
        {
            return;
        }

        if (_nameLength == _name.Length)
        {
            _nameTooLong = true; // longer than any segment: matches none
            return;
        }

        _name[_nameLength++] = b;
    }

    private void NameEnded()
    {
        var name = _nameTooLong ? ReadOnlySpan<byte>.Empty : _name.AsSpan(0, _nameLength);
        foreach (var path in _paths)
        {
            if (path.ExpectsName(_depth) && path.NameEnded(name, _nameTooLong) is { } duplicate)
            {
                Duplicate ??= duplicate;
            }
        }
    }

    private static int HexValue(byte b) => b switch
    {
        >= (byte)'0' and <= (byte)'9' => b - '0',
        >= (byte)'a' and <= (byte)'f' => b - 'a' + 10,
        >= (byte)'A' and <= (byte)'F' => b - 'A' + 10,
        _ => -1,
    };

    /// <summary>One rule's path: which of its objects are open, which members were seen in them.</summary>
    private sealed class PathState(ImmutableArray<byte[]> segments)
    {
        public ImmutableArray<byte[]> Segments { get; } = segments;

        // Path objects open: 1 inside the root object, 2 inside the first segment's object, and so on. The innermost one
        // has its members at depth Open and looks for Segments[Open - 1].
        private int _open;
        private bool _rootSeen;
        private bool _expectName;
        private readonly bool[] _seen = new bool[segments.Length];

        /// <summary>A matched member whose value has not started: an object there is the next path object.</summary>
        public bool ValuePending { get; set; }

        public bool ExpectsName(int depth) => _open > 0 && depth == _open && _expectName && _open <= Segments.Length;

        public void OpenObject(int depth)
        {
            if (!_rootSeen && depth == 1)
            {
                _rootSeen = true;
                _open = 1;
                _expectName = true;
                return;
            }

            if (ValuePending && depth == _open + 1)
            {
                ValuePending = false;
                _open++;
                _expectName = true;
            }
        }

        public void Close(int depth)
        {
            ValuePending = false;
            if (_open > 0 && depth == _open)
            {
                _open--; // the path object ended; its parent goes on after its value
                _expectName = false;
            }
        }

        public void Comma(int depth)
        {
            ValuePending = false;
            if (_open > 0 && depth == _open)
            {
                _expectName = true;
            }
        }

        /// <summary>A member name in the innermost path object ended: the duplicated path when it was seen before.</summary>
        public string? NameEnded(ReadOnlySpan<byte> name, bool tooLong)
        {
            _expectName = false;
            var level = _open - 1;
            if (tooLong || !name.SequenceEqual(Segments[level]))
            {
                return null;
            }

            if (_seen[level])
            {
                return "$." + string.Join('.', Segments.Take(level + 1).Select(static s => Encoding.UTF8.GetString(s)));
            }

            _seen[level] = true;
            ValuePending = level < Segments.Length - 1;
            return null;
        }
    }
}

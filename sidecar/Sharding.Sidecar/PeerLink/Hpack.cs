using System.Diagnostics;

namespace Sharding.Sidecar.PeerLink;

/// <summary>A header block that breaks HPACK (RFC 7541) or the decoder's limits.</summary>
internal sealed class HpackException(string message) : Exception(message);

/// <summary>Receives the fields of a header block from <see cref="HpackDecoder"/>.</summary>
internal interface IHpackSink
{
    /// <summary>Called once per decoded field, in order. The spans are only valid during the call.</summary>
    void OnField(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value);
}

/// <summary>Decodes HPACK header blocks (RFC 7541) for one direction of one connection, keeping its dynamic table.</summary>
/// <remarks>
/// <para>Strings are handed out without copying: raw literals as slices of the block, indexed ones from the static table or
/// the dynamic table's buffer, Huffman-coded ones from a scratch buffer this decoder owns. Nothing is allocated per block
/// once the scratch buffer and the table's buffers have grown to their working size.</para>
/// <para>The dynamic table keeps its entries' bytes back to back in one buffer, oldest first, and moves the live bytes to
/// the front when an insert does not fit at the end; the buffer is up to twice the largest table size, so moves are rare
/// and cost O(1) per inserted byte amortized. Entries never wrap, so every field is one contiguous span.</para>
/// <para>Going over <c>maxHeaderListSize</c> stops the calls to <see cref="IHpackSink.OnField"/>, but the rest of the
/// block is still decoded and indexed before the <see cref="HpackException"/> is thrown, so the dynamic table stays in
/// step with the peer's encoder and the connection may go on (RFC 9113 §6.5.2, §10.5.1: answer 431 or reset the stream).
/// Every other <see cref="HpackException"/> leaves the table in an unknown state: a connection error of type
/// COMPRESSION_ERROR (RFC 9113 §4.3).</para>
/// </remarks>
internal sealed class HpackDecoder
{
    /// <summary>RFC 7541 §4.1: an entry's size is its name's and value's lengths plus 32.</summary>
    private const int EntryOverhead = 32;

    private readonly int _maxTableSize;
    private readonly int _maxHeaderListSize;
    private readonly int _maxTableBufferLength;
    private readonly int _scratchLimit;

    private byte[] _tableBytes = [];
    private TableEntry[] _entries = [];
    private int _first;
    private int _count;
    private int _end;
    private int _size;
    private int _tableSizeLimit;
    private byte[] _scratch = [];

    /// <param name="maxTableSize">The SETTINGS_HEADER_TABLE_SIZE we advertised: dynamic table size updates above it are errors.</param>
    /// <param name="maxHeaderListSize">The limit on the sum over a block's fields of name length + value length + 32
    /// (RFC 9113 §6.5.2).</param>
    public HpackDecoder(int maxTableSize, int maxHeaderListSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxTableSize);
        ArgumentOutOfRangeException.ThrowIfNegative(maxHeaderListSize);
        _maxTableSize = maxTableSize;
        _maxHeaderListSize = maxHeaderListSize;
        _tableSizeLimit = maxTableSize;
        _maxTableBufferLength = (int)Math.Min(2L * maxTableSize, Array.MaxLength);

        // A Huffman string is kept only if its field can be passed on (under the list limit) or indexed (under the table
        // size), so the scratch buffer never needs more than the larger of the two.
        _scratchLimit = Math.Max(maxHeaderListSize, maxTableSize);
    }

    /// <summary>The dynamic table's size in RFC 7541 §4.1 terms (names, values and 32 per entry).</summary>
    public int DynamicTableSize => _size;

    /// <summary>How many entries the dynamic table holds.</summary>
    public int DynamicTableCount => _count;

    /// <summary>The dynamic table's current maximum size: <c>maxTableSize</c> until the peer sends a size update.</summary>
    public int DynamicTableMaxSize => _tableSizeLimit;

    /// <summary>Decodes one complete header block (HEADERS and CONTINUATION payloads already joined), calling
    /// <paramref name="sink"/> once per field in order.</summary>
    /// <exception cref="HpackException">The block is malformed, or its fields are over the header list limit.</exception>
    public void Decode<TSink>(ReadOnlySpan<byte> block, ref TSink sink)
        where TSink : IHpackSink, allows ref struct
    {
        var position = 0;
        var fieldSeen = false;
        long listSize = 0;
        var overLimit = false;
        while (position < block.Length)
        {
            var first = block[position];
            if ((first & 0x80) != 0)
            {
                // §6.1 indexed field: 1xxxxxxx.
                var index = ReadInteger(block, ref position, 7);
                GetEntry(index, out var name, out var value);
                fieldSeen = true;
                Emit(name, value, ref sink, ref listSize, ref overLimit);
                continue;
            }

            if ((first & 0xE0) == 0x20)
            {
                // §6.3 dynamic table size update: 001xxxxx, only before the block's first field (§4.2).
                if (fieldSeen)
                {
                    throw new HpackException("A dynamic table size update came after a field of the header block.");
                }

                var size = ReadInteger(block, ref position, 5);
                if (size > _maxTableSize)
                {
                    throw new HpackException($"A dynamic table size update to {size} is above the {_maxTableSize} we advertised.");
                }

                _tableSizeLimit = size;
                EvictTo(size);
                continue;
            }

            // §6.2 literal fields: 01xxxxxx with incremental indexing (6-bit index), 0000xxxx without indexing and
            // 0001xxxx never indexed (4-bit index); an index of 0 means a literal name follows.
            fieldSeen = true;
            var indexing = (first & 0xC0) == 0x40;
            var nameIndex = ReadInteger(block, ref position, indexing ? 6 : 4);
            var scratchUsed = 0;
            ReadOnlySpan<byte> fieldName;
            int nameLength;
            if (nameIndex == 0)
            {
                fieldName = ReadString(block, ref position, ref scratchUsed, out nameLength);
            }
            else
            {
                GetEntry(nameIndex, out fieldName, out _);
                nameLength = fieldName.Length;
                if (indexing && nameIndex > HpackStaticTable.Count)
                {
                    // The insert below may evict or move the entry this name comes from (§4.4): copy it first.
                    EnsureScratch(nameLength);
                    fieldName.CopyTo(_scratch);
                    fieldName = _scratch.AsSpan(0, nameLength);
                    scratchUsed = nameLength;
                }
            }

            var fieldValue = ReadString(block, ref position, ref scratchUsed, out var valueLength);
            if (indexing)
            {
                if ((long)nameLength + valueLength + EntryOverhead > _tableSizeLimit)
                {
                    // §4.4: an entry larger than the table empties it and is not added.
                    EvictTo(0);
                }
                else
                {
                    Debug.Assert(fieldName.Length == nameLength && fieldValue.Length == valueLength, "a field that fits the table is always kept whole");
                    Insert(fieldName, fieldValue);
                }
            }

            if (fieldName.Length == nameLength && fieldValue.Length == valueLength)
            {
                Emit(fieldName, fieldValue, ref sink, ref listSize, ref overLimit);
            }
            else
            {
                // A Huffman string too long for the scratch buffer: its field is over the list limit by itself.
                Debug.Assert((long)nameLength + valueLength + EntryOverhead > _maxHeaderListSize, "only fields over the limit are dropped");
                overLimit = true;
            }
        }

        if (overLimit)
        {
            throw new HpackException($"The header list is larger than the {_maxHeaderListSize} bytes allowed (SETTINGS_MAX_HEADER_LIST_SIZE).");
        }
    }

    private void Emit<TSink>(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, ref TSink sink, ref long listSize, ref bool overLimit)
        where TSink : IHpackSink, allows ref struct
    {
        // RFC 9113 §6.5.2: the uncompressed size of a field is its name's and value's lengths plus 32.
        listSize += (long)name.Length + value.Length + EntryOverhead;
        if (listSize > _maxHeaderListSize)
        {
            overLimit = true;
        }

        if (!overLimit)
        {
            sink.OnField(name, value);
        }
    }

    /// <summary>RFC 7541 §5.1: an integer with an N-bit prefix, at most 5 continuation bytes, no larger than int.MaxValue.</summary>
    private static int ReadInteger(ReadOnlySpan<byte> block, ref int position, int prefixBits)
    {
        var mask = (1 << prefixBits) - 1;
        var value = block[position++] & mask;
        if (value < mask)
        {
            return value;
        }

        long result = value;
        for (var shift = 0; shift <= 28; shift += 7)
        {
            if (position >= block.Length)
            {
                throw new HpackException("The header block ends inside an integer.");
            }

            var next = block[position++];
            result += (long)(next & 0x7F) << shift;
            if (result > int.MaxValue)
            {
                throw new HpackException("An integer in the header block is larger than 2^31-1.");
            }

            if ((next & 0x80) == 0)
            {
                return (int)result;
            }
        }

        throw new HpackException("An integer in the header block has more than 5 continuation bytes.");
    }

    /// <summary>
    /// RFC 7541 §5.2: a string literal. Raw strings are slices of the block; Huffman-coded ones are decoded into the scratch
    /// buffer after the <paramref name="scratchUsed"/> bytes already there. <paramref name="length"/> is the decoded length;
    /// the span is shorter only when a Huffman string did not fit in the scratch buffer's limit.
    /// </summary>
    private ReadOnlySpan<byte> ReadString(ReadOnlySpan<byte> block, scoped ref int position, scoped ref int scratchUsed, out int length)
    {
        if (position >= block.Length)
        {
            throw new HpackException("The header block ends before a string literal.");
        }

        var huffman = (block[position] & 0x80) != 0;
        var encodedLength = ReadInteger(block, ref position, 7);
        if (encodedLength > block.Length - position)
        {
            throw new HpackException($"A string literal of {encodedLength} bytes runs past the end of the header block.");
        }

        var encoded = block.Slice(position, encodedLength);
        position += encodedLength;
        if (!huffman)
        {
            length = encodedLength;
            return encoded;
        }

        // The shortest Huffman code is 5 bits, so n bytes decode to at most 8n/5.
        var offset = scratchUsed;
        EnsureScratch(Math.Min(offset + (encodedLength * 8L / 5), _scratchLimit));
        var room = _scratch.AsSpan(Math.Min(offset, _scratch.Length));
        length = HpackHuffman.Decode(encoded, room);
        scratchUsed = (int)Math.Min((long)offset + length, int.MaxValue);
        return room[..Math.Min(length, room.Length)];
    }

    private void EnsureScratch(long length)
    {
        if (length <= _scratch.Length)
        {
            return;
        }

        var size = (int)Math.Min(_scratchLimit, Math.Max(length, Math.Max(256, 2L * _scratch.Length)));
        var grown = new byte[size];
        _scratch.CopyTo(grown, 0);
        _scratch = grown;
    }

    /// <summary>RFC 7541 §2.3.3: indices 1-61 are the static table, then the dynamic table newest first.</summary>
    private void GetEntry(int index, out ReadOnlySpan<byte> name, out ReadOnlySpan<byte> value)
    {
        if (index == 0)
        {
            throw new HpackException("Index 0 is not a field (RFC 7541 §6.1).");
        }

        if (index <= HpackStaticTable.Count)
        {
            name = HpackStaticTable.Name(index);
            value = HpackStaticTable.Value(index);
            return;
        }

        var dynamicIndex = index - HpackStaticTable.Count;
        if (dynamicIndex > _count)
        {
            throw new HpackException($"Index {index} is beyond the {HpackStaticTable.Count} static and {_count} dynamic table entries.");
        }

        var entry = _entries[(_first + _count - dynamicIndex) % _entries.Length];
        name = _tableBytes.AsSpan(entry.Offset, entry.NameLength);
        value = _tableBytes.AsSpan(entry.Offset + entry.NameLength, entry.ValueLength);
    }

    /// <summary>RFC 7541 §4.4: evicts from the oldest end until the new entry fits, then adds it as the newest.</summary>
    private void Insert(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        Debug.Assert(!name.Overlaps(_tableBytes) && !value.Overlaps(_tableBytes), "inserted strings never come from the table");
        var entrySize = name.Length + value.Length + EntryOverhead;
        EvictTo(_tableSizeLimit - entrySize);

        var length = name.Length + value.Length;
        MakeRoom(length);
        name.CopyTo(_tableBytes.AsSpan(_end));
        value.CopyTo(_tableBytes.AsSpan(_end + name.Length));

        if (_count == _entries.Length)
        {
            // At most maxTableSize / 32 entries fit, so this doubling stops there.
            var grown = new TableEntry[Math.Max(16, _entries.Length * 2)];
            for (var i = 0; i < _count; i++)
            {
                grown[i] = _entries[(_first + i) % _entries.Length];
            }

            _entries = grown;
            _first = 0;
        }

        _entries[(_first + _count) % _entries.Length] = new TableEntry(_end, name.Length, value.Length);
        _count++;
        _end += length;
        _size += entrySize;
    }

    /// <summary>Makes <paramref name="length"/> bytes free after the newest entry, moving (and maybe growing) the buffer.</summary>
    private void MakeRoom(int length)
    {
        if (_end + length <= _tableBytes.Length)
        {
            return;
        }

        var start = _count == 0 ? _end : _entries[_first].Offset;
        var live = _end - start;
        var needed = live + length; // <= the table size limit <= maxTableSize, after the eviction
        var target = _tableBytes;
        if (needed > _tableBytes.Length / 2 && _tableBytes.Length < _maxTableBufferLength)
        {
            target = new byte[(int)Math.Min(_maxTableBufferLength, Math.Max(512, 2L * Math.Max(needed, _tableBytes.Length)))];
        }

        Array.Copy(_tableBytes, start, target, 0, live);
        _tableBytes = target;
        _end = live;
        for (var i = 0; i < _count; i++)
        {
            ref var entry = ref _entries[(_first + i) % _entries.Length];
            entry = entry with { Offset = entry.Offset - start };
        }
    }

    private void EvictTo(int size)
    {
        while (_size > size)
        {
            var oldest = _entries[_first];
            _size -= oldest.NameLength + oldest.ValueLength + EntryOverhead;
            _first = (_first + 1) % _entries.Length;
            _count--;
        }

        if (_count == 0)
        {
            _first = 0;
            _end = 0;
        }
    }

    private readonly record struct TableEntry(int Offset, int NameLength, int ValueLength);
}

/// <summary>Writes HPACK header blocks (RFC 7541) that never use a dynamic table or Huffman coding.</summary>
/// <remarks>
/// Without a dynamic table the peer's decoder keeps no state for us, so blocks are independent and any writer can produce
/// one at any time; fields go out as the static table's indexed form when name and value match an entry, else as literals
/// without indexing (§6.2.2) with the static table's name index when the name is there.
/// </remarks>
internal static class HpackEncoder
{
    /// <summary>Writes <c>:status</c>: indexed when the status is in the static table (200, 204, 206, 304, 400, 404, 500),
    /// else a literal without indexing with name index 8. Returns the bytes written, or -1 when
    /// <paramref name="destination"/> is too small.</summary>
    public static int WriteStatus(int status, Span<byte> destination)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(status, 100);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(status, 999);
        var index = status switch
        {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => 0,
        };
        if (index != 0)
        {
            if (destination.IsEmpty)
            {
                return -1;
            }

            destination[0] = (byte)(0x80 | index);
            return 1;
        }

        if (destination.Length < 5)
        {
            return -1;
        }

        destination[0] = 0x08; // literal without indexing, name = static index 8 (:status)
        destination[1] = 3; // raw string of 3 bytes
        destination[2] = (byte)('0' + (status / 100));
        destination[3] = (byte)('0' + (status / 10 % 10));
        destination[4] = (byte)('0' + (status % 10));
        return 5;
    }

    /// <summary>
    /// Writes one field: the 1-byte indexed form when name and value match a static entry (<c>:method GET</c>,
    /// <c>:path /</c>...), else a literal without indexing (0000xxxx) with the static table's first index for the name, or
    /// a literal name. The name is written lowercased (ASCII), so HTTP/1.1 names may be passed as they came. Never Huffman.
    /// Returns the bytes written, or -1 when <paramref name="destination"/> is too small.
    /// </summary>
    public static int WriteField(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, Span<byte> destination)
    {
        var nameIndex = HpackStaticTable.Find(name, value, out var fieldMatch);
        if (fieldMatch)
        {
            if (destination.IsEmpty)
            {
                return -1;
            }

            destination[0] = (byte)(0x80 | nameIndex);
            return 1;
        }

        var position = 0;
        if (nameIndex != 0)
        {
            if (!TryWriteInteger(nameIndex, 4, 0x00, destination, ref position))
            {
                return -1;
            }
        }
        else
        {
            if (destination.IsEmpty)
            {
                return -1;
            }

            destination[position++] = 0x00;
            if (!TryWriteInteger(name.Length, 7, 0x00, destination, ref position) || destination.Length - position < name.Length)
            {
                return -1;
            }

            for (var i = 0; i < name.Length; i++)
            {
                destination[position++] = HpackStaticTable.ToLower(name[i]);
            }
        }

        if (!TryWriteInteger(value.Length, 7, 0x00, destination, ref position) || destination.Length - position < value.Length)
        {
            return -1;
        }

        value.CopyTo(destination[position..]);
        return position + value.Length;
    }

    /// <summary>The most bytes <see cref="WriteField"/> can take for these lengths (the literal-name form).</summary>
    public static int MaxFieldLength(int nameLength, int valueLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(nameLength);
        ArgumentOutOfRangeException.ThrowIfNegative(valueLength);
        return checked(1 + IntegerLength(nameLength, 7) + nameLength + IntegerLength(valueLength, 7) + valueLength);
    }

    private static int IntegerLength(int value, int prefixBits)
    {
        var mask = (1 << prefixBits) - 1;
        if (value < mask)
        {
            return 1;
        }

        var length = 2;
        for (var rest = (uint)(value - mask); rest >= 0x80; rest >>= 7)
        {
            length++;
        }

        return length;
    }

    /// <summary>RFC 7541 §5.1: <paramref name="value"/> with an N-bit prefix after the <paramref name="flags"/> bits.</summary>
    private static bool TryWriteInteger(int value, int prefixBits, byte flags, Span<byte> destination, ref int position)
    {
        if (position >= destination.Length)
        {
            return false;
        }

        var mask = (1 << prefixBits) - 1;
        if (value < mask)
        {
            destination[position++] = (byte)(flags | value);
            return true;
        }

        destination[position++] = (byte)(flags | mask);
        var rest = (uint)(value - mask);
        while (rest >= 0x80)
        {
            if (position >= destination.Length)
            {
                return false;
            }

            destination[position++] = (byte)((rest & 0x7F) | 0x80);
            rest >>= 7;
        }

        if (position >= destination.Length)
        {
            return false;
        }

        destination[position++] = (byte)rest;
        return true;
    }
}

/// <summary>The HPACK static table (RFC 7541 Appendix A).</summary>
internal static class HpackStaticTable
{
    /// <summary>Entries 1 to 61.</summary>
    public const int Count = 61;

    // Appendix A, in order: entry i is at [i - 1].
    private static readonly (string Name, string Value)[] Entries =
    [
        (":authority", ""),
        (":method", "GET"),
        (":method", "POST"),
        (":path", "/"),
        (":path", "/index.html"),
        (":scheme", "http"),
        (":scheme", "https"),
        (":status", "200"),
        (":status", "204"),
        (":status", "206"),
        (":status", "304"),
        (":status", "400"),
        (":status", "404"),
        (":status", "500"),
        ("accept-charset", ""),
        ("accept-encoding", "gzip, deflate"),
        ("accept-language", ""),
        ("accept-ranges", ""),
        ("accept", ""),
        ("access-control-allow-origin", ""),
        ("age", ""),
        ("allow", ""),
        ("authorization", ""),
        ("cache-control", ""),
        ("content-disposition", ""),
        ("content-encoding", ""),
        ("content-language", ""),
        ("content-length", ""),
        ("content-location", ""),
        ("content-range", ""),
        ("content-type", ""),
        ("cookie", ""),
        ("date", ""),
        ("etag", ""),
        ("expect", ""),
        ("expires", ""),
        ("from", ""),
        ("host", ""),
        ("if-match", ""),
        ("if-modified-since", ""),
        ("if-none-match", ""),
        ("if-range", ""),
        ("if-unmodified-since", ""),
        ("last-modified", ""),
        ("link", ""),
        ("location", ""),
        ("max-forwards", ""),
        ("proxy-authenticate", ""),
        ("proxy-authorization", ""),
        ("range", ""),
        ("referer", ""),
        ("refresh", ""),
        ("retry-after", ""),
        ("server", ""),
        ("set-cookie", ""),
        ("strict-transport-security", ""),
        ("transfer-encoding", ""),
        ("user-agent", ""),
        ("vary", ""),
        ("via", ""),
        ("www-authenticate", ""),
    ];

    // Index 0 is unused, so entry i is at [i].
    private static readonly byte[][] Names = [[], .. Entries.Select(e => System.Text.Encoding.ASCII.GetBytes(e.Name))];
    private static readonly byte[][] Values = [[], .. Entries.Select(e => System.Text.Encoding.ASCII.GetBytes(e.Value))];

    /// <summary>By name length, the indices of the entries whose name has that length, ascending.</summary>
    private static readonly int[][] ByNameLength = BuildByNameLength();

    private static int[][] BuildByNameLength()
    {
        var byLength = new int[Names.Max(n => n.Length) + 1][];
        for (var length = 0; length < byLength.Length; length++)
        {
            byLength[length] = [.. Enumerable.Range(1, Count).Where(index => Names[index].Length == length)];
        }

        return byLength;
    }

    /// <summary>The name of entry <paramref name="index"/> (1 to 61).</summary>
    public static ReadOnlySpan<byte> Name(int index) => Names[index];

    /// <summary>The value of entry <paramref name="index"/> (1 to 61).</summary>
    public static ReadOnlySpan<byte> Value(int index) => Values[index];

    /// <summary>
    /// The first entry whose name equals <paramref name="name"/> ignoring ASCII case, or 0; when an entry with that name
    /// also has exactly <paramref name="value"/>, that entry, with <paramref name="fieldMatch"/> set.
    /// </summary>
    public static int Find(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, out bool fieldMatch)
    {
        fieldMatch = false;
        if ((uint)name.Length >= (uint)ByNameLength.Length)
        {
            return 0;
        }

        var nameIndex = 0;
        foreach (var index in ByNameLength[name.Length])
        {
            if (!EqualsLowercase(name, Names[index]))
            {
                continue;
            }

            if (value.SequenceEqual(Values[index]))
            {
                fieldMatch = true;
                return index;
            }

            if (nameIndex == 0)
            {
                nameIndex = index;
            }
        }

        return nameIndex;
    }

    /// <summary>ASCII lowercase; every other byte as it is.</summary>
    public static byte ToLower(byte value) => (uint)(value - 'A') <= 'Z' - 'A' ? (byte)(value | 0x20) : value;

    private static bool EqualsLowercase(ReadOnlySpan<byte> name, ReadOnlySpan<byte> lowercase)
    {
        for (var i = 0; i < name.Length; i++)
        {
            if (ToLower(name[i]) != lowercase[i])
            {
                return false;
            }
        }

        return true;
    }
}

/// <summary>The HPACK Huffman code (RFC 7541 Appendix B) and a decoder for it.</summary>
/// <remarks>
/// Decoding walks the code tree 4 bits at a time (the technique nghttp2 uses): a state is one of the tree's 256 inner
/// nodes, and a table built once from the code says, for each state and nibble, the next state, the symbol completed on the
/// way if any (codes are at least 5 bits, so at most one per nibble), whether EOS was reached, and whether the next state
/// may end a string: padding must be a prefix of EOS (all ones) no longer than 7 bits (§5.2), which are exactly the inner
/// nodes reached from the root by up to 7 one-bits.
/// </remarks>
internal static class HpackHuffman
{
    private const int Eos = 256;
    private const uint EmitFlag = 1u << 16;
    private const uint AcceptFlag = 1u << 17;
    private const uint EosFlag = 1u << 18;

    /// <summary>[(state &lt;&lt; 4) | nibble] = next state (bits 0-7) | symbol (bits 8-15) | flags.</summary>
    private static readonly uint[] Transitions = BuildTransitions();

    /// <summary>Appendix B's codes, by symbol (0-255, then 256 = EOS), right-aligned.</summary>
    public static ReadOnlySpan<uint> Codes =>
    [
        0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7, // 0-7
        0xfffffe8, 0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec, // 8-15
        0xfffffed, 0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3, // 16-23
        0xffffff4, 0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb, // 24-31
        0x14, 0x3f8, 0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa, // 32-39
        0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16, 0x17, 0x18, // 40-47
        0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, // 48-55
        0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb, 0x3fc, // 56-63
        0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, // 64-71
        0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, // 72-79
        0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72, // 80-87
        0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0, 0x1ffc, 0x3ffc, 0x22, // 88-95
        0x7ffd, 0x3, 0x23, 0x4, 0x24, 0x5, 0x25, 0x26, // 96-103
        0x27, 0x6, 0x74, 0x75, 0x28, 0x29, 0x2a, 0x7, // 104-111
        0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78, // 112-119
        0x79, 0x7a, 0x7b, 0x7ffe, 0x7fc, 0x3ffd, 0x1ffd, 0xffffffc, // 120-127
        0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4, 0x3fffd5, 0x7fffd9, // 128-135
        0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb, 0x7fffdf, // 136-143
        0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3, // 144-151
        0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef, // 152-159
        0x3fffda, 0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde, // 160-167
        0x7fffea, 0x3fffdd, 0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec, // 168-175
        0x1fffe0, 0x1fffe1, 0x3fffe0, 0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef, // 176-183
        0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4, 0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1, // 184-191
        0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7, 0x7ffff2, 0x3fffe8, 0x1ffffec, // 192-199
        0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf, 0x3ffffe5, 0xfffff1, 0x1ffffed, // 200-207
        0x7fff2, 0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7, 0x7ffffe2, 0xfffff2, // 208-215
        0x1fffe4, 0x1fffe5, 0x3ffffe8, 0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4, 0x7ffffe5, // 216-223
        0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3, // 224-231
        0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4, // 232-239
        0x3ffffeb, 0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea, // 240-247
        0x7ffffeb, 0xffffffe, 0x7ffffec, 0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee, // 248-255
        0x3fffffff, // 256 (EOS)
    ];

    /// <summary>Appendix B's code lengths in bits, by symbol.</summary>
    public static ReadOnlySpan<byte> CodeLengths =>
    [
        13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0-15
        28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 16-31
        6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // 32-47
        5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 48-63
        13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // 64-79
        7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 80-95
        15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // 96-111
        6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 112-127
        20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128-143
        24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144-159
        22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160-175
        21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176-191
        26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192-207
        19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208-223
        20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224-239
        26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240-255
        30, // 256 (EOS)
    ];

    /// <summary>
    /// Decodes <paramref name="source"/> into <paramref name="destination"/> and returns the decoded length; bytes past the
    /// end of <paramref name="destination"/> are counted but not written.
    /// </summary>
    /// <exception cref="HpackException">The string holds EOS, or its padding is not 0-7 one-bits.</exception>
    public static int Decode(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        if (source.Length > int.MaxValue / 8 * 5)
        {
            throw new HpackException("A Huffman-coded string is too long.");
        }

        var transitions = Transitions;
        var state = 0u;
        var accept = true;
        var written = 0;
        foreach (var octet in source)
        {
            var high = transitions[(state << 4) | (uint)(octet >> 4)];
            if ((high & (EmitFlag | EosFlag)) != 0)
            {
                written = Emit(high, destination, written);
            }

            var low = transitions[((high & 0xFF) << 4) | (uint)(octet & 0xF)];
            if ((low & (EmitFlag | EosFlag)) != 0)
            {
                written = Emit(low, destination, written);
            }

            state = low & 0xFF;
            accept = (low & AcceptFlag) != 0;
        }

        if (!accept)
        {
            throw new HpackException("A Huffman-coded string ends in padding that is longer than 7 bits or not all ones.");
        }

        return written;
    }

    private static int Emit(uint transition, Span<byte> destination, int written)
    {
        if ((transition & EosFlag) != 0)
        {
            throw new HpackException("A Huffman-coded string contains EOS.");
        }

        if (written < destination.Length)
        {
            destination[written] = (byte)(transition >> 8);
        }

        return written + 1;
    }

    private static uint[] BuildTransitions()
    {
        // The code tree: children[2 * node + bit] is an inner node's number, or ~symbol for a leaf. The code is complete
        // (with EOS), so its 257 leaves hang from exactly 256 inner nodes.
        var codes = Codes;
        var lengths = CodeLengths;
        var children = new int[2 * 256];
        Array.Fill(children, int.MinValue);
        var nodes = 1;
        for (var symbol = 0; symbol <= Eos; symbol++)
        {
            var node = 0;
            for (var bit = lengths[symbol] - 1; bit > 0; bit--)
            {
                ref var child = ref children[(2 * node) + (int)((codes[symbol] >> bit) & 1)];
                if (child == int.MinValue)
                {
                    child = nodes++;
                }

                node = child;
            }

            children[(2 * node) + (int)(codes[symbol] & 1)] = ~symbol;
        }

        Debug.Assert(nodes == 256 && Array.IndexOf(children, int.MinValue) < 0, "Appendix B is a complete code");

        // Padding may end a string after up to 7 one-bits from the root (no code is all ones before EOS's 30).
        var accepting = new bool[256];
        for (int depth = 0, node = 0; depth <= 7; depth++, node = children[(2 * node) + 1])
        {
            accepting[node] = true;
        }

        var transitions = new uint[256 * 16];
        for (var state = 0; state < 256; state++)
        {
            for (var nibble = 0; nibble < 16; nibble++)
            {
                var node = state;
                var entry = 0u;
                for (var bit = 3; bit >= 0; bit--)
                {
                    var child = children[(2 * node) + ((nibble >> bit) & 1)];
                    if (child >= 0)
                    {
                        node = child;
                        continue;
                    }

                    if (~child == Eos)
                    {
                        entry = EosFlag;
                        node = 0;
                        break;
                    }

                    entry = EmitFlag | ((uint)~child << 8);
                    node = 0;
                }

                transitions[(state << 4) | nibble] = entry | (uint)node | (accepting[node] && (entry & EosFlag) == 0 ? AcceptFlag : 0);
            }
        }

        return transitions;
    }
}

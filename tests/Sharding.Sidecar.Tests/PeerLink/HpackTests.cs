using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using Sharding.Sidecar.PeerLink;
using Sharding.Testing;

namespace Sharding.Sidecar.Tests.PeerLink;

/// <summary>Collects decoded fields as Latin-1 strings (one char per byte, so any byte survives the comparison).</summary>
internal sealed class HpackFieldCollector : IHpackSink
{
    public List<(string Name, string Value)> Fields { get; } = [];

    public void OnField(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value) =>
        Fields.Add((Encoding.Latin1.GetString(name), Encoding.Latin1.GetString(value)));
}

/// <summary>A ref struct sink: the decoder accepts one (allows ref struct) and calls it without boxing.</summary>
internal ref struct HpackCountingSink : IHpackSink
{
    public int Fields;
    public long Bytes;

    public void OnField(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        Fields++;
        Bytes += name.Length + value.Length;
    }
}

internal static class HpackTestBlocks
{
    public static byte[] Hex(string hex) => Convert.FromHexString(hex.Replace(" ", string.Empty, StringComparison.Ordinal));

    public static (string Name, string Value)[] Decode(HpackDecoder decoder, byte[] block)
    {
        var collector = new HpackFieldCollector();
        decoder.Decode(block, ref collector);
        return [.. collector.Fields];
    }

    public static (string Name, string Value)[] Decode(HpackDecoder decoder, string hex) => Decode(decoder, Hex(hex));

    /// <summary>The dynamic table, newest first, read through indexed fields (which do not change it).</summary>
    public static (string Name, string Value)[] Table(HpackDecoder decoder)
    {
        var block = new List<byte>();
        for (var i = 1; i <= decoder.DynamicTableCount; i++)
        {
            WriteInteger(block, HpackStaticTable.Count + i, 7, 0x80);
        }

        var entries = Decode(decoder, block.ToArray());
        var beyond = new List<byte>();
        WriteInteger(beyond, HpackStaticTable.Count + decoder.DynamicTableCount + 1, 7, 0x80);
        Assert.Throws<HpackException>(() => Decode(decoder, beyond.ToArray()));
        return entries;
    }

    /// <summary>RFC 7541 §5.1, written independently of the encoder under test.</summary>
    public static void WriteInteger(List<byte> block, int value, int prefixBits, byte flags)
    {
        var mask = (1 << prefixBits) - 1;
        if (value < mask)
        {
            block.Add((byte)(flags | value));
            return;
        }

        block.Add((byte)(flags | mask));
        value -= mask;
        for (; value >= 0x80; value >>= 7)
        {
            block.Add((byte)((value & 0x7F) | 0x80));
        }

        block.Add((byte)value);
    }

    public static void WriteRawString(List<byte> block, string text)
    {
        WriteInteger(block, text.Length, 7, 0x00);
        block.AddRange(Encoding.Latin1.GetBytes(text));
    }
}

/// <summary>Every example of RFC 7541 Appendix C, fields and dynamic table after each block.</summary>
public sealed class HpackDecoderRfcExampleTests
{
    private const string Date21 = "Mon, 21 Oct 2013 20:13:21 GMT";
    private const string Date22 = "Mon, 21 Oct 2013 20:13:22 GMT";
    private const string Location = "https://www.example.com";
    private const string Cookie = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";

    [Fact]
    public void C2_1_LiteralWithIndexing_AddsTheEntry()
    {
        var decoder = new HpackDecoder(4096, 16_384);
        var fields = HpackTestBlocks.Decode(decoder, "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        Assert.Equal([("custom-key", "custom-header")], fields);
        Assert.Equal([("custom-key", "custom-header")], HpackTestBlocks.Table(decoder));
        Assert.Equal(55, decoder.DynamicTableSize);
    }

    [Fact]
    public void C2_2_LiteralWithoutIndexing_LeavesTheTableEmpty()
    {
        var decoder = new HpackDecoder(4096, 16_384);
        Assert.Equal([(":path", "/sample/path")], HpackTestBlocks.Decode(decoder, "040c 2f73 616d 706c 652f 7061 7468"));
        Assert.Empty(HpackTestBlocks.Table(decoder));
        Assert.Equal(0, decoder.DynamicTableSize);
    }

    [Fact]
    public void C2_3_LiteralNeverIndexed_LeavesTheTableEmpty()
    {
        var decoder = new HpackDecoder(4096, 16_384);
        Assert.Equal([("password", "secret")], HpackTestBlocks.Decode(decoder, "1008 7061 7373 776f 7264 0673 6563 7265 74"));
        Assert.Empty(HpackTestBlocks.Table(decoder));
        Assert.Equal(0, decoder.DynamicTableSize);
    }

    [Fact]
    public void C2_4_IndexedField_IsTheStaticEntry()
    {
        var decoder = new HpackDecoder(4096, 16_384);
        Assert.Equal([(":method", "GET")], HpackTestBlocks.Decode(decoder, "82"));
        Assert.Equal(0, decoder.DynamicTableSize);
    }

    [Fact]
    public void C3_RequestsWithoutHuffman_ShareTheDynamicTable() => AssertRequests(
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65");

    [Fact]
    public void C4_RequestsWithHuffman_ShareTheDynamicTable() => AssertRequests(
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf");

    [Fact]
    public void C5_ResponsesWithoutHuffman_EvictAtTableSize256() => AssertResponses(
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3120 474d"
        + "546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970 7738 666f"
        + "6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b"
        + "2076 6572 7369 6f6e 3d31");

    [Fact]
    public void C6_ResponsesWithHuffman_EvictAtTableSize256() => AssertResponses(
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7"
        + "8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2 e6c7 b335"
        + "dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07");

    private static void AssertRequests(string first, string second, string third)
    {
        var decoder = new HpackDecoder(4096, 16_384);

        Assert.Equal(
            [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")],
            HpackTestBlocks.Decode(decoder, first));
        Assert.Equal([(":authority", "www.example.com")], HpackTestBlocks.Table(decoder));
        Assert.Equal(57, decoder.DynamicTableSize);

        Assert.Equal(
            [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com"), ("cache-control", "no-cache")],
            HpackTestBlocks.Decode(decoder, second));
        Assert.Equal([("cache-control", "no-cache"), (":authority", "www.example.com")], HpackTestBlocks.Table(decoder));
        Assert.Equal(110, decoder.DynamicTableSize);

        Assert.Equal(
            [(":method", "GET"), (":scheme", "https"), (":path", "/index.html"), (":authority", "www.example.com"), ("custom-key", "custom-value")],
            HpackTestBlocks.Decode(decoder, third));
        Assert.Equal(
            [("custom-key", "custom-value"), ("cache-control", "no-cache"), (":authority", "www.example.com")],
            HpackTestBlocks.Table(decoder));
        Assert.Equal(164, decoder.DynamicTableSize);
    }

    private static void AssertResponses(string first, string second, string third)
    {
        var decoder = new HpackDecoder(256, 16_384);

        Assert.Equal(
            [(":status", "302"), ("cache-control", "private"), ("date", Date21), ("location", Location)],
            HpackTestBlocks.Decode(decoder, first));
        Assert.Equal(
            [("location", Location), ("date", Date21), ("cache-control", "private"), (":status", "302")],
            HpackTestBlocks.Table(decoder));
        Assert.Equal(222, decoder.DynamicTableSize);

        // ":status: 307" needs 42 more bytes than the 34 left: the oldest entry, ":status: 302", is evicted.
        Assert.Equal(
            [(":status", "307"), ("cache-control", "private"), ("date", Date21), ("location", Location)],
            HpackTestBlocks.Decode(decoder, second));
        Assert.Equal(
            [(":status", "307"), ("location", Location), ("date", Date21), ("cache-control", "private")],
            HpackTestBlocks.Table(decoder));
        Assert.Equal(222, decoder.DynamicTableSize);

        // Indices c1 and c0 here name entries that are evicted later in the same block.
        Assert.Equal(
            [(":status", "200"), ("cache-control", "private"), ("date", Date22), ("location", Location), ("content-encoding", "gzip"), ("set-cookie", Cookie)],
            HpackTestBlocks.Decode(decoder, third));
        Assert.Equal(
            [("set-cookie", Cookie), ("content-encoding", "gzip"), ("date", Date22)],
            HpackTestBlocks.Table(decoder));
        Assert.Equal(215, decoder.DynamicTableSize);
    }
}

/// <summary>The decoder's handling of malformed blocks, limits, size updates and its table over long runs.</summary>
public sealed class HpackDecoderTests
{
    [Theory]
    [InlineData("80")] // indexed field with index 0
    [InlineData("be")] // index 62 with an empty dynamic table
    [InlineData("ff 80 01")] // index 255
    [InlineData("0f 2f 00")] // literal whose name index 62 is beyond the table
    [InlineData("7e 01 61")] // literal with indexing whose name index 62 is beyond the table
    [InlineData("ff ff ff ff ff 0f")] // index 2^32 + 126: integer overflow
    [InlineData("ff 80 80 80 80 80 00")] // six continuation bytes
    [InlineData("3f 80 80 80 80 80 00")] // six continuation bytes in a size update that would be valid (31)
    [InlineData("00 7f ff ff ff ff 07")] // string length 2^31 + 126: integer overflow
    [InlineData("ff")] // ends inside an integer
    [InlineData("ff 80")] // ends inside an integer's continuation
    [InlineData("00")] // ends before the literal name
    [InlineData("00 01 61")] // ends before the value
    [InlineData("00 05 61 62")] // name of 5 bytes with 2 left
    [InlineData("00 01 61 03 62")] // value of 3 bytes with 1 left
    [InlineData("00 01 61 84 ff ff ff")] // Huffman value of 4 bytes with 3 left
    [InlineData("00 01 61 84 ff ff ff ff")] // Huffman value holding EOS (30 one-bits) and 2 bits of padding
    [InlineData("00 01 61 81 ff")] // Huffman value of 8 padding bits
    [InlineData("00 01 61 82 1f ff")] // Huffman "a" (00011) then 11 padding bits
    [InlineData("00 01 61 81 18")] // Huffman "a" then padding 000
    [InlineData("00 01 61 81 1e")] // Huffman "a" then padding 110
    [InlineData("82 20")] // dynamic table size update after a field
    [InlineData("82 3f e1 1f")] // dynamic table size update after a field, even one within the limit
    [InlineData("3f e2 1f")] // dynamic table size update to 4097, above the 4096 advertised
    public void Decode_MalformedBlock_ThrowsHpackException(string hex)
    {
        var decoder = new HpackDecoder(4096, 16_384);
        Assert.Throws<HpackException>(() => HpackTestBlocks.Decode(decoder, hex));
    }

    [Fact]
    public void Decode_HuffmanPaddingOf7OnesOrLess_IsAccepted()
    {
        var decoder = new HpackDecoder(4096, 16_384);
        Assert.Equal([("a", "a")], HpackTestBlocks.Decode(decoder, "00 01 61 81 1f")); // "a" + 111
        Assert.Equal([("a", "aaaaa")], HpackTestBlocks.Decode(decoder, "00 01 61 84 18 c6 31 ff")); // 25 bits + 1111111
        Assert.Equal([("a", "aaaaaaaa")], HpackTestBlocks.Decode(decoder, "00 01 61 85 18 c6 31 8c 63")); // 40 bits, no padding
        Assert.Equal([("a", string.Empty)], HpackTestBlocks.Decode(decoder, "00 01 61 80")); // empty Huffman string
    }

    [Fact]
    public void HuffmanDecode_EverySymbol_RoundTrips()
    {
        // Each byte value, then all 256 in one string, coded with Appendix B's table and padded with ones.
        for (var symbol = 0; symbol < 256; symbol++)
        {
            Assert.Equal([(byte)symbol], HuffmanRoundTrip([(byte)symbol]));
        }

        var all = Enumerable.Range(0, 256).Select(i => (byte)i).ToArray();
        Assert.Equal(all, HuffmanRoundTrip(all));
        Assert.Equal(all.Reverse().ToArray(), HuffmanRoundTrip(all.Reverse().ToArray()));
    }

    [Fact]
    public void Decode_SizeUpdateAtMaximum_IsAcceptedAndTwoAtTheStartAreToo()
    {
        var decoder = new HpackDecoder(4096, 16_384);
        HpackTestBlocks.Decode(decoder, "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        Assert.Equal(1, decoder.DynamicTableCount);

        // 0 empties the table, then 4096 (31 + 0x61 + 0x1f << 7) restores the limit; both before the first field.
        Assert.Equal([(":method", "GET")], HpackTestBlocks.Decode(decoder, "20 3f e1 1f 82"));
        Assert.Equal(0, decoder.DynamicTableCount);
        Assert.Equal(0, decoder.DynamicTableSize);
        Assert.Equal(4096, decoder.DynamicTableMaxSize);
    }

    [Fact]
    public void Decode_IntegerWithFiveContinuationBytes_IsAccepted()
    {
        var decoder = new HpackDecoder(4096, 16_384);
        Assert.Empty(HpackTestBlocks.Decode(decoder, "3f 81 80 80 80 00")); // 31 + 1, with four redundant zero groups
        Assert.Equal(32, decoder.DynamicTableMaxSize);
    }

    [Fact]
    public void Decode_SmallerSizeUpdate_EvictsOldestEntries()
    {
        var decoder = new HpackDecoder(4096, 16_384);
        HpackTestBlocks.Decode(decoder, "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d");
        HpackTestBlocks.Decode(decoder, "8286 84be 5808 6e6f 2d63 6163 6865");
        HpackTestBlocks.Decode(decoder, "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65");
        Assert.Equal(164, decoder.DynamicTableSize);

        Assert.Empty(HpackTestBlocks.Decode(decoder, "3f 4f")); // 110 = 31 + 79
        Assert.Equal(110, decoder.DynamicTableMaxSize);
        Assert.Equal(107, decoder.DynamicTableSize);
        Assert.Equal([("custom-key", "custom-value"), ("cache-control", "no-cache")], HpackTestBlocks.Table(decoder));

        // The limit holds for later inserts: 107 + 54 > 110, so the oldest entry goes.
        Assert.Equal([("custom-key", "custom-valuf")], HpackTestBlocks.Decode(decoder, "7e 0c 6375 7374 6f6d 2d76 616c 7566"));
        Assert.Equal([("custom-key", "custom-valuf"), ("custom-key", "custom-value")], HpackTestBlocks.Table(decoder));
        Assert.Equal(108, decoder.DynamicTableSize);
    }

    [Fact]
    public void Decode_EntryLargerThanTheTable_EmptiesItAndIsStillDecoded()
    {
        var decoder = new HpackDecoder(64, 16_384);
        HpackTestBlocks.Decode(decoder, "40 01 61 01 62"); // a: b, 34 bytes
        Assert.Equal(1, decoder.DynamicTableCount);

        var value = new string('v', 40); // 1 + 40 + 32 > 64
        var block = new List<byte> { 0x40 };
        HpackTestBlocks.WriteRawString(block, "a");
        HpackTestBlocks.WriteRawString(block, value);
        Assert.Equal([("a", value)], HpackTestBlocks.Decode(decoder, block.ToArray()));
        Assert.Equal(0, decoder.DynamicTableCount);
        Assert.Equal(0, decoder.DynamicTableSize);
    }

    [Fact]
    public void Decode_NewEntryNamedAfterTheEntryItEvicts_KeepsTheName()
    {
        // RFC 7541 §4.4: the name of index 62 must survive that entry's eviction by the insert that uses it.
        var decoder = new HpackDecoder(80, 16_384);
        HpackTestBlocks.Decode(decoder, "40 04 6e616d65 0a " + Convert.ToHexString(Encoding.ASCII.GetBytes(new string('v', 10))));
        Assert.Equal(46, decoder.DynamicTableSize);

        var value = new string('w', 20);
        Assert.Equal([("name", value)], HpackTestBlocks.Decode(decoder, "7e 14 " + Convert.ToHexString(Encoding.ASCII.GetBytes(value))));
        Assert.Equal([("name", value)], HpackTestBlocks.Table(decoder));
        Assert.Equal(56, decoder.DynamicTableSize);
    }

    [Fact]
    public void Decode_HeaderListOverTheLimit_ThrowsAfterKeepingTheTableInStep()
    {
        var decoder = new HpackDecoder(4096, 100);
        var block = new List<byte> { 0x82 }; // :method GET, 42
        block.Add(0x40);
        HpackTestBlocks.WriteRawString(block, "a");
        HpackTestBlocks.WriteRawString(block, new string('x', 10)); // 43, total 85
        block.Add(0x40);
        HpackTestBlocks.WriteRawString(block, "b");
        HpackTestBlocks.WriteRawString(block, new string('y', 10)); // 43, total 128 > 100

        var collector = new HpackFieldCollector();
        Assert.Throws<HpackException>(() => decoder.Decode(block.ToArray(), ref collector));
        Assert.Equal([(":method", "GET"), ("a", "xxxxxxxxxx")], collector.Fields);

        // Both entries were indexed, so the next block's references agree with the peer's encoder.
        Assert.Equal([("b", "yyyyyyyyyy"), ("a", "xxxxxxxxxx")], HpackTestBlocks.Table(decoder));
        Assert.Equal([("b", "yyyyyyyyyy")], HpackTestBlocks.Decode(decoder, "be"));
    }

    [Fact]
    public void Decode_HeaderListAtTheLimit_IsAccepted()
    {
        var decoder = new HpackDecoder(4096, 43);
        var block = new List<byte> { 0x00 };
        HpackTestBlocks.WriteRawString(block, "a");
        HpackTestBlocks.WriteRawString(block, new string('x', 10)); // exactly 43
        Assert.Equal([("a", "xxxxxxxxxx")], HpackTestBlocks.Decode(decoder, block.ToArray()));
    }

    [Fact]
    public void Decode_HuffmanStringBeyondTheScratchLimit_IsOverTheLimit()
    {
        // 200 Huffman bytes of "a" (40 bits = 5 bytes per 8) decode to 320 bytes, more than both limits allow.
        var decoder = new HpackDecoder(64, 100);
        var block = new List<byte> { 0x40 };
        HpackTestBlocks.WriteRawString(block, "a");
        HpackTestBlocks.WriteInteger(block, 200, 7, 0x80);
        for (var i = 0; i < 40; i++)
        {
            block.AddRange(HpackTestBlocks.Hex("18 c6 31 8c 63"));
        }

        Assert.Throws<HpackException>(() => HpackTestBlocks.Decode(decoder, block.ToArray()));
        Assert.Equal(0, decoder.DynamicTableCount);
        Assert.Equal([(":status", "200")], HpackTestBlocks.Decode(decoder, "88"));
    }

    [Fact]
    public void Decode_LongRunOfInsertsEvictionsAndSizeUpdates_MatchesASimpleModel()
    {
        // Thousands of entries move through the table, so its buffer is compacted and grown many times.
        var random = new Random(7541);
        foreach (var maxTableSize in new[] { 256, 4096 })
        {
            var decoder = new HpackDecoder(maxTableSize, 1 << 20);
            var model = new List<(string Name, string Value)>();
            var limit = maxTableSize;
            for (var step = 0; step < 3000; step++)
            {
                var block = new List<byte>();
                if (random.Next(50) == 0)
                {
                    limit = random.Next(maxTableSize + 1);
                    HpackTestBlocks.WriteInteger(block, limit, 5, 0x20);
                    Evict(model, limit);
                }

                var name = "n" + random.Next(1000);
                var value = new string((char)('a' + random.Next(26)), random.Next(maxTableSize / 2));
                if (model.Count > 0 && random.Next(3) == 0)
                {
                    var index = random.Next(model.Count);
                    name = model[index].Name;
                    HpackTestBlocks.WriteInteger(block, HpackStaticTable.Count + 1 + index, 6, 0x40);
                }
                else
                {
                    block.Add(0x40);
                    HpackTestBlocks.WriteRawString(block, name);
                }

                HpackTestBlocks.WriteRawString(block, value);
                Assert.Equal([(name, value)], HpackTestBlocks.Decode(decoder, block.ToArray()));

                model.Insert(0, (name, value));
                Evict(model, limit);
                Assert.Equal(model.Sum(e => e.Name.Length + e.Value.Length + 32), decoder.DynamicTableSize);
                if (step % 50 == 0)
                {
                    Assert.Equal(model, HpackTestBlocks.Table(decoder));
                }
            }
        }

        static void Evict(List<(string Name, string Value)> model, int limit)
        {
            while (model.Sum(e => e.Name.Length + e.Value.Length + 32) > limit)
            {
                model.RemoveAt(model.Count - 1);
            }
        }
    }

    [Fact]
    public void Decode_SteadyState_AllocatesNothing()
    {
        var blocks = new[]
        {
            HpackTestBlocks.Hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
            HpackTestBlocks.Hex("8286 84be 5886 a8eb 1064 9cbf"),
            HpackTestBlocks.Hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
        };
        var decoder = new HpackDecoder(4096, 16_384);
        Assert.Equal(14, DecodeMany(decoder, blocks, 1));
        DecodeMany(decoder, blocks, 2000); // the table fills up and its buffers reach their working size

        var before = GC.GetAllocatedBytesForCurrentThread();
        var fields = DecodeMany(decoder, blocks, 2000);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, allocated);
        Assert.Equal(2000 * 14, fields);
    }

    // Compiled optimized at once, so on-stack replacement in the middle of the loop allocates nothing on this thread
    // (see XxHash64Tests.HashMany).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int DecodeMany(HpackDecoder decoder, byte[][] blocks, int rounds)
    {
        var sink = new HpackCountingSink();
        for (var round = 0; round < rounds; round++)
        {
            foreach (var block in blocks)
            {
                decoder.Decode(block, ref sink);
            }
        }

        return sink.Fields;
    }

    private static byte[] HuffmanRoundTrip(byte[] text)
    {
        var encoded = new List<byte>();
        ulong bits = 0;
        var count = 0;
        foreach (var symbol in text)
        {
            bits = (bits << HpackHuffman.CodeLengths[symbol]) | HpackHuffman.Codes[symbol];
            count += HpackHuffman.CodeLengths[symbol];
            while (count >= 8)
            {
                count -= 8;
                encoded.Add((byte)(bits >> count));
            }
        }

        if (count > 0)
        {
            encoded.Add((byte)((bits << (8 - count)) | (0xFFu >> count)));
        }

        var destination = new byte[text.Length];
        Assert.Equal(text.Length, HpackHuffman.Decode(encoded.ToArray(), destination));
        return destination;
    }
}

/// <summary>The encoder's exact bytes, and round trips through the decoder.</summary>
public sealed class HpackEncoderTests
{
    [Theory]
    [InlineData(200, "88")]
    [InlineData(204, "89")]
    [InlineData(206, "8A")]
    [InlineData(304, "8B")]
    [InlineData(400, "8C")]
    [InlineData(404, "8D")]
    [InlineData(500, "8E")]
    [InlineData(100, "0803313030")]
    [InlineData(302, "0803333032")]
    [InlineData(418, "0803343138")]
    [InlineData(503, "0803353033")]
    [InlineData(999, "0803393939")]
    public void WriteStatus_StaticOrLiteral_RoundTrips(int status, string hex)
    {
        var destination = new byte[16];
        var written = HpackEncoder.WriteStatus(status, destination);
        Assert.Equal(hex, Convert.ToHexString(destination, 0, written));
        Assert.Equal([(":status", status.ToString())], HpackTestBlocks.Decode(new HpackDecoder(4096, 16_384), destination[..written]));
        for (var length = 0; length < written; length++)
        {
            Assert.Equal(-1, HpackEncoder.WriteStatus(status, new byte[length]));
        }
    }

    [Theory]
    [InlineData(":method", "GET", "82")]
    [InlineData(":method", "POST", "83")]
    [InlineData(":path", "/", "84")]
    [InlineData(":path", "/index.html", "85")]
    [InlineData(":scheme", "http", "86")]
    [InlineData(":scheme", "https", "87")]
    [InlineData(":status", "200", "88")]
    [InlineData("accept-encoding", "gzip, deflate", "90")]
    [InlineData("Accept-Encoding", "gzip, deflate", "90")] // the name matches case-insensitively
    [InlineData("accept", "", "93")]
    [InlineData(":method", "PUT", "0203505554")] // name index 2, literal value
    [InlineData(":method", "get", "0203676574")] // values match exactly
    [InlineData(":authority", "a.test", "0106612E74657374")]
    [InlineData(":path", "/items/7", "04082F6974656D732F37")] // first :path entry is 4
    [InlineData(":scheme", "ftp", "0603667470")]
    [InlineData("user-agent", "x", "0F2B0178")] // index 58 = 15 + 43 takes two bytes
    [InlineData("Content-Type", "text/plain", "0F100A746578742F706C61696E")] // index 31
    [InlineData("X-Shard-Key", "K1", "000B782D73686172642D6B6579024B31")] // literal name, lowercased; value as is
    [InlineData("x-empty", "", "0007782D656D70747900")]
    [InlineData("", "", "000000")]
    public void WriteField_ExactBytes_RoundTrip(string name, string value, string hex)
    {
        var destination = new byte[64];
        var written = HpackEncoder.WriteField(Encoding.ASCII.GetBytes(name), Encoding.ASCII.GetBytes(value), destination);
        Assert.Equal(hex, Convert.ToHexString(destination, 0, written));
        Assert.InRange(written, 1, HpackEncoder.MaxFieldLength(name.Length, value.Length));
        Assert.Equal([(name.ToLowerInvariant(), value)], HpackTestBlocks.Decode(new HpackDecoder(4096, 16_384), destination[..written]));
        for (var length = 0; length < written; length++)
        {
            Assert.Equal(-1, HpackEncoder.WriteField(Encoding.ASCII.GetBytes(name), Encoding.ASCII.GetBytes(value), new byte[length]));
        }
    }

    [Fact]
    public void WriteField_MethodGet_IsOneIndexedByte()
    {
        Span<byte> destination = stackalloc byte[8];
        Assert.Equal(1, HpackEncoder.WriteField(":method"u8, "GET"u8, destination));
        Assert.Equal(0x82, destination[0]);
    }

    [Fact]
    public void WriteField_8KbValue_RoundTripsWithMultiByteLengths()
    {
        var value = new byte[8192];
        for (var i = 0; i < value.Length; i++)
        {
            value[i] = (byte)(0x20 + (i % 95));
        }

        var destination = new byte[HpackEncoder.MaxFieldLength(5, value.Length)];
        var written = HpackEncoder.WriteField("X-Big"u8, value, destination);
        Assert.Equal(1 + 1 + 5 + 3 + 8192, written); // 8192 = 127 + 8065: 7f, then 81 3f
        Assert.Equal(destination.Length, written);
        Assert.Equal("7F813F", Convert.ToHexString(destination, 7, 3));

        var cookie = new byte[HpackEncoder.MaxFieldLength(6, value.Length)];
        var cookieWritten = HpackEncoder.WriteField("Cookie"u8, value, cookie);
        Assert.Equal(2 + 3 + 8192, cookieWritten); // name index 32 = 0f 11

        var fields = HpackTestBlocks.Decode(new HpackDecoder(4096, 32_768), [.. destination[..written], .. cookie[..cookieWritten]]);
        Assert.Equal([("x-big", Encoding.Latin1.GetString(value)), ("cookie", Encoding.Latin1.GetString(value))], fields);
    }

    [Fact]
    public void WriteField_ManyFieldsInOneBlock_RoundTrip()
    {
        (string Name, string Value)[] fields =
        [
            (":method", "GET"), (":scheme", "https"), (":authority", "pod-1.test:8080"), (":path", "/"), ("Host", "a.test"),
            ("X-Forwarded-For", "10.0.0.1"), ("Accept", ""), ("ACCEPT-LANGUAGE", "en"), ("x-sharding-generation", "42"),
            ("Set-Cookie", "a=b; Path=/"), ("via", "2 sidecar"), ("TE", "trailers"),
        ];
        var block = new byte[fields.Sum(f => HpackEncoder.MaxFieldLength(f.Name.Length, f.Value.Length)) + HpackEncoder.MaxFieldLength(7, 3)];
        var length = HpackEncoder.WriteStatus(502, block);
        foreach (var (name, value) in fields)
        {
            var written = HpackEncoder.WriteField(Encoding.ASCII.GetBytes(name), Encoding.ASCII.GetBytes(value), block.AsSpan(length));
            Assert.True(written > 0);
            length += written;
        }

        var decoder = new HpackDecoder(4096, 16_384);
        Assert.Equal([(":status", "502"), .. fields.Select(f => (f.Name.ToLowerInvariant(), f.Value))], HpackTestBlocks.Decode(decoder, block[..length]));
        Assert.Equal(0, decoder.DynamicTableCount); // the encoder never indexes
    }

    [Theory]
    [InlineData(0, 0, 3)]
    [InlineData(5, 8192, 8202)]
    [InlineData(126, 0, 129)]
    [InlineData(127, 0, 131)]
    [InlineData(128, 127, 1 + 2 + 128 + 2 + 127)]
    public void MaxFieldLength_IsTheLiteralNameForm(int nameLength, int valueLength, int expected) =>
        Assert.Equal(expected, HpackEncoder.MaxFieldLength(nameLength, valueLength));
}

/// <summary>Interop with python3's hpack (Debian's python3-hpack), a separate implementation of RFC 7541.</summary>
public sealed class HpackPythonInteropTests
{
    private const string EncodeScript = """
        import json, sys
        from hpack import Encoder
        encoder = Encoder()
        for step in json.load(sys.stdin):
            for size in step["sizes"]:
                encoder.header_table_size = size
            headers = [(bytes.fromhex(n), bytes.fromhex(v), s) for n, v, s in step["headers"]]
            block = encoder.encode(headers, huffman=True)
            print(block.hex(), encoder.header_table._current_size)
        """;

    private const string DecodeScript = """
        import json, sys
        from hpack import Decoder
        decoder = Decoder(max_header_list_size=1 << 20)
        out = []
        for line in sys.stdin.read().split():
            out.append([[n.hex(), v.hex()] for n, v in decoder.decode(bytes.fromhex(line), raw=True)])
        print(json.dumps({"blocks": out, "table": decoder.header_table._current_size}))
        """;

    [RequiresPythonFact("python3-hpack", "hpack")]
    public async Task PythonEncoder_HuffmanBlocksWithDynamicTableAndSizeChanges_DecodeHere()
    {
        var request = new (string Name, string Value, bool Sensitive)[]
        {
            (":method", "GET", false), (":scheme", "https", false), (":path", "/items/7", false), (":authority", "a.test", false),
            ("x-shard-key", "k-1", false), ("user-agent", "sidecar/1.0", false), ("authorization", "Bearer secret", true),
        };
        var allBytes = Encoding.Latin1.GetString([.. Enumerable.Range(0, 256).Select(i => (byte)i)]);
        var steps = new (int[] Sizes, (string Name, string Value, bool Sensitive)[] Headers)[]
        {
            ([], request),
            ([], [.. request.Select(h => h.Name == ":path" ? (h.Name, "/items/8", false) : h)]),
            ([256], [(":method", "POST", false), ("content-type", "application/json", false), ("x-long", new string('q', 200), false), ("x-shard-key", "k-2", false)]),
            ([], [("x-long", new string('r', 200), false), ("x-shard-key", "k-2", false), ("X-Mixed-Case", "Value", false)]),
            ([0, 4096], [("x-binary", allBytes, false), ("cookie", "a=1", false), ("cookie", "b=2", false), ("x-empty", string.Empty, false)]),
            ([], request),
            ([], [("x-big", new string('z', 8192), false), ("x-binary", allBytes, false), (":status", "200", false)]),
        };

        var json = JsonSerializer.Serialize(steps.Select(s => new
        {
            sizes = s.Sizes,
            headers = s.Headers.Select(h => new object[] { Convert.ToHexString(Encoding.Latin1.GetBytes(h.Name)), Convert.ToHexString(Encoding.Latin1.GetBytes(h.Value)), h.Sensitive }),
        }));
        var result = await ProcessRunner.RunAsync(ExternalTool.Python, ["-c", EncodeScript], Encoding.UTF8.GetBytes(json), TimeSpan.FromSeconds(60));
        Assert.True(result.ExitCode == 0, result.StandardError);

        var lines = result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(steps.Length, lines.Length);
        var decoder = new HpackDecoder(4096, 65_536);
        for (var i = 0; i < steps.Length; i++)
        {
            var parts = lines[i].Split(' ');
            var fields = HpackTestBlocks.Decode(decoder, parts[0]);
            Assert.Equal(steps[i].Headers.Select(h => (h.Name, h.Value)), fields);
            Assert.Equal(int.Parse(parts[1]), decoder.DynamicTableSize); // python's encoder table and our decoder's agree
        }

        // The blocks really used what this test is about.
        Assert.StartsWith("20", lines[4], StringComparison.Ordinal); // size update to 0 ...
        Assert.StartsWith("203fe11f", lines[4], StringComparison.Ordinal); // ... then to 4096
        Assert.True(lines[1].Split(' ')[0].Length < lines[0].Split(' ')[0].Length / 2, "the second request reuses the dynamic table");
    }

    [RequiresPythonFact("python3-hpack", "hpack")]
    public async Task PythonDecoder_DecodesOurEncoder()
    {
        var big = new string('b', 8192);
        var blocks = new (string Name, string Value)[][]
        {
            [(":status", "200"), ("Content-Type", "text/plain"), ("Content-Length", "5"), ("X-Sharding-Owner", "pod-1")],
            [(":status", "503"), ("Retry-After", "1"), ("x-empty", string.Empty), ("Set-Cookie", "a=b; Path=/")],
            [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "pod-2:8080"), ("User-Agent", "Mixed/1.0")],
            [(":method", "POST"), (":scheme", "https"), (":path", "/upload?x=1"), ("X-Big", big), ("accept-encoding", "gzip, deflate")],
        };

        var hex = new StringBuilder();
        foreach (var block in blocks)
        {
            var buffer = new byte[block.Sum(f => HpackEncoder.MaxFieldLength(f.Name.Length, f.Value.Length))];
            var length = 0;
            foreach (var (name, value) in block)
            {
                var written = name == ":status"
                    ? HpackEncoder.WriteStatus(int.Parse(value), buffer.AsSpan(length))
                    : HpackEncoder.WriteField(Encoding.ASCII.GetBytes(name), Encoding.ASCII.GetBytes(value), buffer.AsSpan(length));
                Assert.True(written > 0);
                length += written;
            }

            hex.AppendLine(Convert.ToHexString(buffer, 0, length));
        }

        var result = await ProcessRunner.RunAsync(ExternalTool.Python, ["-c", DecodeScript], Encoding.ASCII.GetBytes(hex.ToString()), TimeSpan.FromSeconds(60));
        Assert.True(result.ExitCode == 0, result.StandardError);
        using var output = JsonDocument.Parse(result.StandardOutput);
        var decoded = output.RootElement.GetProperty("blocks").EnumerateArray()
            .Select(b => b.EnumerateArray().Select(f => (Hex(f[0]), Hex(f[1]))).ToArray())
            .ToArray();
        Assert.Equal(blocks.Length, decoded.Length);
        for (var i = 0; i < blocks.Length; i++)
        {
            Assert.Equal(blocks[i].Select(f => (f.Name.ToLowerInvariant(), f.Value)), decoded[i]);
        }

        Assert.Equal(0, output.RootElement.GetProperty("table").GetInt32()); // we never index

        static string Hex(JsonElement element) => Encoding.Latin1.GetString(Convert.FromHexString(element.GetString()!));
    }
}

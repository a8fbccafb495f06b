using System.Globalization;
using System.Text;
using System.Text.Json;
using Sharding.Hashing;

namespace Sharding.Cli.Commands;

/// <summary><c>shardctl hash</c>, <c>table</c>, <c>owner</c> and <c>compare</c>: offline views of the hashing core.</summary>
internal static class HashingCommands
{
    /// <summary><c>hash --key K [--seed S]</c>: xxHash64 of the key's UTF-8 bytes as 16 lower-case hex digits.</summary>
    public static int Hash(CommandLine line, TextWriter stdout)
    {
        var key = line.Single("key") ?? throw new UsageException("option '--key' is required");
        var seedText = line.Single("seed");
        ulong seed = 0;
        if (seedText is not null && !ulong.TryParse(seedText, NumberStyles.None, CultureInfo.InvariantCulture, out seed))
        {
            throw new UsageException($"option '--seed' must be an unsigned 64-bit integer (got '{seedText}')");
        }

        stdout.WriteLine(XxHash64.ToHex(XxHash64.HashUtf8(key, seed)));
        return 0;
    }

    /// <summary><c>table --members ... [--weights] [--size] [--algorithm] [--format text|json]</c>.</summary>
    public static int Table(CommandLine line, TextWriter stdout)
    {
        var algorithm = TableArguments.Algorithm(line);
        var members = TableArguments.Members(line, "members", line.Single("weights"));
        var options = TableArguments.Options(line);
        var format = line.Single("format") ?? "text";
        if (format is not ("text" or "json"))
        {
            throw new UsageException($"unknown format '{format}': use text or json");
        }

        var table = TableArguments.Build(algorithm, members, options);
        if (format == "json")
        {
            WriteJson(table, stdout);
        }
        else
        {
            WriteText(table, stdout);
        }

        return 0;
    }

    /// <summary><c>owner --members ... --key K [--key K2 ...]</c>: one <c>key&lt;TAB&gt;owner</c> line per key.</summary>
    public static int Owner(CommandLine line, TextWriter stdout)
    {
        var keys = line.All("key");
        if (keys.Count == 0)
        {
            throw new UsageException("option '--key' is required (repeat it for several keys)");
        }

        var table = TableArguments.Build(TableArguments.Algorithm(line), TableArguments.Members(line, "members", line.Single("weights")), TableArguments.Options(line));
        var output = new StringBuilder();
        foreach (var key in keys)
        {
            output.Append(key).Append('\t').Append(table.OwnerOf(key) ?? "<none>").Append('\n');
        }

        stdout.Write(output.ToString());
        return 0;
    }

    /// <summary>
    /// <c>compare --from a,b,c --to a,b,c,d [--keys N] [--algorithm A]</c>: the share of keys that change owner against the
    /// ideal, and max/mean keys per member before and after. Without <c>--algorithm</c>, one row per algorithm.
    /// </summary>
    public static int Compare(CommandLine line, TextWriter stdout)
    {
        var weights = line.Single("weights");
        var from = TableArguments.Members(line, "from", weights);
        var to = TableArguments.Members(line, "to", weights);
        var keyCount = (int)line.Int64("keys", 100_000, 1, 10_000_000);
        var options = TableArguments.Options(line);
        ShardAlgorithm[] algorithms = line.Single("algorithm") is null
            ? [ShardAlgorithm.Maglev, ShardAlgorithm.RingHash, ShardAlgorithm.Modulo]
            : [TableArguments.Algorithm(line)];

        // Build every table before printing: a bad member list (e.g. all weights 0) is a usage error with nothing on stdout.
        var tables = algorithms.Select(a => (Algorithm: a, Before: TableArguments.Build(a, from, options), After: TableArguments.Build(a, to, options))).ToList();
        var ideal = OwnershipComparison.IdealMovedShare(from, to);
        stdout.WriteLine($"{from.Count} -> {to.Count} members, {keyCount} keys; ideal share moved {ideal:P2}");
        stdout.WriteLine($"{"algorithm",-10} {"moved",8} {"ideal",8} {"excess",8} {"balance before",15} {"balance after",14}");
        foreach (var (algorithm, before, after) in tables)
        {
            var result = OwnershipComparison.Run(before, after, keyCount);
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{algorithm.ToName(),-10} {result.MovedShare,8:P2} {ideal,8:P2} {result.MovedShare - ideal,8:P2} {result.BalanceBefore,15:F3} {result.BalanceAfter,14:F3}"));
        }

        stdout.WriteLine("balance = max keys per member / mean keys per member (1.000 is perfect)");
        return 0;
    }

    private static void WriteJson(ShardTable table, TextWriter stdout)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("algorithm", table.Algorithm.ToName());
            switch (table)
            {
                case MaglevTable maglev:
                    json.WriteNumber("size", maglev.Size);
                    WriteMembers(json, table);
                    json.WriteStartArray("table");
                    foreach (var entry in maglev.Entries)
                    {
                        json.WriteStringValue(table.Members[entry].Name);
                    }

                    json.WriteEndArray();
                    break;
                case RingHashTable ring:
                    json.WriteNumber("size", ring.Count);
                    WriteMembers(json, table);
                    json.WriteStartArray("ring");
                    for (var i = 0; i < ring.Count; i++)
                    {
                        json.WriteStartObject();
                        json.WriteString("hash", XxHash64.ToHex(ring.PointHashes[i]));
                        json.WriteString("member", table.Members[ring.PointOwners[i]].Name);
                        json.WriteEndObject();
                    }

                    json.WriteEndArray();
                    break;
                default:
                    json.WriteNumber("size", table.Members.Length);
                    WriteMembers(json, table);
                    json.WriteStartArray("table");
                    for (var i = 0; i < table.Members.Length; i++)
                    {
                        if (table.Members[i].Weight > 0)
                        {
                            json.WriteStringValue(table.Members[i].Name);
                        }
                    }

                    json.WriteEndArray();
                    break;
            }

            json.WriteEndObject();
        }

        stdout.WriteLine(Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length));
    }

    private static void WriteMembers(Utf8JsonWriter json, ShardTable table)
    {
        json.WriteStartArray("members");
        foreach (var member in table.Members)
        {
            json.WriteStringValue(member.Name);
        }

        json.WriteEndArray();
    }

    private static void WriteText(ShardTable table, TextWriter stdout)
    {
        var output = new StringBuilder();
        switch (table)
        {
            case MaglevTable maglev:
                output.Append(CultureInfo.InvariantCulture, $"# maglev, size {maglev.Size}, {table.Members.Length} members\n");
                for (var m = 0; m < table.Members.Length; m++)
                {
                    output.Append(CultureInfo.InvariantCulture, $"# {table.Members[m].Name}: weight {table.Members[m].Weight}, {maglev.EntryCount(m)} entries\n");
                }

                for (var i = 0; i < maglev.Size; i++)
                {
                    output.Append(i).Append('\t').Append(table.Members[maglev.Entries[i]].Name).Append('\n');
                }

                break;
            case RingHashTable ring:
                output.Append(CultureInfo.InvariantCulture, $"# ring, {ring.Count} points, {table.Members.Length} members\n");
                for (var i = 0; i < ring.Count; i++)
                {
                    output.Append(XxHash64.ToHex(ring.PointHashes[i])).Append('\t').Append(table.Members[ring.PointOwners[i]].Name).Append('\n');
                }

                break;
            default:
                output.Append(CultureInfo.InvariantCulture, $"# modulo, {table.Members.Length} members\n");
                for (var i = 0; i < table.Members.Length; i++)
                {
                    output.Append(i).Append('\t').Append(table.Members[i].Name).Append('\n');
                }

                break;
        }

        stdout.Write(output.ToString());
    }
}

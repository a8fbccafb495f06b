using System.Globalization;
using System.Text.Json;
using Sharding.Hashing;
using static Sharding.Cli.CliRunner;

namespace Sharding.Cli.Commands;

public sealed class HashingCommandsTests
{
    [Theory]
    [InlineData("hello", null, "26c7827d889f6da3")]
    [InlineData("", null, "ef46db3751d8e999")]
    [InlineData("hello", "0", "26c7827d889f6da3")]
    [InlineData("hello", "1", "23dd71cb04d0a1b2")]
    public void Hash_Key_PrintsXxHash64As16HexDigits(string key, string? seed, string expected)
    {
        var (exit, stdout, stderr) = seed is null ? Run("hash", "--key", key) : Run("hash", "--key", key, "--seed", seed);
        Assert.Equal(0, exit);
        Assert.Equal(expected + "\n", stdout);
        Assert.Equal(string.Empty, stderr);
    }

    [Fact]
    public void Hash_InlineValueSyntax_Accepted() => Assert.Equal("26c7827d889f6da3\n", Run("hash", "--key=hello").Out);

    [Fact]
    public void Table_MaglevJson_HasDocumentedShapeAndMatchesMaglevTable()
    {
        var (exit, stdout, stderr) = Run("table", "--members", "c,a,b", "--size", "7", "--format", "json");
        Assert.Equal(0, exit);
        Assert.Equal(string.Empty, stderr);
        using var json = JsonDocument.Parse(stdout);
        var root = json.RootElement;
        Assert.Equal(["algorithm", "size", "members", "table"], root.EnumerateObject().Select(p => p.Name));
        Assert.Equal("maglev", root.GetProperty("algorithm").GetString());
        Assert.Equal(7, root.GetProperty("size").GetInt32());
        Assert.Equal(["a", "b", "c"], root.GetProperty("members").EnumerateArray().Select(e => e.GetString()));

        var table = new MaglevTable([new("a"), new("b"), new("c")], 7);
        var expected = table.Entries.ToArray().Select(i => table.Members[i].Name);
        Assert.Equal(expected, root.GetProperty("table").EnumerateArray().Select(e => e.GetString()));
    }

    [Fact]
    public void Table_EnvoyBasicHostsJson_IsEnvoysTable()
    {
        var (_, stdout, _) = Run("table", "--members", "127.0.0.1:90,127.0.0.1:91,127.0.0.1:92,127.0.0.1:93,127.0.0.1:94,127.0.0.1:95", "--size", "7", "--format", "json");
        using var json = JsonDocument.Parse(stdout);
        Assert.Equal(
            new[] { 92, 94, 90, 91, 95, 90, 93 }.Select(p => $"127.0.0.1:{p}"),
            json.RootElement.GetProperty("table").EnumerateArray().Select(e => e.GetString()));
    }

    [Fact]
    public void Table_WeightedJson_FollowsWeights()
    {
        var (exit, stdout, _) = Run("table", "--members", "127.0.0.1:90,127.0.0.1:91", "--weights", "127.0.0.1:91=2", "--size", "17", "--format", "json");
        Assert.Equal(0, exit);
        using var json = JsonDocument.Parse(stdout);
        Assert.Equal(
            new[] { 91, 90, 90, 91, 90, 91, 91, 90, 91, 91, 91, 91, 91, 90, 91, 90, 91 }.Select(p => $"127.0.0.1:{p}"),
            json.RootElement.GetProperty("table").EnumerateArray().Select(e => e.GetString()));
    }

    [Fact]
    public void Table_RingJson_ListsPointsInRingOrderAsEnvoy()
    {
        var (exit, stdout, _) = Run("table", "--members", "90,91,92,93,94,95", "--algorithm", "ring", "--min-ring", "12", "--format", "json");
        Assert.Equal(0, exit);
        using var json = JsonDocument.Parse(stdout);
        var root = json.RootElement;
        Assert.Equal(["algorithm", "size", "members", "ring"], root.EnumerateObject().Select(p => p.Name));
        Assert.Equal("ring", root.GetProperty("algorithm").GetString());
        Assert.Equal(12, root.GetProperty("size").GetInt32());
        var points = root.GetProperty("ring").EnumerateArray().ToList();
        Assert.Equal(12, points.Count);
        Assert.All(points, p => Assert.Equal(["hash", "member"], p.EnumerateObject().Select(q => q.Name)));
        Assert.All(points, p => Assert.Matches("^[0-9a-f]{16}$", p.GetProperty("hash").GetString()));

        // Envoy's BasicWithHostname ring (ring_hash_lb_test.cc).
        Assert.Equal(XxHash64.ToHex(1975508444536362413), points[0].GetProperty("hash").GetString());
        Assert.Equal("95", points[0].GetProperty("member").GetString());
        Assert.Equal(XxHash64.ToHex(15364271037087512980), points[11].GetProperty("hash").GetString());
        Assert.Equal("94", points[11].GetProperty("member").GetString());
        var hashes = points.Select(p => ulong.Parse(p.GetProperty("hash").GetString()!, NumberStyles.HexNumber, CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(hashes.Order(), hashes);
    }

    [Fact]
    public void Table_ModuloJson_ListsActiveMembers()
    {
        var (exit, stdout, _) = Run("table", "--members", "b,a,c", "--weights", "c=0", "--algorithm", "modulo", "--format", "json");
        Assert.Equal(0, exit);
        using var json = JsonDocument.Parse(stdout);
        Assert.Equal("modulo", json.RootElement.GetProperty("algorithm").GetString());
        Assert.Equal(["a", "b", "c"], json.RootElement.GetProperty("members").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(["a", "b"], json.RootElement.GetProperty("table").EnumerateArray().Select(e => e.GetString()));
    }

    [Fact]
    public void Table_NonAsciiMemberJson_IsValidJsonWithTheName()
    {
        var (exit, stdout, _) = Run("table", "--members", "pod-é,pod-\"q\"", "--size", "7", "--format", "json");
        Assert.Equal(0, exit);
        using var json = JsonDocument.Parse(stdout);
        Assert.Contains("pod-é", json.RootElement.GetProperty("members").EnumerateArray().Select(e => e.GetString()));
        Assert.Contains("pod-\"q\"", json.RootElement.GetProperty("members").EnumerateArray().Select(e => e.GetString()));
    }

    [Fact]
    public void Table_MaglevText_HeaderCountsAndOneLinePerSlot()
    {
        var (exit, stdout, _) = Run("table", "--members", "a,b,c", "--weights", "a=2", "--size", "7");
        Assert.Equal(0, exit);
        var lines = Lines(stdout);
        var table = new MaglevTable([new("a", 2), new("b"), new("c")], 7);
        Assert.Equal("# maglev, size 7, 3 members", lines[0]);
        Assert.Equal($"# a: weight 2, {table.EntryCount(0)} entries", lines[1]);
        Assert.Equal(1 + 3 + 7, lines.Length);
        for (var i = 0; i < 7; i++)
        {
            Assert.Equal($"{i}\t{table.Members[table.Entries[i]].Name}", lines[4 + i]);
        }
    }

    [Fact]
    public void Table_RingText_OnePointPerLine()
    {
        var (exit, stdout, _) = Run("table", "--members", "90,91,92,93,94,95", "--algorithm", "ring", "--min-ring", "12");
        Assert.Equal(0, exit);
        var lines = Lines(stdout);
        Assert.Equal("# ring, 12 points, 6 members", lines[0]);
        Assert.Equal($"{XxHash64.ToHex(1975508444536362413)}\t95", lines[1]);
        Assert.Equal(13, lines.Length);
    }

    [Fact]
    public void Table_ModuloText_ListsMembers()
    {
        var (exit, stdout, _) = Run("table", "--members", "b,a", "--algorithm", "modulo");
        Assert.Equal(0, exit);
        Assert.Equal("# modulo, 2 members\n0\ta\n1\tb\n", stdout);
    }

    [Fact]
    public void Owner_Keys_OneTabSeparatedLinePerKeyAgreeingWithMaglevTable()
    {
        string[] keys = ["user-1", "user-2", "doc/42", "ключ", "", "a b"];
        var args = new List<string> { "owner", "--members", "sharded-svc-0,sharded-svc-1,sharded-svc-2" };
        foreach (var key in keys)
        {
            args.AddRange(["--key", key]);
        }

        var (exit, stdout, stderr) = Run([.. args]);
        Assert.Equal(0, exit);
        Assert.Equal(string.Empty, stderr);
        var table = new MaglevTable([new("sharded-svc-0"), new("sharded-svc-1"), new("sharded-svc-2")]);
        Assert.Equal(string.Concat(keys.Select(k => $"{k}\t{table.OwnerOf(k)}\n")), stdout);
    }

    [Theory]
    [InlineData("ring")]
    [InlineData("modulo")]
    [InlineData("maglev")]
    public void Owner_WithAlgorithmAndWeights_AgreesWithShardTable(string algorithm)
    {
        var (exit, stdout, _) = Run("owner", "--members", "a,b,c", "--weights", "a=3,b=1", "--algorithm", algorithm, "--size", "251", "--key", "k1", "--key", "k2", "--key", "k3");
        Assert.Equal(0, exit);
        Assert.True(ShardAlgorithmNames.TryParse(algorithm, out var parsed));
        var table = ShardTable.Create(parsed, [new("a", 3), new("b", 1), new("c", 1)], new ShardTableOptions { MaglevTableSize = 251 });
        Assert.Equal($"k1\t{table.OwnerOf("k1")}\nk2\t{table.OwnerOf("k2")}\nk3\t{table.OwnerOf("k3")}\n", stdout);
    }

    [Fact]
    public void Compare_AllAlgorithms_PrintsMovedIdealAndBalancePerAlgorithm()
    {
        var (exit, stdout, stderr) = Run("compare", "--from", "a,b,c", "--to", "a,b,c,d", "--keys", "20000");
        Assert.Equal(0, exit);
        Assert.Equal(string.Empty, stderr);
        var lines = Lines(stdout);
        Assert.Equal("3 -> 4 members, 20000 keys; ideal share moved 25.00 %", lines[0]);
        Assert.StartsWith("algorithm", lines[1], StringComparison.Ordinal);
        Assert.Equal(["maglev", "ring", "modulo"], lines[2..5].Select(l => l.Split(' ', 2)[0]));
        Assert.StartsWith("balance = ", lines[5], StringComparison.Ordinal);

        var maglev = Row(lines[2]);
        var modulo = Row(lines[4]);
        var expected = OwnershipComparison.Run(
            new MaglevTable([new("a"), new("b"), new("c")]), new MaglevTable([new("a"), new("b"), new("c"), new("d")]), 20000);
        Assert.Equal(Math.Round(expected.MovedShare * 100, 2), maglev.Moved, 2);
        Assert.Equal(25.00, maglev.Ideal, 2);
        Assert.InRange(maglev.Moved, 24.0, 27.0);
        Assert.InRange(modulo.Moved, 60.0, 100.0);
        Assert.InRange(maglev.BalanceBefore, 1.0, 1.05);
    }

    [Fact]
    public void Compare_OneAlgorithm_PrintsOneRow()
    {
        var (exit, stdout, _) = Run("compare", "--from", "a,b", "--to", "a", "--keys", "1000", "--algorithm", "modulo");
        Assert.Equal(0, exit);
        var lines = Lines(stdout);
        Assert.Equal(4, lines.Length);
        Assert.StartsWith("modulo", lines[2], StringComparison.Ordinal);
        Assert.Equal(1.0, Row(lines[2]).BalanceAfter, 3);
    }

    [Fact]
    public void OwnershipComparison_IdealMovedShare_WeightedMembers()
    {
        Assert.Equal(0.25, OwnershipComparison.IdealMovedShare([new("a"), new("b"), new("c")], [new("a"), new("b"), new("c"), new("d")]), 6);
        Assert.Equal(1.0 / 3, OwnershipComparison.IdealMovedShare([new("a"), new("b"), new("c")], [new("a"), new("b")]), 6);
        Assert.Equal(0.0, OwnershipComparison.IdealMovedShare([new("a", 2), new("b")], [new("b"), new("a", 2)]), 6);
        Assert.Equal(1.0, OwnershipComparison.IdealMovedShare([new("a")], [new("b")]), 6);
    }

    private static (double Moved, double Ideal, double BalanceBefore, double BalanceAfter) Row(string line)
    {
        // "maglev       24.93 %  25.00 %  -0.07 %           1.001          1.002"
        var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        double P(int i) => double.Parse(parts[i], CultureInfo.InvariantCulture);
        return (P(1), P(3), P(7), P(8));
    }
}

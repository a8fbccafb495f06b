using System.Text.Json;
using Sharding.Hashing;
using Sharding.Mapping;

namespace Sharding.Cli.ControlPlane;

/// <summary><c>shardctl lookup</c>, <c>map</c> and <c>watch</c> against a real control-plane process on loopback.</summary>
public sealed class ControlPlaneCommandsTests
{
    private static ShardMap Expected(int members, int tableSize = 251) => ShardMap.Create(
        "svc", 1, Enumerable.Range(0, members).Select(i => new ShardMember($"svc-{i}", $"127.0.0.1:{21000 + i}")), ShardAlgorithm.Maglev,
        new ShardTableOptions { MaglevTableSize = tableSize });

    [Fact]
    public async Task Lookup_KnownService_PrintsOwnerJsonAgreeingWithLocalTable()
    {
        await using var controlPlane = await ControlPlaneProcess.StartAsync(ControlPlaneProcess.Yaml(3));
        var expected = Expected(3).OwnerOf("account-42".AsSpan())!;

        var (exit, stdout, stderr) = await ShardCtlProcess.RunAsync(
            "lookup", "--control-plane", controlPlane.HttpUrl.ToString(), "--service", "svc", "--key", "account-42");

        Assert.Equal(0, exit);
        Assert.Equal(string.Empty, stderr);
        using var json = JsonDocument.Parse(stdout);
        Assert.Equal("svc", json.RootElement.GetProperty("service").GetString());
        Assert.Equal("account-42", json.RootElement.GetProperty("key").GetString());
        Assert.Equal(expected.Name, json.RootElement.GetProperty("owner").GetString());
        Assert.Equal(expected.Address, json.RootElement.GetProperty("address").GetString());
        Assert.True(json.RootElement.GetProperty("generation").GetInt64() > 0);
    }

    [Fact]
    public async Task Map_KnownService_PrintsMembersAndTheChecksumOfTheLocalTable()
    {
        await using var controlPlane = await ControlPlaneProcess.StartAsync(ControlPlaneProcess.Yaml(3));
        var expected = Expected(3);

        var (exit, stdout, stderr) = await ShardCtlProcess.RunAsync("map", "--control-plane", controlPlane.HttpUrl.ToString(), "--service", "svc");

        Assert.Equal(0, exit);
        Assert.Equal(string.Empty, stderr);
        using var json = JsonDocument.Parse(stdout);
        var root = json.RootElement;
        Assert.Equal("svc", root.GetProperty("service").GetString());
        Assert.Equal("maglev", root.GetProperty("algorithm").GetString());
        Assert.Equal(251, root.GetProperty("tableSize").GetInt32());
        Assert.Equal(XxHash64.ToHex(expected.Checksum), root.GetProperty("checksum").GetString());
        Assert.Equal(["svc-0", "svc-1", "svc-2"], root.GetProperty("members").EnumerateArray().Select(m => m.GetProperty("name").GetString()!).Order(StringComparer.Ordinal));
        Assert.Equal(251, root.GetProperty("members").EnumerateArray().Sum(m => m.GetProperty("entries").GetInt32()));
        Assert.True(!root.TryGetProperty("table", out var table) || table.ValueKind == JsonValueKind.Null, "map asks for the summary without the table");
    }

    [Theory]
    [InlineData("lookup")]
    [InlineData("map")]
    public async Task LookupAndMap_UnknownService_ExitOneWith404NamingTheKnownServices(string command)
    {
        await using var controlPlane = await ControlPlaneProcess.StartAsync(ControlPlaneProcess.Yaml(2));
        string[] args = command == "lookup"
            ? ["lookup", "--control-plane", controlPlane.HttpUrl.ToString(), "--service", "nope", "--key", "k"]
            : ["map", "--control-plane", controlPlane.HttpUrl.ToString(), "--service", "nope"];

        var (exit, stdout, stderr) = await ShardCtlProcess.RunAsync(args);

        Assert.Equal(1, exit);
        Assert.Equal(string.Empty, stdout);
        Assert.Contains("404", stderr, StringComparison.Ordinal);
        Assert.Contains("unknown service 'nope'; known services: svc", stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("lookup")]
    [InlineData("map")]
    public async Task LookupAndMap_UnreachableControlPlane_ExitOneSayingCannotReach(string command)
    {
        var url = ControlPlaneProcess.UnusedUrl();
        string[] args = command == "lookup"
            ? ["lookup", "--control-plane", url.ToString(), "--service", "svc", "--key", "k"]
            : ["map", "--control-plane", url.ToString(), "--service", "svc"];

        var (exit, stdout, stderr) = await ShardCtlProcess.RunAsync(args);

        Assert.Equal(1, exit);
        Assert.Equal(string.Empty, stdout);
        Assert.Contains($"cannot reach {url.GetLeftPart(UriPartial.Authority)}", stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("lookup")]
    [InlineData("map")]
    public async Task LookupAndMap_OkAnswerThatIsNotJson_ExitOneSayingSo(string command)
    {
        // Something else listens at the URL (a web page, a proxy's landing page): the JSON parse threw, shardctl crashed (134).
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        var url = new Uri($"http://127.0.0.1:{((System.Net.IPEndPoint)listener.LocalEndpoint).Port}");
        var serving = Task.Run(async () =>
        {
            using var client = await listener.AcceptTcpClientAsync();
            var stream = client.GetStream();
            var buffer = new byte[4096];
            var received = string.Empty;
            while (!received.Contains("\r\n\r\n", StringComparison.Ordinal))
            {
                var n = await stream.ReadAsync(buffer);
                if (n == 0)
                {
                    return;
                }

                received += System.Text.Encoding.ASCII.GetString(buffer, 0, n);
            }

            const string body = "<html>hello</html>";
            await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes(
                $"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n{body}"));
        });
        string[] args = command == "lookup"
            ? ["lookup", "--control-plane", url.ToString(), "--service", "svc", "--key", "k"]
            : ["map", "--control-plane", url.ToString(), "--service", "svc"];

        var (exit, stdout, stderr) = await ShardCtlProcess.RunAsync(args);
        await serving;

        Assert.Equal(1, exit);
        Assert.Equal(string.Empty, stdout);
        Assert.Contains("not JSON", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("Unhandled exception", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Watch_MembershipEdited_PrintsSnapshotThenDeltaAndExitsAfterCount()
    {
        await using var controlPlane = await ControlPlaneProcess.StartAsync(ControlPlaneProcess.Yaml(3));
        using var watch = ShardCtlProcess.Start("watch", "--control-plane", controlPlane.GrpcUrl.ToString(), "--service", "svc", "--count", "2", "--timeout", "90s");
        await watch.FirstLine.WaitAsync(TimeSpan.FromSeconds(90));

        controlPlane.WriteMembership(ControlPlaneProcess.Yaml(4));
        var (exit, stdout, stderr) = await watch.WaitForExitAsync();

        Assert.Equal(0, exit);
        Assert.Equal(string.Empty, stderr);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        var first = Fields(lines[0]);
        var second = Fields(lines[1]);
        Assert.Equal("snapshot", first["kind"]);
        Assert.Equal("3", first["members"]);
        Assert.Equal("maglev", first["algorithm"]);
        Assert.Equal(XxHash64.ToHex(Expected(3).Checksum), first["checksum"]);
        Assert.Equal("delta", second["kind"]);
        Assert.Equal("4", second["members"]);
        Assert.Equal(XxHash64.ToHex(Expected(4).Checksum), second["checksum"]);
        Assert.Equal(long.Parse(first["generation"], System.Globalization.CultureInfo.InvariantCulture) + 1, long.Parse(second["generation"], System.Globalization.CultureInfo.InvariantCulture));
        Assert.True(int.Parse(second["changed_entries"], System.Globalization.CultureInfo.InvariantCulture) > 0);
    }

    [Fact]
    public async Task Watch_UnknownService_ExitOneWithNotFoundAsLastError()
    {
        await using var controlPlane = await ControlPlaneProcess.StartAsync(ControlPlaneProcess.Yaml(2));

        var (exit, stdout, stderr) = await ShardCtlProcess.RunAsync("watch", "--control-plane", controlPlane.GrpcUrl.ToString(), "--service", "nope", "--timeout", "3s");

        Assert.Equal(1, exit);
        Assert.Equal(string.Empty, stdout);
        Assert.Contains("shardctl watch: no map within 3 s", stderr, StringComparison.Ordinal);
        Assert.Contains("unknown service 'nope'", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Watch_UnreachableControlPlane_ExitOneWithTheConnectionError()
    {
        var url = ControlPlaneProcess.UnusedUrl();

        var (exit, stdout, stderr) = await ShardCtlProcess.RunAsync("watch", "--control-plane", url.ToString(), "--service", "svc", "--timeout", "3s");

        Assert.Equal(1, exit);
        Assert.Equal(string.Empty, stdout);
        Assert.Contains("shardctl watch: no map within 3 s", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("last error: none", stderr, StringComparison.Ordinal);
    }

    private static Dictionary<string, string> Fields(string line) =>
        line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(f => f.Split('=', 2)).ToDictionary(p => p[0], p => p[1], StringComparer.Ordinal);
}

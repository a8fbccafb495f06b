using System.Text;
using Sharding.Hashing;
using Sharding.Testing;
using static Sharding.Cli.CliRunner;

namespace Sharding.Cli;

public sealed class ShardCtlTests
{
    public static TheoryData<string[], string> BadArguments() => new()
    {
        { ["table"], "--members" },
        { ["table", "--members", ""], "at least one member" },
        { ["table", "--members", " , "], "empty member name" },
        { ["table", "--members", "a,b,a"], "listed twice" },
        { ["table", "--members", "a,b", "--size", "8"], "not prime" },
        { ["table", "--members", "a,b", "--size", "1"], "--size" },
        { ["table", "--members", "a,b", "--size", "seven"], "--size" },
        { ["table", "--members", "a,b", "--size", "16777259"], "--size" },
        { ["table", "--members", "a,b", "--algorithm", "rendezvous"], "unknown algorithm 'rendezvous'" },
        { ["table", "--members", "a,b", "--weights", "a=x"], "malformed weight 'a=x'" },
        { ["table", "--members", "a,b", "--weights", "a"], "malformed weight 'a'" },
        { ["table", "--members", "a,b", "--weights", "=2"], "malformed weight '=2'" },
        { ["table", "--members", "a,b", "--weights", "a=-1"], "malformed weight 'a=-1'" },
        { ["table", "--members", "a,b", "--weights", "a=99999999999"], "malformed weight" },
        { ["table", "--members", "a,b", "--weights", "c=2"], "'c', which is not in --members" },
        { ["table", "--members", "a,b", "--weights", "a=0,b=0"], "weight 0" },
        { ["table", "--members", "a,b", "--weights", "a=4294967295,b=1"], "exceeds" },
        { ["table", "--members", "a,b", "--format", "yaml"], "unknown format 'yaml'" },
        { ["table", "--members", "a,b", "--bogus", "1"], "unknown option '--bogus'" },
        { ["table", "--members"], "needs a value" },
        { ["table", "--members", "a", "--members", "b"], "give it once" },
        { ["table", "--members", "a,b", "stray"], "unexpected argument 'stray'" },
        { ["table", "--members", "a,b", "--algorithm", "ring", "--min-ring", "2048", "--max-ring", "1024"], "--min-ring" },
        { ["table", "--members", "a,b", "--algorithm", "ring", "--min-ring", "0"], "--min-ring" },
        { ["owner", "--members", "a,b"], "--key" },
        { ["owner", "--key", "k"], "--members" },
        { ["owner", "--members", "a,b", "--key", "k", "--size", "10"], "not prime" },
        { ["hash"], "--key" },
        { ["hash", "--key", "a", "--key", "b"], "give it once" },
        { ["hash", "--key", "a", "--seed", "-1"], "--seed" },
        { ["hash", "--key", "a", "--seed", "18446744073709551616"], "--seed" },
        { ["compare", "--to", "a,b"], "--from" },
        { ["compare", "--from", "a,b"], "--to" },
        { ["compare", "--from", "a,b", "--to", "a,b,c", "--keys", "0"], "--keys" },
        { ["compare", "--from", "a,b", "--to", "a,b,c", "--algorithm", "nope"], "unknown algorithm" },
        { ["compare", "--from", "a,b", "--to", "a,b,c", "--weights", "a=0,b=0"], "weight 0" },
        { ["frobnicate"], "unknown command 'frobnicate'" },

        // These threw (exit 134 with a stack trace) instead of a usage line.
        { ["watch", "--control-plane", "localhost:15001", "--service", "s"], "--control-plane" },
        { ["watch", "--control-plane", "ftp://127.0.0.1:15001", "--service", "s"], "--control-plane" },
        { ["watch", "--control-plane", "http://127.0.0.1:1", "--service", "s", "--timeout", "5000000"], "--timeout" },
        { ["watch", "--control-plane", "http://127.0.0.1:1", "--service", "s", "--timeout", "1e300"], "--timeout" },
        { ["watch", "--control-plane", "http://127.0.0.1:1", "--service", "s", "--timeout", "NaN"], "--timeout" },
        { ["demo", "--duration", "1e300"], "--duration" },
    };

    [Theory]
    [MemberData(nameof(BadArguments))]
    public void Run_BadArguments_Exit2WithOneStderrLine(string[] args, string expected)
    {
        var (exit, stdout, stderr) = Run(args);
        Assert.Equal(ShardCtl.ExitUsage, exit);
        Assert.Equal(string.Empty, stdout);
        Assert.EndsWith("\n", stderr, StringComparison.Ordinal);
        Assert.Single(Lines(stderr));
        Assert.Contains(expected, stderr, StringComparison.Ordinal);
        Assert.StartsWith("shardctl", stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("(Parameter", stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Run_NoArguments_PrintsUsageToStderrAndExits2()
    {
        var (exit, stdout, stderr) = Run();
        Assert.Equal(2, exit);
        Assert.Equal(string.Empty, stdout);
        Assert.Contains("usage: shardctl", stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--help")]
    [InlineData("-h")]
    [InlineData("help")]
    public void Run_Help_PrintsUsageToStdoutAndExits0(string flag)
    {
        var (exit, stdout, stderr) = Run(flag);
        Assert.Equal(0, exit);
        Assert.Contains("usage: shardctl", stdout, StringComparison.Ordinal);
        Assert.Equal(string.Empty, stderr);
    }

    [Theory]
    [InlineData("hash", "--help")]
    [InlineData("table", "--help")]
    [InlineData("owner", "-h")]
    [InlineData("compare", "--help")]
    [InlineData("lookup", "--help")]
    [InlineData("map", "--help")]
    [InlineData("watch", "--help")]
    [InlineData("demo", "--help")]
    public void Run_CommandHelp_PrintsUsageToStdoutAndExits0(string command, string flag)
    {
        var (exit, stdout, stderr) = Run(command, flag);
        Assert.Equal(0, exit);
        Assert.Contains("usage: shardctl", stdout, StringComparison.Ordinal);
        Assert.Contains("  " + command + " ", stdout, StringComparison.Ordinal);
        Assert.Equal(string.Empty, stderr);
    }

    [RequiresToolFact("xxhsum", "xxhash")]
    public async Task Main_HashAsRealProcess_PrintsSameHashAsXxhsum()
    {
        var dll = FindShardCtlDll();
        var dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host)
            ? host
            : ExternalTool.Find("dotnet") ?? throw new InvalidOperationException("dotnet not found");
        foreach (var (key, expected) in new[] { ("hello", "26c7827d889f6da3"), ("ключ-😀", null) })
        {
            var cli = await ProcessRunner.RunAsync(dotnet, [dll, "hash", "--key", key], timeout: TimeSpan.FromSeconds(60));
            Assert.True(cli.ExitCode == 0, cli.StandardError);
            var reference = await ProcessRunner.RunAsync(ExternalTool.Find("xxhsum")!, ["-H64", "-"], Encoding.UTF8.GetBytes(key), TimeSpan.FromSeconds(30));
            Assert.Equal(0, reference.ExitCode);

            // xxhsum prints "<hex>  stdin" for standard input.
            var referenceHex = reference.StandardOutput.Split(' ', 2)[0];
            Assert.Equal(referenceHex + "\n", cli.StandardOutput.Replace("\r\n", "\n", StringComparison.Ordinal));
            Assert.Equal(expected ?? referenceHex, referenceHex);
            Assert.Equal(XxHash64.ToHex(XxHash64.HashUtf8(key)), referenceHex);
        }
    }

    /// <summary>shardctl.dll next to the test assembly (a project reference copies it), else in the CLI's own bin folder.</summary>
    private static string FindShardCtlDll()
    {
        var beside = Path.Combine(AppContext.BaseDirectory, "shardctl.dll");
        if (File.Exists(beside) && File.Exists(Path.Combine(AppContext.BaseDirectory, "shardctl.runtimeconfig.json")))
        {
            return beside;
        }

        var configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name; // bin/<Configuration>/net10.0/
        var built = Path.Combine(RepositoryPaths.Root, "controlplane", "Sharding.Cli", "bin", configuration, "net10.0", "shardctl.dll");
        return File.Exists(built) ? built : throw new FileNotFoundException("shardctl.dll not found beside the tests or at " + built);
    }
}

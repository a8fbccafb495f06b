using System.Globalization;
using Sharding.Testing;

namespace Sharding.EndToEnd.Tests;

/// <summary>Runs a shortened <c>shardctl demo</c> as a real process, as a new user would, and checks its summary.</summary>
public sealed class DemoTests
{
    [Fact]
    public async Task Demo_ShortRun_ZeroMisroutesZeroFailuresFailoverAndEveryProcessExited()
    {
        var shardctl = CliAssembly();
        var work = Directory.CreateTempSubdirectory("sharding-demo-test-").FullName;

        var result = await ProcessRunner.RunAsync("dotnet", [shardctl, "demo", "--duration", "16s", "--streams", "10", "--work-dir", work], timeout: TimeSpan.FromMinutes(5));

        var summary = result.StandardOutput.Split('\n').LastOrDefault(l => l.StartsWith("demo: ", StringComparison.Ordinal));
        Assert.True(summary is not null, $"no summary line; exit {result.ExitCode}\n{result.StandardOutput}\n{result.StandardError}");
        var fields = summary["demo: ".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries)
            .Select(f => f.Split('=', 2)).ToDictionary(f => f[0], f => f.Length > 1 ? f[1] : string.Empty, StringComparer.Ordinal);
        var context = result.StandardOutput;

        Assert.True(fields["result"] == "PASS", context);
        Assert.Equal(0, result.ExitCode);
        Assert.True(long.Parse(fields["requests"], CultureInfo.InvariantCulture) > 100, context);
        Assert.Equal("0", fields["failed"]);
        Assert.Equal("0", fields["misroutes"]);
        Assert.Equal("0", fields["mismatched"]);
        var moved = double.Parse(fields["moved"], CultureInfo.InvariantCulture);
        var ideal = double.Parse(fields["ideal"], CultureInfo.InvariantCulture);
        Assert.InRange(ideal, 0.2499, 0.2501);
        Assert.InRange(moved, 0, ideal + 0.02);
        Assert.InRange(double.Parse(fields["failover_seconds"], CultureInfo.InvariantCulture), 0, 15);
        Assert.Equal(fields["processes_started"], fields["processes_exited"]);
        var pids = fields["pids"].Split(',', StringSplitOptions.RemoveEmptyEntries).Select(p => int.Parse(p, CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(int.Parse(fields["processes_started"], CultureInfo.InvariantCulture), pids.Count);
        Assert.All(pids, pid => Assert.False(Directory.Exists($"/proc/{pid}") && !IsZombie(pid), $"process {pid} is still running"));
    }

    [Fact]
    public async Task Demo_BadArgument_ExitsTwoWithOneLine()
    {
        var result = await ProcessRunner.RunAsync("dotnet", [CliAssembly(), "demo", "--pods", "1"], timeout: TimeSpan.FromMinutes(1));

        Assert.Equal(2, result.ExitCode);
        Assert.Equal("shardctl demo: option '--pods' must be an integer between 2 and 12 (got '1')", result.StandardError.Trim());
    }

    internal static string CliAssembly()
    {
        // The CLI's own build folder: the demo finds the other components relative to the repository from there.
        var configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name;
        var path = Path.Combine(RepositoryPaths.Root, "controlplane", "Sharding.Cli", "bin", configuration, "net10.0", "shardctl.dll");
        Assert.True(File.Exists(path), $"{path} is not built");
        return path;
    }

    private static bool IsZombie(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/stat").Contains(") Z ", StringComparison.Ordinal);
        }
        catch (IOException)
        {
            return true;
        }
    }
}

using Xunit;

namespace Sharding.Testing;

/// <summary>Finds real peers from Debian (xxhsum, promtool, nghttp, python3 with grpcio...) for tests that talk to them.</summary>
public static class ExternalTool
{
    /// <summary>Set by <c>.ci/run</c>: every peer must be present, so a missing one fails the test instead of skipping it.</summary>
    public const string RequirePeersVariable = "SHARDING_REQUIRE_PEERS";

    /// <summary>Whether CI demands every peer.</summary>
    public static bool PeersRequired => Environment.GetEnvironmentVariable(RequirePeersVariable) == "1";

    /// <summary>The full path of an executable on PATH, or null.</summary>
    public static string? Find(string name)
    {
        if (Path.IsPathRooted(name))
        {
            return File.Exists(name) ? name : null;
        }

        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    /// <summary>
    /// Debian's python3 (/usr/bin/python3), which sees the python3-grpcio and python3-protobuf packages; a pyenv or venv
    /// python3 earlier on PATH does not.
    /// </summary>
    public static string Python => File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

    /// <summary>Whether <see cref="Python"/> can import all the given modules.</summary>
    public static bool PythonHasModules(params string[] modules)
    {
        if (Find(Python) is null)
        {
            return false;
        }

        try
        {
            using var process = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo(Python, ["-c", "import " + string.Join(", ", modules)])
            {
                RedirectStandardError = true,
                RedirectStandardOutput = true,
            })!;
            process.WaitForExit(30_000);
            return process.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }

    /// <summary>The skip reason when <paramref name="available"/> is false and CI does not demand peers; else null.</summary>
    public static string? SkipReason(bool available, string what, string debianPackage) =>
        available || PeersRequired
            ? null
            : $"skipped: {what} is not installed here (apt-get install -y {debianPackage}; .ci/run installs it, so CI runs this test)";
}

/// <summary>A fact that needs an executable from Debian; skipped with the reason when it is missing (never in CI).</summary>
public sealed class RequiresToolFactAttribute : FactAttribute
{
    public RequiresToolFactAttribute(string executable, string debianPackage)
    {
        Skip = ExternalTool.SkipReason(ExternalTool.Find(executable) is not null, executable, debianPackage);
    }
}

/// <summary>A theory that needs an executable from Debian; skipped with the reason when it is missing (never in CI).</summary>
public sealed class RequiresToolTheoryAttribute : TheoryAttribute
{
    public RequiresToolTheoryAttribute(string executable, string debianPackage)
    {
        Skip = ExternalTool.SkipReason(ExternalTool.Find(executable) is not null, executable, debianPackage);
    }
}

/// <summary>A fact that needs python3 with the given modules (e.g. grpc, google.protobuf).</summary>
public sealed class RequiresPythonFactAttribute : FactAttribute
{
    public RequiresPythonFactAttribute(string debianPackages, params string[] modules)
    {
        Skip = ExternalTool.SkipReason(ExternalTool.PythonHasModules(modules), "python3 with " + string.Join(", ", modules), debianPackages);
    }
}

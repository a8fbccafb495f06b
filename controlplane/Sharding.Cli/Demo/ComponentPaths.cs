namespace Sharding.Cli.Demo;

/// <summary>
/// Finds the built control plane, sidecar and sample app. <c>dotnet run --project controlplane/Sharding.Cli</c> builds them
/// first (the Cli project references them for build order only), so the demo runs from a checkout with just the .NET SDK.
/// </summary>
internal sealed record ComponentPaths(string RepositoryRoot, string ControlPlane, string Sidecar, string SampleApp)
{
    public static ComponentPaths Locate()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Sharding.sln")))
        {
            dir = dir.Parent;
        }

        if (dir is null)
        {
            throw new InvalidOperationException("the demo runs from a checkout of the repository: Sharding.sln was not found above " + AppContext.BaseDirectory);
        }

        return new ComponentPaths(
            dir.FullName,
            Find(dir.FullName, "controlplane/Sharding.ControlPlane", "Sharding.ControlPlane.dll"),
            Find(dir.FullName, "sidecar/Sharding.Sidecar", "Sharding.Sidecar.dll"),
            Find(dir.FullName, "tests/Sharding.SampleApp", "Sharding.SampleApp.dll"));
    }

    private static string Find(string root, string project, string assembly)
    {
        // Prefer the configuration this CLI was built in, then the newest build of the other.
        var own = new DirectoryInfo(AppContext.BaseDirectory).Parent?.Name ?? "Debug";
        var candidates = new[] { own, "Release", "Debug" }
            .Select(c => Path.Combine(root, project, "bin", c, "net10.0", assembly))
            .Where(File.Exists)
            .ToList();
        return candidates.Count > 0
            ? candidates[0]
            : throw new InvalidOperationException($"{assembly} is not built: run `dotnet build {project}` (or start the demo with `dotnet run --project controlplane/Sharding.Cli -- demo`, which builds it)");
    }
}

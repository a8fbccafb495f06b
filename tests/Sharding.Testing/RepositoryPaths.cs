namespace Sharding.Testing;

/// <summary>Locates the repository root (the folder holding Sharding.sln) from a test's output folder.</summary>
public static class RepositoryPaths
{
    public static string Root { get; } = FindRoot();

    /// <summary>
    /// Responses recorded from a real Kubernetes v1.28 API server (a copy of the team's <c>../shared/k8s-fixtures</c>, kept in the
    /// repository so a clean clone in CI has them).
    /// </summary>
    public static string KubernetesFixtures => Path.Combine(Root, "tests", "fixtures", "k8s-fixtures");

    private static string FindRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Sharding.sln")))
        {
            dir = dir.Parent;
        }

        return dir?.FullName ?? throw new InvalidOperationException("Sharding.sln not found above " + AppContext.BaseDirectory);
    }
}

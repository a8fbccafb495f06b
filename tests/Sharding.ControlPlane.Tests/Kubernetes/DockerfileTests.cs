using System.Xml.Linq;
using Sharding.Testing;

namespace Sharding.ControlPlane.Tests.Kubernetes;

/// <summary>
/// No Docker engine runs here, so the images are never built in CI. What breaks them silently is the build context: a project
/// that links a file or references a project the Dockerfile does not COPY, or a Directory.Build.* that is left behind (the
/// image then builds with other settings than the tests did). This checks each publish step's inputs against its COPY lines.
/// </summary>
public sealed class DockerfileTests
{
    [Theory]
    [InlineData("sidecar/Dockerfile")]
    [InlineData("controlplane/Dockerfile")]
    [InlineData("tests/Sharding.SampleApp/Dockerfile")]
    public void Dockerfile_CopiesEveryInputOfWhatItPublishes(string dockerfile)
    {
        var lines = File.ReadAllLines(Path.Combine(RepositoryPaths.Root, dockerfile)).Select(l => l.Trim()).ToList();
        var copied = lines
            .Where(l => l.StartsWith("COPY ", StringComparison.Ordinal) && !l.Contains("--from", StringComparison.Ordinal))
            .SelectMany(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1..^1])
            .ToList();
        var published = lines.Single(l => l.Contains("dotnet publish", StringComparison.Ordinal))
            .Split(' ').Single(w => w.EndsWith(".csproj", StringComparison.Ordinal));

        var missing = new SortedSet<string>(StringComparer.Ordinal);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var pending = new Queue<string>([published]);
        while (pending.TryDequeue(out var project))
        {
            if (!seen.Add(project))
            {
                continue;
            }

            Require(project);
            var folder = Path.GetDirectoryName(project)!;
            for (var dir = folder; dir is not null; dir = dir.Length == 0 ? null : Path.GetDirectoryName(dir))
            {
                foreach (var name in new[] { "Directory.Build.props", "Directory.Build.targets", "Directory.Packages.props" })
                {
                    if (File.Exists(Path.Combine(RepositoryPaths.Root, dir, name)))
                    {
                        Require(Path.Combine(dir, name));
                    }
                }
            }

            foreach (var item in XDocument.Load(Path.Combine(RepositoryPaths.Root, project)).Descendants())
            {
                if (item.Attribute("Include")?.Value is not { } include || !include.StartsWith("..", StringComparison.Ordinal))
                {
                    continue; // files inside the project's folder come with it
                }

                var path = Path.GetRelativePath(RepositoryPaths.Root, Path.GetFullPath(Path.Combine(RepositoryPaths.Root, folder, include)));
                if (item.Name.LocalName == "ProjectReference")
                {
                    pending.Enqueue(path);
                }
                else if (!path.Contains('*', StringComparison.Ordinal))
                {
                    Require(path);
                }
            }
        }

        Assert.True(missing.Count == 0, $"{dockerfile} publishes {published} but does not COPY: {string.Join(", ", missing)}");

        void Require(string path)
        {
            path = path.Replace('\\', '/');
            if (!copied.Any(c => c.EndsWith('/') ? path.StartsWith(c, StringComparison.Ordinal) : path == c))
            {
                missing.Add(path);
            }
        }
    }
}

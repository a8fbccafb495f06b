using System.Text.RegularExpressions;

namespace Sharding.Testing;

/// <summary>
/// Compares the metric families a component really exposes (the <c># TYPE</c> lines of its <c>/metrics</c> text) with
/// <c>docs/metrics.md</c> and with every metric name the README, the docs, the Grafana dashboards (and their generator) and
/// the Prometheus configuration mention, so a renamed instrument or a misspelt suffix cannot ship in a dashboard or a doc.
/// </summary>
public static partial class MetricsCatalogue
{
    /// <summary>Names in the docs that are, on purpose, not families (the text explains why).</summary>
    private static readonly HashSet<string> Explained = new(StringComparer.Ordinal)
    {
        "dotnet_timer_count", // docs/metrics.md: "a gauge that would end in _count, such as dotnet_timer_count, gets _value"
    };

    /// <summary>The families of a Prometheus text exposition, name → type.</summary>
    public static Dictionary<string, string> Exposed(string exposition)
    {
        var families = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (Match m in TypeLine().Matches(exposition))
        {
            families[m.Groups[1].Value] = m.Groups[2].Value;
        }

        return families;
    }

    /// <summary>The rows of the table under <c>## <paramref name="heading"/></c> in docs/metrics.md, name → type.</summary>
    public static Dictionary<string, string> Documented(string heading)
    {
        var text = File.ReadAllText(Path.Combine(RepositoryPaths.Root, "docs", "metrics.md"));
        var start = text.IndexOf("\n## " + heading, StringComparison.Ordinal);
        if (start < 0)
        {
            throw new InvalidOperationException($"docs/metrics.md has no section '## {heading}'");
        }

        var end = text.IndexOf("\n## ", start + 4, StringComparison.Ordinal);
        var section = end < 0 ? text[start..] : text[start..end];
        var rows = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (Match m in TableRow().Matches(section))
        {
            rows[m.Groups[1].Value] = m.Groups[2].Value;
        }

        return rows;
    }

    /// <summary>
    /// Every name starting with <paramref name="prefix"/> that a doc, dashboard or Prometheus configuration mentions, with
    /// where it is; names in backquoted globs (<c>dotnet_gc_*</c>) are skipped.
    /// </summary>
    public static List<(string Name, string Where)> Referenced(string prefix)
    {
        var root = RepositoryPaths.Root;
        var files = new List<string> { Path.Combine(root, "README.md"), Path.Combine(root, "tests", "dashboards", "generate.py") };
        files.AddRange(Directory.EnumerateFiles(Path.Combine(root, "docs"), "*.md"));
        files.AddRange(Directory.EnumerateFiles(Path.Combine(root, "sidecar"), "README.md", SearchOption.AllDirectories));
        files.AddRange(Directory.EnumerateFiles(Path.Combine(root, "manifests"), "*.*", SearchOption.AllDirectories)
            .Where(f => f.EndsWith(".json", StringComparison.Ordinal) || f.EndsWith(".yaml", StringComparison.Ordinal)));
        var found = new List<(string, string)>();
        var name = new Regex(@"\b" + Regex.Escape(prefix) + @"[a-z0-9_]*[a-z0-9](?![a-z0-9_]*\*)", RegexOptions.CultureInvariant);
        foreach (var file in files.Where(File.Exists))
        {
            var lines = File.ReadAllLines(file);
            for (var i = 0; i < lines.Length; i++)
            {
                foreach (Match m in name.Matches(lines[i]))
                {
                    found.Add((m.Value, $"{Path.GetRelativePath(root, file)}:{i + 1}"));
                }
            }
        }

        return found;
    }

    /// <summary>
    /// What is wrong: families exposed but not in the docs' table or with another type there, table rows the component does
    /// not expose, and mentioned names that are no family (a histogram's <c>_bucket</c>, <c>_sum</c> and <c>_count</c> series count).
    /// </summary>
    public static List<string> Problems(string prefix, Dictionary<string, string> exposed, Dictionary<string, string>? documented)
    {
        var problems = new List<string>();
        var ours = exposed.Where(p => p.Key.StartsWith(prefix, StringComparison.Ordinal)).ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal);
        if (documented is not null)
        {
            foreach (var (name, type) in ours)
            {
                if (!documented.TryGetValue(name, out var documentedType))
                {
                    problems.Add($"{name} ({type}) is exposed but not in docs/metrics.md");
                }
                else if (documentedType != type)
                {
                    problems.Add($"{name} is a {type}, docs/metrics.md says {documentedType}");
                }
            }

            problems.AddRange(documented.Keys.Where(n => !ours.ContainsKey(n)).Select(n => $"{n} is in docs/metrics.md but not exposed"));
        }

        foreach (var (name, where) in Referenced(prefix))
        {
            if (Explained.Contains(name) || ours.ContainsKey(name))
            {
                continue;
            }

            var series = HistogramSeries().Match(name);
            if (series.Success && ours.TryGetValue(series.Groups[1].Value, out var baseType) && baseType == "histogram")
            {
                continue;
            }

            problems.Add($"{where}: {name} is not a metric this component exposes");
        }

        if (problems.Count > 0)
        {
            problems.Add($"exposed {prefix}* families: {string.Join(", ", ours.Keys.Order(StringComparer.Ordinal))}");
        }

        return problems;
    }

    [GeneratedRegex(@"^# TYPE (\S+) (\S+)$", RegexOptions.Multiline | RegexOptions.CultureInvariant)]
    private static partial Regex TypeLine();

    [GeneratedRegex(@"^\| `([a-z0-9_]+)` \| ([a-z]+) \|", RegexOptions.Multiline | RegexOptions.CultureInvariant)]
    private static partial Regex TableRow();

    [GeneratedRegex(@"^(.+)_(?:bucket|sum|count)$", RegexOptions.CultureInvariant)]
    private static partial Regex HistogramSeries();
}

namespace Sharding.Testing;

/// <summary>
/// The option keys an options table in a doc names (first column, backquoted, <c>`A` / `B`</c> for several), so a test can
/// hold them equal to an options class's properties: a new option must be documented and a documented one must exist.
/// </summary>
public static class OptionsCatalogue
{
    /// <summary>
    /// The keys in the tables of <paramref name="doc"/> (relative to the repository) between the heading starting with
    /// <paramref name="heading"/> and the next heading of the same or a higher level. A key without <c>:</c> after one with it
    /// in the same cell (<c>`Sharding:Kubernetes:Election:LeaseDuration` / `RenewDeadline`</c>) takes its section.
    /// </summary>
    public static HashSet<string> Documented(string doc, string heading)
    {
        var lines = File.ReadAllLines(Path.Combine(RepositoryPaths.Root, doc));
        var start = Array.FindIndex(lines, l => l.TrimStart('#').TrimStart().StartsWith(heading, StringComparison.Ordinal) && l.StartsWith('#'));
        if (start < 0)
        {
            throw new InvalidOperationException($"{doc} has no heading starting with '{heading}'");
        }

        var level = lines[start].TakeWhile(c => c == '#').Count();
        var keys = new HashSet<string>(StringComparer.Ordinal);
        for (var i = start + 1; i < lines.Length; i++)
        {
            var line = lines[i];
            if (line.StartsWith('#') && line.TakeWhile(c => c == '#').Count() <= level)
            {
                break;
            }

            if (!line.StartsWith("| `", StringComparison.Ordinal))
            {
                continue;
            }

            var cell = line.Split('|')[1];
            string? section = null;
            foreach (var part in cell.Split('/'))
            {
                var token = part.Trim();
                if (token.Length < 3 || token[0] != '`' || token[^1] != '`')
                {
                    continue;
                }

                token = token[1..^1];
                var colon = token.LastIndexOf(':');
                if (colon >= 0)
                {
                    section = token[..colon];
                    keys.Add(token);
                }
                else
                {
                    keys.Add(section is null ? token : section + ":" + token);
                }
            }
        }

        return keys;
    }

    /// <summary>The configuration keys of an options class: its public settable instance properties, under <paramref name="section"/>.</summary>
    public static HashSet<string> Keys(Type options, string? section) =>
        options.GetProperties(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance)
            .Where(p => p.SetMethod is { IsPublic: true })
            .Select(p => section is null ? p.Name : section + ":" + p.Name)
            .ToHashSet(StringComparer.Ordinal);

    /// <summary>Fails naming the keys only one side has: options nobody documented, and documented keys no option has.</summary>
    public static void AssertSame(IReadOnlySet<string> keys, IReadOnlySet<string> documented)
    {
        Xunit.Assert.Empty(keys.Except(documented).Order(StringComparer.Ordinal));
        Xunit.Assert.Empty(documented.Except(keys).Order(StringComparer.Ordinal));
    }
}

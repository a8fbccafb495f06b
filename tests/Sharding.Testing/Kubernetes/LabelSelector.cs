namespace Sharding.Testing.Kubernetes;

/// <summary>Kubernetes label selector matching: <c>a=b</c>, <c>a==b</c>, <c>a!=b</c>, <c>a</c> (exists), <c>!a</c>, <c>a in (x,y)</c>, <c>a notin (x)</c>.</summary>
public sealed class LabelSelector
{
    private readonly List<Func<IReadOnlyDictionary<string, string>, bool>> _requirements = [];

    private LabelSelector()
    {
    }

    public static LabelSelector Everything { get; } = new();

    public static LabelSelector Parse(string? text)
    {
        var selector = new LabelSelector();
        if (string.IsNullOrWhiteSpace(text))
        {
            return selector;
        }

        foreach (var term in SplitTerms(text))
        {
            var t = term.Trim();
            int at;
            if ((at = t.IndexOf(" notin ", StringComparison.Ordinal)) > 0)
            {
                var key = t[..at].Trim();
                var values = Values(t[(at + 7)..]);
                selector._requirements.Add(l => !l.TryGetValue(key, out var v) || !values.Contains(v));
            }
            else if ((at = t.IndexOf(" in ", StringComparison.Ordinal)) > 0)
            {
                var key = t[..at].Trim();
                var values = Values(t[(at + 4)..]);
                selector._requirements.Add(l => l.TryGetValue(key, out var v) && values.Contains(v));
            }
            else if ((at = t.IndexOf("!=", StringComparison.Ordinal)) > 0)
            {
                var key = t[..at].Trim();
                var value = t[(at + 2)..].Trim();
                selector._requirements.Add(l => !l.TryGetValue(key, out var v) || v != value);
            }
            else if ((at = t.IndexOf('=', StringComparison.Ordinal)) > 0)
            {
                var key = t[..at].Trim();
                var value = t[(at + (t.AsSpan(at).StartsWith("==") ? 2 : 1))..].Trim();
                selector._requirements.Add(l => l.TryGetValue(key, out var v) && v == value);
            }
            else if (t.StartsWith('!'))
            {
                var key = t[1..].Trim();
                selector._requirements.Add(l => !l.ContainsKey(key));
            }
            else
            {
                selector._requirements.Add(l => l.ContainsKey(t));
            }
        }

        return selector;
    }

    public bool Matches(IReadOnlyDictionary<string, string> labels) => _requirements.TrueForAll(r => r(labels));

    private static HashSet<string> Values(string text) =>
        text.Trim().TrimStart('(').TrimEnd(')').Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).ToHashSet(StringComparer.Ordinal);

    private static IEnumerable<string> SplitTerms(string text)
    {
        var depth = 0;
        var start = 0;
        for (var i = 0; i < text.Length; i++)
        {
            depth += text[i] == '(' ? 1 : text[i] == ')' ? -1 : 0;
            if (text[i] == ',' && depth == 0)
            {
                yield return text[start..i];
                start = i + 1;
            }
        }

        yield return text[start..];
    }
}

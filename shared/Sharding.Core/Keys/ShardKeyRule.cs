using System.Diagnostics.CodeAnalysis;

namespace Sharding.Keys;

/// <summary>One shard-key rule: where to look (<see cref="Kind"/>) and what for (<see cref="Argument"/>).</summary>
/// <remarks>
/// Text form (annotations, files, CLI): <c>header:x-shard-key</c>, <c>path:/docs/{key}</c>, <c>query:tenant</c>,
/// <c>cookie:session</c>, <c>json:$.account.id</c>. Rules are tried in order; the first that yields a key wins.
/// </remarks>
/// <param name="Kind">Where the key is read from.</param>
/// <param name="Argument">Header name, path template, query parameter, cookie name or JSON path.</param>
public sealed record ShardKeyRule(ShardKeyRuleKind Kind, string Argument)
{
    /// <summary>The default shard-key header.</summary>
    public const string DefaultHeader = "x-shard-key";

    /// <summary>The default rule: header <c>x-shard-key</c>.</summary>
    public static ShardKeyRule Default { get; } = new(ShardKeyRuleKind.Header, DefaultHeader);

    /// <summary>The rule in its text form, e.g. <c>header:x-shard-key</c>.</summary>
    /// <returns>The text form.</returns>
    public override string ToString() => $"{KindName(Kind)}:{Argument}";

    /// <summary>Parses the text form; see the remarks on <see cref="ShardKeyRule"/>.</summary>
    /// <param name="text">The rule text.</param>
    /// <param name="rule">The rule on success.</param>
    /// <param name="error">What is wrong, on failure.</param>
    /// <returns>Whether the text is a valid rule.</returns>
    public static bool TryParse(string text, [NotNullWhen(true)] out ShardKeyRule? rule, [NotNullWhen(false)] out string? error)
    {
        rule = null;
        var colon = text.IndexOf(':', StringComparison.Ordinal);
        if (colon <= 0 || colon == text.Length - 1)
        {
            error = $"key rule '{text}' must look like kind:argument, e.g. header:x-shard-key, path:/docs/{{key}}, query:tenant, cookie:session or json:$.account.id";
            return false;
        }

        var kindText = text.AsSpan(0, colon).Trim();
        var argument = text[(colon + 1)..].Trim();
        ShardKeyRuleKind kind;
        if (kindText.Equals("header", StringComparison.OrdinalIgnoreCase))
        {
            kind = ShardKeyRuleKind.Header;
            argument = argument.ToLowerInvariant();
        }
        else if (kindText.Equals("path", StringComparison.OrdinalIgnoreCase))
        {
            kind = ShardKeyRuleKind.Path;
            if (!argument.StartsWith('/') || !argument.Contains("{key}", StringComparison.Ordinal))
            {
                error = $"path rule '{text}' needs a template that starts with / and contains {{key}}, e.g. path:/docs/{{key}}";
                return false;
            }

            if (!KeyIsWholeSegment(argument))
            {
                error = $"path rule '{text}' needs {{key}} as a whole segment before any ... or ** (the extractor matches segments), e.g. path:/docs/{{key}}/edit";
                return false;
            }
        }
        else if (kindText.Equals("query", StringComparison.OrdinalIgnoreCase))
        {
            kind = ShardKeyRuleKind.Query;
        }
        else if (kindText.Equals("cookie", StringComparison.OrdinalIgnoreCase))
        {
            kind = ShardKeyRuleKind.Cookie;
        }
        else if (kindText.Equals("json", StringComparison.OrdinalIgnoreCase))
        {
            kind = ShardKeyRuleKind.JsonBody;
            if (!argument.StartsWith("$.", StringComparison.Ordinal) || argument.Length < 3)
            {
                error = $"json rule '{text}' needs a path like $.account.id";
                return false;
            }
        }
        else
        {
            error = $"key rule '{text}' has unknown kind '{kindText}': use header, path, query, cookie or json";
            return false;
        }

        rule = new ShardKeyRule(kind, argument);
        error = null;
        return true;
    }

    /// <summary>Parses the text form or throws.</summary>
    /// <param name="text">The rule text.</param>
    /// <returns>The rule.</returns>
    /// <exception cref="FormatException">The text is not a valid rule.</exception>
    public static ShardKeyRule Parse(string text) =>
        TryParse(text, out var rule, out var error) ? rule : throw new FormatException(error);

    /// <summary>Whether the extractor can ever find a key with this template: a <c>{key}</c> segment before any rest wildcard.</summary>
    private static bool KeyIsWholeSegment(string template)
    {
        foreach (var segment in template.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            if (segment == "{key}")
            {
                return true;
            }

            if (segment is "..." or "**" || segment.Contains("{key}", StringComparison.Ordinal))
            {
                return false;
            }
        }

        return false;
    }

    private static string KindName(ShardKeyRuleKind kind) => kind switch
    {
        ShardKeyRuleKind.Header => "header",
        ShardKeyRuleKind.Path => "path",
        ShardKeyRuleKind.Query => "query",
        ShardKeyRuleKind.Cookie => "cookie",
        ShardKeyRuleKind.JsonBody => "json",
        _ => kind.ToString(),
    };
}

namespace Sharding.Cli;

/// <summary>Thrown for bad command-line input; printed as one line to stderr with exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>
/// Parsed <c>--name value</c> options of one command. Options may repeat (<c>--key a --key b</c>); flags take no value.
/// Small on purpose: every command validates its own options and says exactly what is wrong.
/// </summary>
internal sealed class CommandLine
{
    private readonly Dictionary<string, List<string>> _options = new(StringComparer.Ordinal);
    private readonly HashSet<string> _flags = new(StringComparer.Ordinal);

    private CommandLine(string command) => Command = command;

    public string Command { get; }

    /// <summary>Parses arguments after the command name.</summary>
    /// <param name="args">All arguments, the first being the command.</param>
    /// <param name="knownOptions">Options that take a value.</param>
    /// <param name="flagNames">Options that take no value.</param>
    public static CommandLine Parse(IReadOnlyList<string> args, IReadOnlySet<string> knownOptions, IReadOnlySet<string> flagNames)
    {
        var line = new CommandLine(args[0]);
        for (var i = 1; i < args.Count; i++)
        {
            var arg = args[i];
            if (!arg.StartsWith("--", StringComparison.Ordinal) || arg.Length == 2)
            {
                throw new UsageException($"unexpected argument '{arg}' (options look like --name value)");
            }

            var name = arg[2..];
            string? inlineValue = null;
            var eq = name.IndexOf('=', StringComparison.Ordinal);
            if (eq > 0)
            {
                inlineValue = name[(eq + 1)..];
                name = name[..eq];
            }

            if (flagNames.Contains(name))
            {
                line._flags.Add(name);
                continue;
            }

            if (!knownOptions.Contains(name))
            {
                throw new UsageException($"unknown option '--{name}' for '{line.Command}'");
            }

            var value = inlineValue;
            if (value is null)
            {
                if (i + 1 >= args.Count)
                {
                    throw new UsageException($"option '--{name}' needs a value");
                }

                value = args[++i];
            }

            if (!line._options.TryGetValue(name, out var values))
            {
                values = [];
                line._options[name] = values;
            }

            values.Add(value);
        }

        return line;
    }

    public bool HasFlag(string name) => _flags.Contains(name);

    public IReadOnlyList<string> All(string name) => _options.TryGetValue(name, out var values) ? values : [];

    public string? Single(string name)
    {
        var values = All(name);
        return values.Count switch
        {
            0 => null,
            1 => values[0],
            _ => throw new UsageException($"option '--{name}' is given {values.Count} times; give it once"),
        };
    }

    public string Required(string name) => Single(name) ?? throw new UsageException($"option '--{name}' is required");

    public long Int64(string name, long defaultValue, long min, long max)
    {
        var text = Single(name);
        if (text is null)
        {
            return defaultValue;
        }

        if (!long.TryParse(text, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var value) || value < min || value > max)
        {
            throw new UsageException($"option '--{name}' must be an integer between {min} and {max} (got '{text}')");
        }

        return value;
    }

    public TimeSpan Duration(string name, TimeSpan defaultValue)
    {
        var text = Single(name);
        return text is null ? defaultValue : DurationParser.Parse(name, text);
    }
}

/// <summary>Parses durations such as <c>500ms</c>, <c>20s</c>, <c>2m</c> or a plain number of seconds, at most <see cref="Max"/>.</summary>
internal static class DurationParser
{
    /// <summary>The longest duration: timers (Task.Delay, WaitAsync) take at most about 49.7 days.</summary>
    public static readonly TimeSpan Max = TimeSpan.FromDays(30);

    public static TimeSpan Parse(string option, string text)
    {
        var span = text.AsSpan().Trim();
        double factor = 1;
        if (span.EndsWith("ms", StringComparison.Ordinal))
        {
            factor = 0.001;
            span = span[..^2];
        }
        else if (span.EndsWith('s'))
        {
            span = span[..^1];
        }
        else if (span.EndsWith('m'))
        {
            factor = 60;
            span = span[..^1];
        }

        // NaN fails every comparison, so it is refused by !(> 0); anything above Max (1e300 too) before TimeSpan overflows.
        if (!double.TryParse(span, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var value)
            || !(value > 0) || !(value * factor <= Max.TotalSeconds))
        {
            throw new UsageException($"option '--{option}' must be a positive duration such as 500ms, 20s or 2m, at most 30 days (got '{text}')");
        }

        return TimeSpan.FromSeconds(value * factor);
    }
}

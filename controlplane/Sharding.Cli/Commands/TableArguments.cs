using System.Globalization;
using Sharding.Hashing;

namespace Sharding.Cli.Commands;

/// <summary>Reads the options every table-building command shares: members, weights, size, algorithm.</summary>
internal static class TableArguments
{
    public static readonly string[] OptionNames = ["members", "weights", "size", "algorithm", "min-ring", "max-ring"];

    /// <summary>Parses <c>a,b,c</c> plus <c>--weights a=2,b=1</c> into members (weight 1 unless given).</summary>
    public static List<HashMember> Members(CommandLine line, string option, string? weightsText)
    {
        var text = line.Single(option);
        if (string.IsNullOrWhiteSpace(text))
        {
            throw new UsageException($"option '--{option}' needs at least one member, e.g. --{option} pod-0,pod-1,pod-2");
        }

        var names = new List<string>();
        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries))
        {
            if (part.Length == 0)
            {
                throw new UsageException($"option '--{option}' has an empty member name in '{text}'");
            }

            if (names.Contains(part, StringComparer.Ordinal))
            {
                throw new UsageException($"member '{part}' is listed twice in '--{option}'");
            }

            names.Add(part);
        }

        var weights = Weights(weightsText);
        foreach (var name in weights.Keys)
        {
            if (!names.Contains(name, StringComparer.Ordinal) && option == "members")
            {
                throw new UsageException($"--weights names '{name}', which is not in --members");
            }
        }

        return names.ConvertAll(n => new HashMember(n, weights.TryGetValue(n, out var w) ? w : 1));
    }

    public static Dictionary<string, uint> Weights(string? text)
    {
        var weights = new Dictionary<string, uint>(StringComparer.Ordinal);
        if (text is null)
        {
            return weights;
        }

        foreach (var part in text.Split(',', StringSplitOptions.TrimEntries))
        {
            var eq = part.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0 || !uint.TryParse(part.AsSpan(eq + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var weight))
            {
                throw new UsageException($"malformed weight '{part}': expected name=integer, e.g. --weights pod-0=2,pod-1=1");
            }

            weights[part[..eq]] = weight;
        }

        return weights;
    }

    public static ShardAlgorithm Algorithm(CommandLine line, ShardAlgorithm defaultValue = ShardAlgorithm.Maglev)
    {
        var text = line.Single("algorithm");
        if (text is null)
        {
            return defaultValue;
        }

        return ShardAlgorithmNames.TryParse(text, out var algorithm)
            ? algorithm
            : throw new UsageException($"unknown algorithm '{text}': use maglev, ring or modulo");
    }

    public static ShardTableOptions Options(CommandLine line)
    {
        var size = line.Int64("size", ShardTableOptions.DefaultMaglevTableSize, 2, ShardTableOptions.MaxMaglevTableSize);
        if (!Primes.IsPrime(size))
        {
            throw new UsageException($"table size {size} is not prime: Maglev needs a prime size (65537 is the default; 7, 17, 251, 4099 also work)");
        }

        var minRing = line.Int64("min-ring", ShardTableOptions.DefaultMinimumRingSize, 1, ShardTableOptions.DefaultMaximumRingSize);
        var maxRing = line.Int64("max-ring", ShardTableOptions.DefaultMaximumRingSize, 1, ShardTableOptions.DefaultMaximumRingSize);
        if (minRing > maxRing)
        {
            throw new UsageException($"--min-ring ({minRing}) is larger than --max-ring ({maxRing})");
        }

        return new ShardTableOptions { MaglevTableSize = (int)size, MinimumRingSize = minRing, MaximumRingSize = maxRing };
    }

    public static ShardTable Build(ShardAlgorithm algorithm, IEnumerable<HashMember> members, ShardTableOptions options)
    {
        try
        {
            var table = ShardTable.Create(algorithm, members, options);
            return table.IsEmpty ? throw new UsageException("every member has weight 0: at least one member needs a weight of 1 or more") : table;
        }
        catch (ArgumentException ex)
        {
            throw new UsageException(ex.Message.Split(" (Parameter", 2)[0]);
        }
    }
}

namespace Sharding.Hashing;

/// <summary>The consistent-hashing algorithms a shard map can use.</summary>
public enum ShardAlgorithm
{
    /// <summary>Maglev (Eisenbud et al., NSDI 2016), bit-compatible with Envoy's <c>MAGLEV</c> policy. The default.</summary>
    Maglev = 0,

    /// <summary>Ketama-style ring hash, compatible with Envoy's <c>RING_HASH</c> policy using xxHash.</summary>
    RingHash = 1,

    /// <summary>Key hash modulo member count. For comparison only: almost every key moves when membership changes.</summary>
    Modulo = 2,
}

/// <summary>Parses and prints algorithm names as they appear in configuration and on the command line.</summary>
public static class ShardAlgorithmNames
{
    /// <summary>Parses <c>maglev</c>, <c>ring</c> (or <c>ring-hash</c>, <c>ringhash</c>) and <c>modulo</c>, case-insensitively.</summary>
    /// <param name="text">The name.</param>
    /// <param name="algorithm">The algorithm when the name is known.</param>
    /// <returns>Whether the name is known.</returns>
    public static bool TryParse(ReadOnlySpan<char> text, out ShardAlgorithm algorithm)
    {
        if (text.Equals("maglev", StringComparison.OrdinalIgnoreCase))
        {
            algorithm = ShardAlgorithm.Maglev;
            return true;
        }

        if (text.Equals("ring", StringComparison.OrdinalIgnoreCase) || text.Equals("ring-hash", StringComparison.OrdinalIgnoreCase)
            || text.Equals("ringhash", StringComparison.OrdinalIgnoreCase) || text.Equals("ring_hash", StringComparison.OrdinalIgnoreCase))
        {
            algorithm = ShardAlgorithm.RingHash;
            return true;
        }

        if (text.Equals("modulo", StringComparison.OrdinalIgnoreCase))
        {
            algorithm = ShardAlgorithm.Modulo;
            return true;
        }

        algorithm = default;
        return false;
    }

    /// <summary>The canonical lower-case name: <c>maglev</c>, <c>ring</c> or <c>modulo</c>.</summary>
    /// <param name="algorithm">The algorithm.</param>
    /// <returns>Its name.</returns>
    public static string ToName(this ShardAlgorithm algorithm) => algorithm switch
    {
        ShardAlgorithm.Maglev => "maglev",
        ShardAlgorithm.RingHash => "ring",
        ShardAlgorithm.Modulo => "modulo",
        _ => throw new ArgumentOutOfRangeException(nameof(algorithm), algorithm, "Unknown shard algorithm."),
    };
}

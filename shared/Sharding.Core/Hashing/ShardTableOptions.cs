namespace Sharding.Hashing;

/// <summary>Sizes for building a <see cref="ShardTable"/>.</summary>
public sealed record ShardTableOptions
{
    /// <summary>Envoy's default Maglev table size, the paper's recommendation (section 5.3).</summary>
    public const int DefaultMaglevTableSize = 65537;

    /// <summary>Envoy's default <c>minimum_ring_size</c>.</summary>
    public const long DefaultMinimumRingSize = 1024;

    /// <summary>Envoy's default <c>maximum_ring_size</c> (8M).</summary>
    public const long DefaultMaximumRingSize = 8 * 1024 * 1024;

    /// <summary>The largest Maglev table accepted: 2^24 entries (64 MiB of entries), far above any useful size.</summary>
    public const int MaxMaglevTableSize = 1 << 24;

    /// <summary>Defaults everywhere.</summary>
    public static ShardTableOptions Default { get; } = new();

    /// <summary>The Maglev table size M.</summary>
    /// <value>65537, as Envoy. Must be prime (every skip then visits every slot) and at most 2^24.</value>
    public int MaglevTableSize { get; init; } = DefaultMaglevTableSize;

    /// <summary>The ring hash minimum ring size.</summary>
    /// <value>1024, as Envoy.</value>
    public long MinimumRingSize { get; init; } = DefaultMinimumRingSize;

    /// <summary>The ring hash maximum ring size.</summary>
    /// <value>8,388,608, as Envoy.</value>
    public long MaximumRingSize { get; init; } = DefaultMaximumRingSize;
}

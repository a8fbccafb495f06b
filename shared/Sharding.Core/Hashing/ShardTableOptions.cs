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

    /// <summary>
    /// The largest Maglev table accepted: 5,000,011, Envoy's own limit (<c>maglev.proto</c>: <c>table_size</c> "limited to 5000011"), so
    /// an Envoy can always be configured with the same table. A snapshot at that size (about 2 bytes per entry with 128 members or
    /// more, 3 from 16,384) stays under the subscribers' 16 MiB message limit; the earlier 2^24 cap made snapshots no sidecar accepts.
    /// </summary>
    public const int MaxMaglevTableSize = 5_000_011;

    /// <summary>Defaults everywhere.</summary>
    public static ShardTableOptions Default { get; } = new();

    /// <summary>The Maglev table size M.</summary>
    /// <value>65537, as Envoy. Must be prime (every skip then visits every slot) and at most 5,000,011 (as in Envoy).</value>
    public int MaglevTableSize { get; init; } = DefaultMaglevTableSize;

    /// <summary>The ring hash minimum ring size.</summary>
    /// <value>1024, as Envoy.</value>
    public long MinimumRingSize { get; init; } = DefaultMinimumRingSize;

    /// <summary>The ring hash maximum ring size.</summary>
    /// <value>8,388,608, as Envoy.</value>
    public long MaximumRingSize { get; init; } = DefaultMaximumRingSize;
}

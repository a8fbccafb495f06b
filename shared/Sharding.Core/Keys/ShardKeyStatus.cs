namespace Sharding.Keys;

/// <summary>The outcome of a shard-key extraction.</summary>
public enum ShardKeyStatus
{
    /// <summary>A rule found a non-empty key; it was written to the destination.</summary>
    Found = 0,

    /// <summary>No rule found a key.</summary>
    NotFound = 1,

    /// <summary>No rule that reads headers, path, query or cookies found a key and a JSON body rule remains: read the body.</summary>
    NeedsBody = 2,

    /// <summary>The JSON body ended before the field was decided: supply more bytes (or answer 413 when the limit is reached).</summary>
    NeedsMoreBody = 3,

    /// <summary>The key is longer than <see cref="ShardKeyExtractor.MaxKeyLength"/>.</summary>
    TooLong = 4,

    /// <summary>The body is not valid JSON; the error says where.</summary>
    MalformedBody = 5,
}

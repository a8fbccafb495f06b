namespace Sharding.Keys;

/// <summary>Where a shard key is read from.</summary>
public enum ShardKeyRuleKind
{
    /// <summary>An HTTP header (gRPC metadata is the same thing). Default rule: header <c>x-shard-key</c>.</summary>
    Header = 0,

    /// <summary>A path segment, located by a template such as <c>/docs/{key}/...</c>.</summary>
    Path = 1,

    /// <summary>A query-string parameter.</summary>
    Query = 2,

    /// <summary>A cookie.</summary>
    Cookie = 3,

    /// <summary>A field of a JSON request body, by a <c>$.account.id</c>-style path (bounded buffering).</summary>
    JsonBody = 4,
}

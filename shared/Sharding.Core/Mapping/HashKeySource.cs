namespace Sharding.Mapping;

/// <summary>What a member's table position is derived from.</summary>
public enum HashKeySource
{
    /// <summary>The member's stable name (pod name): a restarted pod with a new IP keeps its keys. The default.</summary>
    Name = 0,

    /// <summary>The member's <c>ip:port</c>, which is what an Istio ingress hashes for <c>consistentHash</c>.</summary>
    Address = 1,
}

/// <summary>The names of <see cref="HashKeySource"/> in configuration: <c>name</c> and <c>address</c>.</summary>
public static class HashKeySourceNames
{
    /// <summary>Parses <c>name</c> or <c>address</c>, case-insensitively; numbers and other text are not names.</summary>
    /// <param name="text">The name.</param>
    /// <param name="source">The source when the name is known.</param>
    /// <returns>Whether the name is known.</returns>
    public static bool TryParse(ReadOnlySpan<char> text, out HashKeySource source)
    {
        source = text.Equals("address", StringComparison.OrdinalIgnoreCase) ? HashKeySource.Address : HashKeySource.Name;
        return source == HashKeySource.Address || text.Equals("name", StringComparison.OrdinalIgnoreCase);
    }
}

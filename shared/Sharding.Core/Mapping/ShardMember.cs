namespace Sharding.Mapping;

/// <summary>A member of a sharded service: one pod and its sidecar.</summary>
/// <param name="Name">The stable member name (the pod name, e.g. <c>sharded-svc-2</c>); by default also its hash key.</param>
/// <param name="Address">Where its sidecar listens, <c>host:port</c> (e.g. <c>10.0.3.7:15100</c> or <c>127.0.0.1:15101</c>).</param>
/// <param name="Weight">Its weight in the table (1 by default; 0 keeps it a member that owns no keys).</param>
public sealed record ShardMember(string Name, string Address, uint Weight = 1);

/// <summary>What a member's address may be: <c>host:port</c>, an IPv6 host in brackets.</summary>
public static class MemberAddress
{
    private static readonly System.Buffers.SearchValues<char> NotInAuthority = System.Buffers.SearchValues.Create("/?#@\\ \t\r\n");

    /// <summary>
    /// Whether <paramref name="address"/> is <c>host:port</c> with an explicit port (an IPv6 host in brackets): spliced into
    /// <c>scheme://address/path</c>, anything else would fail to parse, replace the path, turn it into a query or a fragment,
    /// add user info, or pick port 80.
    /// </summary>
    /// <param name="address">The address.</param>
    /// <returns>Whether requests can be sent to it.</returns>
    public static bool IsHostPort(string address)
    {
        ArgumentNullException.ThrowIfNull(address);
        if (address.Length == 0 || address.AsSpan().IndexOfAny(NotInAuthority) >= 0 || address.AsSpan().ContainsAnyInRange('\0', '\x1f'))
        {
            return false;
        }

        var colon = address.LastIndexOf(':');
        return colon > 0 && colon < address.Length - 1
            && Uri.TryCreate(string.Concat("http://", address, "/"), UriKind.Absolute, out var uri)
            && uri.UserInfo.Length == 0 && uri.PathAndQuery == "/"
            && int.TryParse(address.AsSpan(colon + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var port)
            && port == uri.Port;
    }
}

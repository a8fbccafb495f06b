using System.Diagnostics.CodeAnalysis;
using Sharding.Mapping;

namespace Sharding.Client;

/// <summary>
/// Which member owns a shard key, for callers that do not speak HTTP through <see cref="ShardRoutingHandler"/>: the client
/// library's lookup API over the shard map it follows from the control plane.
/// </summary>
/// <remarks>
/// The map only moves to newer generations; while the control plane is unreachable the last map keeps answering (static
/// stability). Before the first map, <see cref="OwnerOf(ReadOnlySpan{char})"/> answers <see cref="ShardLookupStatus.NoMap"/>:
/// send to the Service address then, its sidecars route.
/// </remarks>
public interface IShardRouter
{
    /// <summary>The sharded service followed.</summary>
    string Service { get; }

    /// <summary>The current generation, or -1 before the first map.</summary>
    long Generation { get; }

    /// <summary>The current map, or null before the first one.</summary>
    ShardMap? CurrentMap { get; }

    /// <summary>The subscription state.</summary>
    ShardRouterState State { get; }

    /// <summary>The last subscription error, if any (e.g. the control plane's NOT_FOUND message for an unknown service).</summary>
    string? LastError { get; }

    /// <summary>Raised after a newer map became current (on the subscription's loop: keep handlers short).</summary>
    event EventHandler<ShardMapChangedEventArgs>? MapChanged;

    /// <summary>The owner of <paramref name="key"/> on the current map.</summary>
    /// <param name="key">The shard key.</param>
    /// <returns>The owner and generation, or why there is none.</returns>
    ShardLookup OwnerOf(ReadOnlySpan<char> key);

    /// <summary>Waits for the first map (returns at once when one is held).</summary>
    /// <remarks>
    /// It completes when the map becomes current, which can be just before <see cref="MapChanged"/> is raised for it: subscribe to
    /// the event before waiting and expect it for the map returned too.
    /// </remarks>
    /// <param name="cancellationToken">Cancels the wait (use a timeout source to bound it).</param>
    /// <returns>The current map.</returns>
    /// <exception cref="ShardServiceNotFoundException">The control plane does not know the service.</exception>
    ValueTask<ShardMap> WaitForMapAsync(CancellationToken cancellationToken = default);
}

/// <summary>The result of <see cref="IShardRouter.OwnerOf(ReadOnlySpan{char})"/>.</summary>
/// <param name="Status">Whether an owner was found.</param>
/// <param name="Member">The owner, when found.</param>
/// <param name="Generation">The generation of the map that answered (-1 without a map).</param>
public readonly record struct ShardLookup(ShardLookupStatus Status, ShardMember? Member, long Generation)
{
    /// <summary>Whether <see cref="Member"/> is the owner.</summary>
    [MemberNotNullWhen(true, nameof(Member), nameof(MemberName), nameof(Address))]
    public bool Found => Status == ShardLookupStatus.Found;

    /// <summary>The owner's member (pod) name, when found.</summary>
    public string? MemberName => Member?.Name;

    /// <summary>The owner's sidecar address (<c>host:port</c>), when found.</summary>
    public string? Address => Member?.Address;
}

/// <summary>Why a lookup did or did not find an owner.</summary>
public enum ShardLookupStatus
{
    /// <summary>The owner was found.</summary>
    Found = 0,

    /// <summary>No map has arrived yet: send to the Service address.</summary>
    NoMap = 1,

    /// <summary>The map has no member that owns keys: send to the Service address.</summary>
    EmptyMap = 2,
}

/// <summary>The state of a router's subscription to the control plane (the <c>sharding.client.subscription.state</c> gauge).</summary>
public enum ShardRouterState
{
    /// <summary>Not subscribed yet (the first stream is being opened).</summary>
    Starting = 0,

    /// <summary>A stream is open and has delivered at least one message.</summary>
    Connected = 1,

    /// <summary>The stream failed; reconnecting with backoff, the last map (if any) keeps serving.</summary>
    Reconnecting = 2,

    /// <summary>The control plane answered NOT_FOUND: it does not know the service. Retried with backoff in case it appears.</summary>
    ServiceNotFound = 3,

    /// <summary>Stopped with the host; the last map still answers.</summary>
    Stopped = 4,
}

/// <summary>A newer map became current.</summary>
public sealed class ShardMapChangedEventArgs : EventArgs
{
    /// <summary>Creates the arguments.</summary>
    /// <param name="map">The new map.</param>
    /// <param name="previous">The map it replaced, if any.</param>
    public ShardMapChangedEventArgs(ShardMap map, ShardMap? previous)
    {
        Map = map;
        Previous = previous;
    }

    /// <summary>The new current map.</summary>
    public ShardMap Map { get; }

    /// <summary>The map it replaced, or null for the first one.</summary>
    public ShardMap? Previous { get; }
}

/// <summary>The control plane does not know the sharded service (it answered NOT_FOUND).</summary>
public sealed class ShardServiceNotFoundException : Exception
{
    /// <summary>Creates the exception.</summary>
    public ShardServiceNotFoundException()
        : this("unknown sharded service")
    {
    }

    /// <summary>Creates the exception.</summary>
    /// <param name="message">The message.</param>
    public ShardServiceNotFoundException(string message)
        : base(message)
    {
        Service = string.Empty;
    }

    /// <summary>Creates the exception.</summary>
    /// <param name="message">The message.</param>
    /// <param name="innerException">The cause.</param>
    public ShardServiceNotFoundException(string message, Exception innerException)
        : base(message, innerException)
    {
        Service = string.Empty;
    }

    /// <summary>Creates the exception for a service.</summary>
    /// <param name="service">The service.</param>
    /// <param name="detail">The control plane's message.</param>
    /// <param name="innerException">The cause.</param>
    public ShardServiceNotFoundException(string service, string detail, Exception? innerException)
        : base($"The control plane does not know the sharded service '{service}': {detail}. Check the service name given to "
            + "AddShardRouting/AddShardRouter and the control plane's membership.", innerException)
    {
        Service = service;
    }

    /// <summary>The service that was asked for.</summary>
    public string Service { get; }
}

using System.Net;
using System.Net.Sockets;

namespace Sharding.Net;

/// <summary>Listen addresses and the client addresses a dual-stack listener reports (the sidecar's and the control plane's).</summary>
public static class ClientAddress
{
    /// <summary>
    /// The address to bind for a configured listen address: <c>::</c> is dual-stack (IPv4 and IPv6 clients), or
    /// <c>0.0.0.0</c> where the kernel has no IPv6 (binding <c>::</c> fails there).
    /// </summary>
    public static IPAddress Bindable(IPAddress address, bool osSupportsIPv6) =>
        address.Equals(IPAddress.IPv6Any) && !osSupportsIPv6 ? IPAddress.Any : address;

    /// <inheritdoc cref="Bindable(IPAddress, bool)"/>
    public static IPAddress Bindable(IPAddress address) => Bindable(address, Socket.OSSupportsIPv6);

    /// <summary>
    /// The client's address as the app and the logs should see it: a dual-stack listener reports an IPv4 client as
    /// <c>::ffff:a.b.c.d</c>, which is <c>a.b.c.d</c> (in <c>x-forwarded-for</c> and in loopback checks alike).
    /// </summary>
    public static IPAddress? Of(IPAddress? address) => address is { IsIPv4MappedToIPv6: true } ? address.MapToIPv4() : address;

    /// <inheritdoc cref="Of(IPAddress?)"/>
    public static IPAddress? Of(EndPoint? endPoint) => endPoint is IPEndPoint ip ? Of(ip.Address) : null;
}

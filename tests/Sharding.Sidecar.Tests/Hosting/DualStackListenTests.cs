using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Sharding.Net;
using Sharding.Sidecar.Hosting;
using Sharding.Sidecar.Tests.FastPath;

namespace Sharding.Sidecar.Tests.Hosting;

/// <summary>
/// The sidecar's default listen address is <c>::</c>: one default serves IPv4, IPv6 and dual-stack clusters. An IPv4 client
/// of the dual-stack port is <c>a.b.c.d</c> to the app and to the loopback checks, never <c>::ffff:a.b.c.d</c>.
/// </summary>
public sealed class DualStackListenTests
{
    [Theory]
    [InlineData("::", true, "::")]
    [InlineData("::", false, "0.0.0.0")]
    [InlineData("0.0.0.0", true, "0.0.0.0")]
    [InlineData("127.0.0.1", false, "127.0.0.1")]
    [InlineData("fd00::7", true, "fd00::7")]
    public void Bindable_FallsBackToIPv4AnyOnlyForTheAnyAddressOnAKernelWithoutIPv6(string configured, bool ipv6, string bound) =>
        Assert.Equal(IPAddress.Parse(bound), ClientAddress.Bindable(IPAddress.Parse(configured), ipv6));

    [Theory]
    [InlineData("::ffff:10.1.2.3", "10.1.2.3")]
    [InlineData("::ffff:127.0.0.1", "127.0.0.1")]
    [InlineData("10.1.2.3", "10.1.2.3")]
    [InlineData("::1", "::1")]
    [InlineData("fd00::7", "fd00::7")]
    public void Of_UnmapsIPv4MappedAddressesOnly(string remote, string seen)
    {
        Assert.Equal(IPAddress.Parse(seen), ClientAddress.Of(IPAddress.Parse(remote)));
        Assert.Equal(IPAddress.Parse(seen), ClientAddress.Of(new IPEndPoint(IPAddress.Parse(remote), 5)));
    }

    /// <summary>
    /// On the default address (no ListenAddress set): IPv4 and IPv6 clients reach the data port, on the fast path and on the
    /// full path (an event-stream request is handed to Kestrel), and the app sees each client's own address; an IPv4 caller
    /// of the admin port passes the ownership API's loopback check.
    /// </summary>
    [Theory]
    [InlineData("")]
    [InlineData("Accept: text/event-stream\r\n")]
    public async Task DefaultListenAddress_ServesBothFamilies_AndTheAppSeesPlainIPv4Addresses(string extra)
    {
        await using var app = FakeApp.Start();
        await using var solo = await SoloSidecar.StartAsync(app.Port, new Dictionary<string, string?>
        {
            ["Sidecar:ListenAddress"] = null, // the default
            ["Sidecar:AdminListenAddress"] = null,
        });
        var options = solo.Sidecar.Services.GetRequiredService<IOptions<SidecarOptions>>().Value;
        Assert.Equal("::", options.ListenAddress);
        Assert.Equal("::", options.AdminListenAddress);
        var data = solo.Sidecar.Services.GetRequiredService<SidecarEndpoints>().Data!.IPEndPoint!.Address;
        Assert.Equal(Socket.OSSupportsIPv6 ? IPAddress.IPv6Any : IPAddress.Any, data);

        var clients = Socket.OSSupportsIPv6 ? new[] { IPAddress.Loopback, IPAddress.IPv6Loopback } : [IPAddress.Loopback];
        foreach (var address in clients)
        {
            using var client = await RawClient.ConnectAsync(solo.Port, address);
            await client.SendAsync("GET /a HTTP/1.1\r\nHost: a.test\r\nx-shard-key: k1\r\n" + extra + "\r\n");
            Assert.Equal(200, (await client.ReadResponseAsync()).Status);
            var seen = await app.NextRequestAsync();
            Assert.Equal(address.ToString(), seen.Header("x-forwarded-for"));
        }

        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        using var owner = await http.GetAsync($"http://127.0.0.1:{solo.Sidecar.AdminPort}/v1/ownership?key=k1");
        Assert.Equal(HttpStatusCode.OK, owner.StatusCode);
        Assert.Contains("\"pod-0\"", await owner.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }
}

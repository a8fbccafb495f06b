using System.Net.Sockets;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Configuration;
using Sharding.Sidecar.Hosting;
using Sharding.Sidecar.Tests.FastPath;

namespace Sharding.Sidecar.Tests.Hosting;

/// <summary>
/// Kestrel's limits come from configuration (<c>Kestrel:Limits:*</c>, as in any ASP.NET Core host) over the sidecar's
/// defaults, on both paths; a value Kestrel refuses, a key it does not have, or the response rate (the sidecar's own
/// setting) stops the start with a message that names it.
/// </summary>
public sealed class KestrelLimitsConfigurationTests
{
    private static KestrelServerLimits Bind(params (string Key, string Value)[] settings)
    {
        var configuration = new ConfigurationBuilder()
            .AddInMemoryCollection(settings.Select(static s => new KeyValuePair<string, string?>(s.Key, s.Value)))
            .Build();
        var limits = new KestrelServerLimits { MaxRequestBodySize = null };
        limits.Http2.MaxStreamsPerConnection = 250;
        SidecarHost.BindKestrelLimits(configuration, limits);
        return limits;
    }

    [Fact]
    public void Configured_limits_are_bound_over_the_sidecars_defaults_and_the_rest_stay()
    {
        var limits = Bind(
            ("Kestrel:Limits:KeepAliveTimeout", "00:00:07"),
            ("Kestrel:Limits:MaxConcurrentConnections", "1000"),
            ("Kestrel:Limits:MaxRequestHeaderCount", "40"),
            ("Kestrel:Limits:Http2:MaxStreamsPerConnection", "500"),
            ("Kestrel:Limits:MinRequestBodyDataRate:BytesPerSecond", "100"),
            ("Kestrel:Limits:MinRequestBodyDataRate:GracePeriod", "00:00:10"));

        Assert.Equal(TimeSpan.FromSeconds(7), limits.KeepAliveTimeout);
        Assert.Equal(1000, limits.MaxConcurrentConnections);
        Assert.Equal(40, limits.MaxRequestHeaderCount);
        Assert.Equal(500, limits.Http2.MaxStreamsPerConnection);
        Assert.Equal((100, TimeSpan.FromSeconds(10)), (limits.MinRequestBodyDataRate!.BytesPerSecond, limits.MinRequestBodyDataRate.GracePeriod));
        Assert.Null(limits.MaxRequestBodySize); // the sidecar's default, not configured
        Assert.Equal(new KestrelServerLimits().RequestHeadersTimeout, limits.RequestHeadersTimeout);
    }

    [Fact]
    public void A_request_body_rate_of_zero_turns_the_minimum_off_and_a_grace_under_a_second_is_refused()
    {
        Assert.Null(Bind(("Kestrel:Limits:MinRequestBodyDataRate:BytesPerSecond", "0")).MinRequestBodyDataRate);
        var failure = Assert.Throws<InvalidOperationException>(() => Bind(
            ("Kestrel:Limits:MinRequestBodyDataRate:BytesPerSecond", "100"), ("Kestrel:Limits:MinRequestBodyDataRate:GracePeriod", "00:00:00.5")));
        Assert.StartsWith("Kestrel:Limits is not valid", failure.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("Kestrel:Limits:KeepAliveTimeout", "-00:00:01", "Kestrel:Limits is not valid")]
    [InlineData("Kestrel:Limits:MaxRequestLineSize", "0", "Kestrel:Limits is not valid")]
    [InlineData("Kestrel:Limits:MaxRequestHeaderCount", "lots", "Kestrel:Limits is not valid")]
    [InlineData("Kestrel:Limits:KeepAliveTimout", "00:00:05", "KeepAliveTimout")]
    [InlineData("Kestrel:Limits:MinResponseDataRate:BytesPerSecond", "100", "Sidecar:MinResponseDataRate")]
    public void A_value_that_cannot_work_is_refused_naming_the_setting(string key, string value, string named)
    {
        var failure = Assert.Throws<InvalidOperationException>(() => Bind((key, value)));
        Assert.Contains(named, failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_configured_keep_alive_timeout_closes_an_idle_fast_path_connection()
    {
        await using var app = FakeApp.Start();
        await using var solo = await SoloSidecar.StartAsync(app.Port, new Dictionary<string, string?> { ["Kestrel:Limits:KeepAliveTimeout"] = "00:00:01" });
        using var client = await RawClient.ConnectAsync(solo.Port);

        await client.SendAsync("GET /one HTTP/1.1\r\nHost: app.test\r\nx-shard-key: k1\r\n\r\n");
        Assert.Equal(200, (await client.ReadResponseAsync()).Status);

        // Kestrel's default is 130 s: closed within a few seconds only because the configured second holds.
        Assert.True(await client.ClosesAsync(TimeSpan.FromSeconds(6)), "the idle connection stayed open");
    }

    [Fact]
    public async Task A_bad_limit_stops_the_start()
    {
        await using var app = FakeApp.Start();
        var failure = await Assert.ThrowsAsync<InvalidOperationException>(() =>
            SoloSidecar.StartAsync(app.Port, new Dictionary<string, string?> { ["Kestrel:Limits:MaxRequestLineSize"] = "0" }));
        Assert.Contains("Kestrel:Limits is not valid", failure.Message, StringComparison.Ordinal);
    }
}

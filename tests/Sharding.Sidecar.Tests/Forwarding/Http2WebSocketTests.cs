using System.Net;
using Sharding.Sidecar.Forwarding;

namespace Sharding.Sidecar.Tests.Forwarding;

public sealed class Http2WebSocketTests
{
    [Fact]
    public void ExpectedAccept_IsRfc6455sExample()
    {
        // RFC 6455 §1.3.
        Assert.Equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", Http2WebSocket.ExpectedAccept("dGhlIHNhbXBsZSBub25jZQ=="));
    }

    [Fact]
    public void AddUpgradeHeaders_SendsAFreshKeyInPlaceOfAnyFromTheClient()
    {
        using var first = new HttpRequestMessage(HttpMethod.Get, "http://app/ws");
        first.Headers.TryAddWithoutValidation("sec-websocket-key", "from-the-client");
        first.Headers.TryAddWithoutValidation("sec-websocket-version", "13");
        var key = Http2WebSocket.AddUpgradeHeaders(first);
        using var second = new HttpRequestMessage(HttpMethod.Get, "http://app/ws");
        var other = Http2WebSocket.AddUpgradeHeaders(second);

        Assert.Equal([key], first.Headers.GetValues("sec-websocket-key"));
        Assert.Equal(16, Convert.FromBase64String(key).Length);
        Assert.NotEqual(key, other);
        Assert.Equal(["13"], first.Headers.GetValues("sec-websocket-version"));
        Assert.Equal(["13"], second.Headers.GetValues("sec-websocket-version"));
        Assert.Equal(["websocket"], first.Headers.GetValues("upgrade"));
        Assert.Equal(["Upgrade"], first.Headers.GetValues("connection"));
    }

    [Theory]
    [InlineData("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", true)]
    [InlineData("s3pPLMBiTxaQ9kYGzzhZRbK+xOo", false)]
    [InlineData(null, false)]
    public void IsAccepted_OnlyForTheKeysAcceptValue(string? accept, bool expected)
    {
        using var response = new HttpResponseMessage(HttpStatusCode.SwitchingProtocols);
        if (accept is not null)
        {
            response.Headers.TryAddWithoutValidation("sec-websocket-accept", accept);
        }

        Assert.Equal(expected, Http2WebSocket.IsAccepted(response, "dGhlIHNhbXBsZSBub25jZQ=="));
    }
}

using Microsoft.AspNetCore.Http;
using Sharding.Sidecar.Forwarding;

namespace Sharding.Sidecar.Tests.Forwarding;

/// <summary>The full path's header copy reads Connection and TE tokens as the fast path's parser does (FastPathParserTests).</summary>
public sealed class HeaderRulesTests
{
    [Fact]
    public void CopyRequestHeaders_TokensWithParameters_ReadAsOnTheFastPath()
    {
        var context = new DefaultHttpContext();
        context.Request.Headers["TE"] = "deflate, trailers;q=0.5";
        context.Request.Headers["Connection"] = "close, X-Hop";
        context.Request.Headers["X-Hop"] = "1";
        context.Request.Headers["X-Keep"] = "2";
        context.Request.Headers["x-sharding-owner"] = "spoofed";
        using var upstream = new HttpRequestMessage();

        HeaderRules.CopyRequestHeaders(context.Request, upstream, isUpgrade: false);

        Assert.Equal(["trailers"], upstream.Headers.GetValues("te"));
        Assert.Equal(["2"], upstream.Headers.GetValues("X-Keep"));
        Assert.False(upstream.Headers.Contains("X-Hop"));
        Assert.False(upstream.Headers.Contains("Connection"));
        Assert.False(upstream.Headers.Contains("x-sharding-owner"));
    }

    [Theory]
    [InlineData("trailers", true)]
    [InlineData("deflate, Trailers ; q=0.5", true)]
    [InlineData("gzip;q=1, trailers", true)]
    [InlineData("trailersx, deflate", false)]
    [InlineData("", false)]
    public void HeaderTokens_IgnoreParametersAndCase(string value, bool expected) =>
        Assert.Equal(expected, HeaderTokens.Contains(value, "trailers"));
}

using System.Collections.Immutable;
using System.Text;
using Sharding.Keys;

namespace Sharding.Sidecar.Tests.Keys;

/// <summary>The key rules over <see cref="HttpRequestMessageShardKeyRequest"/> (the client library's adapter; the sidecar's
/// HttpContext adapter runs the same extractor in the routing tests).</summary>
public sealed class ShardKeyExtractorTests
{
    [Theory]
    [InlineData("", true)]
    [InlineData("application/json", true)]
    [InlineData(" APPLICATION/JSON ; charset=utf-8", true)]
    [InlineData("application/vnd.api+json", true)]
    [InlineData("text/json", true)]
    [InlineData("application/grpc", false)]
    [InlineData("application/grpc+json", false)] // gRPC frames, whatever the message encoding
    [InlineData("multipart/form-data; boundary=x", false)]
    [InlineData("application/x-www-form-urlencoded", false)]
    [InlineData("text/plain", false)]
    [InlineData("application/jsonx", false)]
    [InlineData("application/json-seq", false)]
    public void ReadsBodyOf_JsonTypesAndNoTypeOnly(string contentType, bool read) =>
        Assert.Equal(read, ShardKeyExtractor.ReadsBodyOf(contentType));

    private static ShardKeyExtractor Extractor(params string[] rules) =>
        new(new ShardKeyPolicy { Rules = [.. rules.Select(ShardKeyRule.Parse)] });

    private static (ShardKeyStatus Status, string Key) Extract(ShardKeyExtractor extractor, HttpRequestMessage message)
    {
        var request = new HttpRequestMessageShardKeyRequest(message);
        Span<char> key = stackalloc char[ShardKeyExtractor.MaxKeyLength];
        var status = extractor.TryExtract(ref request, key, out var length);
        return (status, new string(key[..length]));
    }

    [Theory]
    [InlineData("header:x-shard-key", "http://h/a", "x-shard-key", "  acc-1 ", "acc-1")]
    [InlineData("header:X-Tenant", "http://h/a", "x-tenant", "t9", "t9")]
    [InlineData("path:/docs/{key}", "http://h/docs/d%2F1/edit", null, null, "d/1")]
    [InlineData("path:/docs/{key}/edit", "http://h/DOCS/d-2/edit", null, null, "d-2")]
    [InlineData("path:/v1/*/rooms/{key}", "http://h/v1/eu/rooms/r%C3%A9", null, null, "ré")]
    [InlineData("path:/{tenant}/{key}/...", "http://h/acme/k7/x/y", null, null, "k7")]
    [InlineData("query:tenant", "http://h/a?x=1&tenant=a+b%21&tenant=second", null, null, "a b!")]
    [InlineData("cookie:sid", "http://h/a", "cookie", "a=1; sid=\"s-1\"; b=2", "s-1")]
    [InlineData("cookie:sid", "http://h/a", "cookie", "sidx=1;sid=s-2", "s-2")]
    public void TryExtract_EachRule_FindsTheKey(string rule, string url, string? header, string? value, string expected)
    {
        using var message = new HttpRequestMessage(HttpMethod.Get, url);
        if (header is not null)
        {
            message.Headers.TryAddWithoutValidation(header, value);
        }

        var (status, key) = Extract(Extractor(rule), message);

        Assert.Equal(ShardKeyStatus.Found, status);
        Assert.Equal(expected, key);
    }

    [Theory]
    [InlineData("header:x-shard-key", "http://h/a")]
    [InlineData("path:/docs/{key}", "http://h/files/1")]
    [InlineData("path:/docs/{key}", "http://h/docs/")]
    [InlineData("query:tenant", "http://h/a?tenant=&x=1")]
    [InlineData("query:tenant", "http://h/a?tenants=1")]
    [InlineData("cookie:sid", "http://h/a")]
    public void TryExtract_Missing_IsNotFound(string rule, string url)
    {
        using var message = new HttpRequestMessage(HttpMethod.Get, url);
        Assert.Equal(ShardKeyStatus.NotFound, Extract(Extractor(rule), message).Status);
    }

    [Fact]
    public void TryExtract_RulesInOrder_FirstHitWins_BodyRulesLast()
    {
        var extractor = Extractor("json:$.id", "query:q", "header:x-k");
        using var message = new HttpRequestMessage(HttpMethod.Get, "http://h/a?q=from-query");
        message.Headers.Add("x-k", "from-header");
        Assert.Equal((ShardKeyStatus.Found, "from-query"), Extract(extractor, message));

        using var none = new HttpRequestMessage(HttpMethod.Post, "http://h/a");
        Assert.Equal(ShardKeyStatus.NeedsBody, Extract(extractor, none).Status);
        Assert.True(extractor.HasBodyRule);
        Assert.Equal("json:$.id, query:q, header:x-k", extractor.RulesDescription);
    }

    [Fact]
    public void TryExtract_TooLongKey_IsTooLong()
    {
        using var message = new HttpRequestMessage(HttpMethod.Get, "http://h/a");
        message.Headers.Add("x-shard-key", new string('k', ShardKeyExtractor.MaxKeyLength + 1));
        Assert.Equal(ShardKeyStatus.TooLong, Extract(Extractor("header:x-shard-key"), message).Status);
    }

    [Theory]
    [InlineData("{\"account\":{\"id\":\"a-1\"}}", "a-1")]
    [InlineData("{\"x\":[{\"account\":{\"id\":\"wrong\"}}],\"account\":{\"name\":\"n\",\"id\":\"a-2\"}}", "a-2")]
    [InlineData("{\"account\":{\"id\":42}}", "42")]
    [InlineData("{\"account\":{\"id\":\"caf\\u00e9\"}}", "café")]
    public void TryExtractFromBody_FindsNestedField(string json, string expected)
    {
        var extractor = Extractor("json:$.account.id");
        var key = new char[ShardKeyExtractor.MaxKeyLength];
        var status = extractor.TryExtractFromBody(Encoding.UTF8.GetBytes(json), isFinalBlock: true, key, out var length, out _);
        Assert.Equal(ShardKeyStatus.Found, status);
        Assert.Equal(expected, new string(key, 0, length));
    }

    [Fact]
    public void TryExtractFromBody_StopsAtTheField_WithoutTheRest()
    {
        var extractor = Extractor("json:$.id");
        var key = new char[ShardKeyExtractor.MaxKeyLength];
        var partial = Encoding.UTF8.GetBytes("{\"id\":\"k-1\",\"big\":[1,2,3,");
        Assert.Equal(ShardKeyStatus.Found, extractor.TryExtractFromBody(partial, isFinalBlock: false, key, out var length, out _));
        Assert.Equal("k-1", new string(key, 0, length));

        var early = Encoding.UTF8.GetBytes("{\"other\":\"x\",\"i");
        Assert.Equal(ShardKeyStatus.NeedsMoreBody, extractor.TryExtractFromBody(early, isFinalBlock: false, key, out _, out _));
    }

    [Theory]
    [InlineData("{\"id\": tru", "the body is not valid JSON")]
    [InlineData("{\"id\" \"x\"}", "the body is not valid JSON")]
    public void TryExtractFromBody_Malformed_SaysWhy(string json, string expected)
    {
        var extractor = Extractor("json:$.id");
        var key = new char[ShardKeyExtractor.MaxKeyLength];
        var status = extractor.TryExtractFromBody(Encoding.UTF8.GetBytes(json), isFinalBlock: true, key, out _, out var error);
        Assert.Equal(ShardKeyStatus.MalformedBody, status);
        Assert.StartsWith(expected, error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("")]
    [InlineData("[1,2]")]
    [InlineData("{\"id\":{\"nested\":1}}")]
    [InlineData("{\"id\":null}")]
    [InlineData("{\"other\":{\"id\":\"deeper\"}}")]
    public void TryExtractFromBody_NoSuchField_IsNotFound(string json)
    {
        var extractor = Extractor("json:$.id");
        var key = new char[ShardKeyExtractor.MaxKeyLength];
        Assert.Equal(ShardKeyStatus.NotFound, extractor.TryExtractFromBody(Encoding.UTF8.GetBytes(json), isFinalBlock: true, key, out _, out _));
    }

    [Fact]
    public void Extractor_IsReusedAcrossPolicies_ByValue()
    {
        var a = new ShardKeyPolicy { Rules = ImmutableArray.Create(ShardKeyRule.Parse("query:t")) };
        var b = new ShardKeyPolicy { Rules = ImmutableArray.Create(ShardKeyRule.Parse("query:t")) };
        Assert.Equal(a, b);
        Assert.Same(a, new ShardKeyExtractor(a).Policy);
    }
}

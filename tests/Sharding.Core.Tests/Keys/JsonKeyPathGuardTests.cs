using System.Collections.Immutable;
using System.Text;
using Sharding.Keys;

namespace Sharding.Core.Tests.Keys;

/// <summary>A member on a key path twice in its object is found wherever it is, however the body is split into blocks.</summary>
public sealed class JsonKeyPathGuardTests
{
    private static ImmutableArray<byte[]> Path(string path) => [.. path[2..].Split('.').Select(Encoding.UTF8.GetBytes)];

    private static JsonKeyPathGuard Guard(params string[] paths) => new(paths.Select(Path));

    /// <summary>The guard's verdict fed as one block, and fed byte by byte; both must agree.</summary>
    private static string? Scan(string json, params string[] paths)
    {
        var bytes = Encoding.UTF8.GetBytes(json);
        var whole = Guard(paths);
        Assert.Equal(whole.Feed(bytes), whole.Duplicate is null);

        var split = Guard(paths);
        foreach (var b in bytes)
        {
            split.Feed([b]);
        }

        Assert.Equal(whole.Duplicate, split.Duplicate);
        return whole.Duplicate;
    }

    [Theory]
    [InlineData("""{"account":{"id":"a"},"account":{"id":"b"}}""", "$.account")]
    [InlineData("""{"account":{"id":"a","id":"b"}}""", "$.account.id")]
    [InlineData("""{"account":{"name":"x"},"account":{"id":"b"}}""", "$.account")] // the first has no key, the last does
    [InlineData("""{"account":"x","account":{"id":"b"}}""", "$.account")]
    [InlineData("""{"account":{"id":"a"},"\u0061ccount":{"id":"b"}}""", "$.account")] // an escaped name is the same name
    [InlineData("""{"account":{"id":"a","\u0069\u0064":"b"}}""", "$.account.id")]
    [InlineData("""{ "account" : { "id" : 1 } , "pad" : [1,2,{"a":"}"}], "account" : 2 }""", "$.account")]
    [InlineData("""{"account":{"deep":{"x":[{"id":1}]},"id":"a","id":"b"}}""", "$.account.id")]
    public void DuplicateOnThePath_IsFound(string json, string duplicate)
    {
        Assert.Equal(duplicate, Scan(json, "$.account.id"));
    }

    [Theory]
    [InlineData("""{"account":{"id":"a"}}""")]
    [InlineData("""{"account":{"id":"a"},"other":{"account":{"id":"b"}}}""")] // the same names elsewhere are not on the path
    [InlineData("""{"account":{"id":"a"},"list":[{"account":1},{"account":2}]}""")]
    [InlineData("""{"account":{"id":"a"},"note":"\"account\": {\"id\": \"b\"}"}""")] // inside a string value
    [InlineData("""{"id":"x","account":{"id":"a"},"ID":"y"}""")]
    [InlineData("""{"accountX":1,"account":{"id":"a"},"acc":2}""")]
    [InlineData("""[{"account":{"id":"a"}},{"account":{"id":"b"}}]""")] // not an object: the key rule finds nothing
    [InlineData("""{"account":{"id":"a"}} {"account":{"id":"b"}}""")] // after the document: the app's to reject
    [InlineData("""{"account":{"id":"\ud83d\ude00"},"x":"\ud83d\ude00 \\ \""}""")]
    public void NoDuplicateOnThePath_PassesWhole(string json)
    {
        Assert.Null(Scan(json, "$.account.id"));
    }

    [Fact]
    public void EveryBodyRulesPathIsGuarded()
    {
        Assert.Equal("$.tenant", Scan("""{"tenant":"t","account":{"id":"a"},"tenant":"u"}""", "$.account.id", "$.tenant"));
        Assert.Null(Scan("""{"tenant":"t","account":{"id":"a"}}""", "$.account.id", "$.tenant"));
    }

    [Fact]
    public void NonAsciiNames_CompareAsUtf8_EscapedOrNot()
    {
        Assert.Equal("$.kunde", Scan("""{"kunde":1,"kunde":2}""", "$.kunde"));
        Assert.Equal("$.clé", Scan("""{"clé":1,"cl\u00e9":2}""", "$.clé"));
        Assert.Null(Scan("""{"clé":1,"cle":2}""", "$.clé"));
    }

    [Fact]
    public void AHugeStringValue_NeedsNoMemory_AndHidesNothing()
    {
        var guard = Guard("$.account.id");
        Assert.True(guard.Feed("{\"account\":{\"id\":\"a\"},\"blob\":\""u8));
        var chunk = Encoding.ASCII.GetBytes(new string('x', 64 * 1024) + "\\\"{\\\"account\\\":1");
        for (var i = 0; i < 256; i++) // 16 MiB of one string
        {
            Assert.True(guard.Feed(chunk));
        }

        Assert.True(guard.Feed("\","u8));
        Assert.False(guard.Feed("""  "account" : {}}"""u8));
        Assert.Equal("$.account", guard.Duplicate);
        Assert.Contains("$.account more than once", guard.Message, StringComparison.Ordinal);
    }
}

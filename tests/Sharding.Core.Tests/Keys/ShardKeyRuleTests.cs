using Sharding.Keys;

namespace Sharding.Core.Tests.Keys;

public sealed class ShardKeyRuleTests
{
    [Theory]
    [InlineData("header:X-Shard-Key", ShardKeyRuleKind.Header, "x-shard-key")]
    [InlineData("path:/docs/{key}/edit", ShardKeyRuleKind.Path, "/docs/{key}/edit")]
    [InlineData("query:tenant", ShardKeyRuleKind.Query, "tenant")]
    [InlineData("cookie:session", ShardKeyRuleKind.Cookie, "session")]
    [InlineData("json:$.account.id", ShardKeyRuleKind.JsonBody, "$.account.id")]
    [InlineData(" Header : x-a ", ShardKeyRuleKind.Header, "x-a")]
    public void Parse_ValidText_RoundTrips(string text, ShardKeyRuleKind kind, string argument)
    {
        var rule = ShardKeyRule.Parse(text);

        Assert.Equal(kind, rule.Kind);
        Assert.Equal(argument, rule.Argument);
        Assert.Equal(rule, ShardKeyRule.Parse(rule.ToString()));
    }

    [Theory]
    [InlineData("x-shard-key", "kind:argument")]
    [InlineData("header:", "kind:argument")]
    [InlineData("body:$.a", "unknown kind 'body'")]
    [InlineData("path:docs/{key}", "starts with /")]
    [InlineData("path:/docs/id", "{key}")]
    [InlineData("path:/docs/doc-{key}", "whole segment")]      // the extractor compares whole segments: never a key
    [InlineData("path:/docs/{key}.json", "whole segment")]
    [InlineData("path:/docs/**/{key}", "whole segment")]       // a rest wildcard ends the template: never a key
    [InlineData("json:account.id", "$.account.id")]
    public void TryParse_InvalidText_SaysWhy(string text, string expected)
    {
        Assert.False(ShardKeyRule.TryParse(text, out _, out var error));
        Assert.Contains(expected, error, StringComparison.Ordinal);
    }

    [Fact]
    public void Policy_Default_IsHeaderRejectWithDescribedRules()
    {
        var policy = ShardKeyPolicy.Default;

        Assert.Equal(NoKeyAction.Reject, policy.NoKey);
        Assert.Equal("header:x-shard-key", policy.DescribeRules());
        Assert.Equal(policy, new ShardKeyPolicy { Rules = [ShardKeyRule.Parse("header:x-shard-key")] });
    }
}

using Sharding.Testing;

namespace Sharding.Client.Tests.Hosting;

/// <summary>docs/client.md's options table names exactly the keys of <see cref="ShardRoutingOptions"/>.</summary>
public sealed class OptionsDocumentationTests
{
    [Fact]
    public void OptionsTable_NamesEveryRoutingOption()
    {
        var documented = OptionsCatalogue.Documented("docs/client.md", "Registration");
        var keys = OptionsCatalogue.Keys(typeof(ShardRoutingOptions), section: null);
        OptionsCatalogue.AssertSame(keys, documented);
    }
}

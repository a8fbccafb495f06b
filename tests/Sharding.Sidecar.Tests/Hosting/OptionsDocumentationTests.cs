using Sharding.Sidecar.Hosting;
using Sharding.Testing;

namespace Sharding.Sidecar.Tests.Hosting;

/// <summary>docs/sidecar.md's options table names exactly the keys of <see cref="SidecarOptions"/>.</summary>
public sealed class OptionsDocumentationTests
{
    [Fact]
    public void OptionsTable_NamesEverySidecarOption()
    {
        var documented = OptionsCatalogue.Documented("docs/sidecar.md", "Options (section `Sidecar`");
        var keys = OptionsCatalogue.Keys(typeof(SidecarOptions), section: null);
        OptionsCatalogue.AssertSame(keys, documented);
    }
}

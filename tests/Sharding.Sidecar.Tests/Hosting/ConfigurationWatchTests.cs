using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Configuration.Json;
using Sharding.Sidecar.Hosting;

namespace Sharding.Sidecar.Tests.Hosting;

public sealed class ConfigurationWatchTests
{
    [Fact]
    public async Task AppSettings_AreNotWatched()
    {
        // A reloadOnChange JSON source puts a watcher on the working directory; the sidecar must not have one.
        var app = SidecarHost.Build(["--Sidecar:PodName=pod-0", "--Sidecar:ForwardingSecret=0123456789abcdef-secret", "--Sidecar:MapFile=map.yaml"]);
        try
        {
            var json = ((IConfigurationRoot)app.Configuration).Providers.OfType<JsonConfigurationProvider>().ToList();
            Assert.NotEmpty(json); // appsettings.json and appsettings.{Environment}.json are still read once
            Assert.All(json, provider => Assert.False(provider.Source.ReloadOnChange, provider.Source.Path));
        }
        finally
        {
            await app.DisposeAsync();
        }
    }
}

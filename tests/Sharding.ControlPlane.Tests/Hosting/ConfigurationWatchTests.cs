using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Configuration.Json;
using Sharding.ControlPlane.Hosting;

namespace Sharding.ControlPlane.Tests.Hosting;

public sealed class ConfigurationWatchTests
{
    [Fact]
    public async Task AppSettings_AreNotWatched()
    {
        // A reloadOnChange JSON source puts a watcher on the working directory; the control plane must not have one.
        var app = ControlPlaneApp.Build([]);
        try
        {
            var json = ((IConfigurationRoot)app.Configuration).Providers.OfType<JsonConfigurationProvider>().ToList();
            Assert.NotEmpty(json);
            Assert.All(json, provider => Assert.False(provider.Source.ReloadOnChange, provider.Source.Path));
        }
        finally
        {
            await app.DisposeAsync();
        }
    }
}

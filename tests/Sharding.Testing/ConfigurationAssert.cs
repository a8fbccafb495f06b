using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Configuration.Json;
using Xunit;

namespace Sharding.Testing;

/// <summary>Assertions on a host's configuration, shared by the sidecar's and the control plane's tests.</summary>
public static class ConfigurationAssert
{
    /// <summary>
    /// The host reads its JSON files (appsettings.json and appsettings.{Environment}.json) once and watches none: a
    /// reloadOnChange JSON source puts a watcher on the whole working directory.
    /// </summary>
    public static void JsonSourcesAreNotWatched(IConfiguration configuration)
    {
        var json = ((IConfigurationRoot)configuration).Providers.OfType<JsonConfigurationProvider>().ToList();
        Assert.NotEmpty(json);
        Assert.All(json, provider => Assert.False(provider.Source.ReloadOnChange, provider.Source.Path));
    }
}

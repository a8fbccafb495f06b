using Sharding.ControlPlane.Hosting;
using Sharding.Testing;

namespace Sharding.ControlPlane.Tests.Hosting;

public sealed class ConfigurationWatchTests
{
    [Fact]
    public async Task AppSettings_AreNotWatched()
    {
        var app = ControlPlaneApp.Build([]);
        try
        {
            ConfigurationAssert.JsonSourcesAreNotWatched(app.Configuration);
        }
        finally
        {
            await app.DisposeAsync();
        }
    }
}

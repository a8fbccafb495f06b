using Sharding.Sidecar.Hosting;
using Sharding.Testing;

namespace Sharding.Sidecar.Tests.Hosting;

public sealed class ConfigurationWatchTests
{
    [Fact]
    public async Task AppSettings_AreNotWatched()
    {
        var app = SidecarHost.Build(["--Sidecar:PodName=pod-0", "--Sidecar:ForwardingSecret=0123456789abcdef-secret", "--Sidecar:MapFile=map.yaml"]);
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

using Sharding.Sidecar.Hosting;

var app = SidecarHost.Build(args);
SidecarHost.UseInlineSocketCompletions(app);
await app.RunAsync().ConfigureAwait(false);
if (SidecarHost.BackgroundServiceFailed(app.Services))
{
    Environment.ExitCode = 1;
}

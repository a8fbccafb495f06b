using Sharding.ControlPlane.Hosting;

var app = ControlPlaneApp.Build(args);
await app.RunAsync().ConfigureAwait(false);
if (ControlPlaneApp.BackgroundServiceFailed(app.Services))
{
    Environment.ExitCode = 1;
}

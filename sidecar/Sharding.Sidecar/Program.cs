using Sharding.Sidecar.Hosting;

var app = SidecarHost.Build(args);
await app.RunAsync().ConfigureAwait(false);

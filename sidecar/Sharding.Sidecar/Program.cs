using Sharding.Sidecar.Hosting;

var app = SidecarHost.Build(args);
SidecarHost.UseInlineSocketCompletions(app);
await app.RunAsync().ConfigureAwait(false);

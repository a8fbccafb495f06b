using Sharding.Sidecar.Hosting;

// Stack buffers on the request path (a key of up to 1,024 chars, a proof's 3 KiB of UTF-8) are written before they are
// read: zeroing them on every request is wasted work.
[module: System.Runtime.CompilerServices.SkipLocalsInit]

var app = SidecarHost.Build(args);
SidecarHost.UseInlineSocketCompletions(app);
await app.RunAsync().ConfigureAwait(false);
if (SidecarHost.BackgroundServiceFailed(app.Services))
{
    Environment.ExitCode = 1;
}

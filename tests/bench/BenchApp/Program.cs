using System.Net;
using Microsoft.AspNetCore.Server.Kestrel.Core;

// Usage: BenchApp NAME HTTP1_PORT H2C_PORT. Replies "NAME|<x-shard-key>" to every request.
var name = args[0];
var builder = WebApplication.CreateSlimBuilder();
builder.Logging.ClearProviders();
builder.WebHost.ConfigureKestrel(k =>
{
    k.AddServerHeader = false;
    k.Listen(IPAddress.Loopback, int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture), l => l.Protocols = HttpProtocols.Http1);
    k.Listen(IPAddress.Loopback, int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture), l => l.Protocols = HttpProtocols.Http2);
});
var app = builder.Build();
app.Run(context => context.Response.WriteAsync(string.Concat(name, "|", context.Request.Headers["x-shard-key"].ToString())));
await app.RunAsync().ConfigureAwait(false);

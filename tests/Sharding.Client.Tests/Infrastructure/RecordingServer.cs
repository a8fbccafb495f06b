using System.Collections.Concurrent;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Sharding.Keys;
using Sharding.Mapping;

namespace Sharding.Client.Tests.Infrastructure;

/// <summary>
/// In-process Kestrel on 127.0.0.1 listening on several ports (one per member): records which port got each request and the whole
/// body it read, and answers 200. A stand-in for the owners' sidecars where only the client's behaviour on the wire matters.
/// </summary>
internal sealed class RecordingServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private RecordingServer(WebApplication app, int[] ports)
    {
        _app = app;
        Ports = ports;
    }

    public int[] Ports { get; }

    /// <summary>Requests whose body was read to the end: (port, body, host header).</summary>
    public ConcurrentQueue<(int Port, string Body, string Host)> Received { get; } = new();

    public static async Task<RecordingServer> StartAsync(int ports, HttpProtocols protocols = HttpProtocols.Http1)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            for (var i = 0; i < ports; i++)
            {
                k.Listen(IPAddress.Loopback, 0, l => l.Protocols = protocols);
            }
        });
        var app = builder.Build();
        RecordingServer? server = null;
        app.Run(async context =>
        {
            using var reader = new StreamReader(context.Request.Body);
            var body = await reader.ReadToEndAsync(context.RequestAborted);
            server!.Received.Enqueue((context.Connection.LocalPort, body, context.Request.Host.Value ?? string.Empty));
            context.Response.StatusCode = StatusCodes.Status200OK;
        });
        await app.StartAsync();
        var addresses = app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;
        server = new RecordingServer(app, [.. addresses.Select(a => new Uri(a).Port)]);
        return server;
    }

    /// <summary>A map whose members pod-i listen on this server's i-th port (the first <paramref name="members"/> ports, all by default).</summary>
    public ShardMap Map(ShardKeyPolicy policy, long generation = 1, int? members = null, uint weight = 1) =>
        ShardMap.Create("svc", generation, Ports.Take(members ?? Ports.Length).Select((p, i) => new ShardMember($"pod-{i}", $"127.0.0.1:{p}", weight)),
            keyPolicy: policy);

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}

/// <summary>Sends every request twice, as a retry policy does after a failure: the first response is dropped.</summary>
internal sealed class SendTwiceHandler(HttpMessageHandler inner, Action? between = null) : DelegatingHandler(inner)
{
    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        (await base.SendAsync(request, cancellationToken).ConfigureAwait(false)).Dispose();
        between?.Invoke();
        return await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
    }
}

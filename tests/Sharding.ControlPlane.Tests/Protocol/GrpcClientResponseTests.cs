using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;
using Sharding.Protocol;
using Sharding.Protocol.V1;

namespace Sharding.ControlPlane.Tests.Protocol;

/// <summary>How <see cref="GrpcClient"/> reads answers that are not a plain stream of messages, from a bare h2c server on 127.0.0.1.</summary>
public sealed class GrpcClientResponseTests
{
    [Fact]
    public async Task Start_Non200CarryingGrpcStatus_TheGrpcStatusWins()
    {
        // grpc/doc/http-grpc-status-mapping.md: the HTTP mapping is "only for clients that received a response that did not
        // include grpc-status. If grpc-status was provided, it must be used" (Grpc.Net.Client gives it priority too).
        await using var server = await H2cServer.StartAsync(static context =>
        {
            context.Response.StatusCode = 503;
            context.Response.ContentType = GrpcProtocol.ContentType;
            context.Response.Headers[GrpcProtocol.StatusHeader] = "8";
            context.Response.Headers[GrpcProtocol.MessageHeader] = "quota%20exceeded";
            return Task.CompletedTask;
        });

        var ex = await Assert.ThrowsAsync<GrpcCallException>(() => server.StartAsync());
        Assert.Equal(GrpcStatusCode.ResourceExhausted, ex.StatusCode);
        Assert.Equal("quota exceeded", ex.Detail);
    }

    [Fact]
    public async Task Start_Non200FromAnHttpHop_MappedFromTheHttpStatusNamingWhatCame()
    {
        await using var server = await H2cServer.StartAsync(static async context =>
        {
            context.Response.StatusCode = 502;
            context.Response.ContentType = "text/html";
            await context.Response.WriteAsync("<html>bad gateway</html>");
        });

        var ex = await Assert.ThrowsAsync<GrpcCallException>(() => server.StartAsync());
        Assert.Equal(GrpcStatusCode.Unavailable, ex.StatusCode);
        Assert.Contains("502", ex.Detail, StringComparison.Ordinal);
        Assert.Contains("text/html", ex.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Read_FrameSplitAcrossWrites_OneMessage()
    {
        var frame = GrpcFrameWriter.Encode(new ShardMapUpdate { Kind = UpdateKind.Ping, Service = new string('s', 3000) });
        await using var server = await H2cServer.StartAsync(async context =>
        {
            context.Response.ContentType = GrpcProtocol.ContentType;
            foreach (var piece in new[] { frame[..2], frame[2..7], frame[7..1000], frame[1000..] })
            {
                await context.Response.Body.WriteAsync(piece);
                await context.Response.Body.FlushAsync();
                await Task.Delay(20);
            }

            context.Response.AppendTrailer(GrpcProtocol.StatusHeader, "0");
        });

        await using var call = await server.StartAsync();
        var update = await call.ReadAsync(CancellationToken.None);
        Assert.Equal(3000, update!.Service.Length);
        Assert.Null(await call.ReadAsync(CancellationToken.None));
    }

    [Fact]
    public async Task Watcher_StreamsThatDeliverThenEndAtOnce_AreReconnectedWithBackoff_NotInAStorm()
    {
        // A replica (or a proxy in front of it) that answers a snapshot and then drops every stream at once.
        var snapshot = GrpcFrameWriter.Encode(ShardMapCodec.ToSnapshot(
            Sharding.Mapping.ShardMap.Create("s", 1, [new Sharding.Mapping.ShardMember("a", "10.0.0.1:15100")]), 1, "cp-0", 0));
        var requests = 0;
        await using var server = await H2cServer.StartAsync(async context =>
        {
            Interlocked.Increment(ref requests);
            context.Response.ContentType = GrpcProtocol.ContentType;
            await context.Response.Body.WriteAsync(snapshot);
            context.Response.AppendTrailer(GrpcProtocol.StatusHeader, "14");
        });

        await using var watcher = new AssignmentsWatcher(new AssignmentsWatcherOptions
        {
            ControlPlaneUrls = [server.Address],
            Service = "s",
            MinReconnectDelay = TimeSpan.FromMilliseconds(100),
            MaxReconnectDelay = TimeSpan.FromSeconds(2),
        });
        watcher.Start();
        Assert.True(await watcher.Store.WaitForGenerationAsync(1, TimeSpan.FromSeconds(10), CancellationToken.None));
        var first = Volatile.Read(ref requests);
        await Task.Delay(TimeSpan.FromSeconds(3));

        // Backed off: 0.1, 0.2, 0.4, 0.8, 1.6 s (jittered) is about six attempts in 3 s; restarting at 0–100 ms after every
        // stream made dozens.
        var attempts = Volatile.Read(ref requests) - first;
        Assert.InRange(attempts, 1, 10);
    }

    /// <summary>
    /// Start racing DisposeAsync (a host stopping while the first request starts the router): never a loop left running
    /// after the dispose, never an exception; a second DisposeAsync is a no-op.
    /// </summary>
    [Fact]
    public async Task StartRacingDispose_LeavesNoLoopRunning()
    {
        var attempts = 0;
        using var invoker = new HttpMessageInvoker(new AttemptCounter(() => Interlocked.Increment(ref attempts)));
        for (var i = 0; i < 200; i++)
        {
            var watcher = new AssignmentsWatcher(
                new AssignmentsWatcherOptions
                {
                    ControlPlaneUrls = [new Uri("http://127.0.0.1:1")],
                    Service = "s",
                    MinReconnectDelay = TimeSpan.FromMilliseconds(10),
                    MaxReconnectDelay = TimeSpan.FromMilliseconds(20),
                },
                invoker);
            using var go = new ManualResetEventSlim();
            var start = Task.Run(() =>
            {
                go.Wait();
                watcher.Start();
            });
            var dispose = Task.Run(async () =>
            {
                go.Wait();
                await watcher.DisposeAsync();
            });
            go.Set();
            await Task.WhenAll(start, dispose);
            await watcher.DisposeAsync();
        }

        var settled = Volatile.Read(ref attempts);
        await Task.Delay(300); // a leaked loop would retry every 10-20 ms
        Assert.Equal(settled, Volatile.Read(ref attempts));
    }

    private sealed class AttemptCounter(Action attempt) : HttpMessageHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            attempt();
            throw new HttpRequestException("refused (test)");
        }
    }

    private sealed class H2cServer : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private readonly HttpMessageInvoker _invoker = new(new SocketsHttpHandler { UseProxy = false });

        private H2cServer(WebApplication app, Uri address)
        {
            _app = app;
            Address = address;
        }

        public Uri Address { get; }

        public static async Task<H2cServer> StartAsync(RequestDelegate handler)
        {
            var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
            builder.WebHost.UseKestrelCore().ConfigureKestrel(o => o.Listen(IPAddress.Loopback, 0, l => l.Protocols = HttpProtocols.Http2));
            builder.Logging.ClearProviders();
            var app = builder.Build();
            app.Run(handler);
            await app.StartAsync();
            return new H2cServer(app, new Uri(app.Urls.First().Replace("[::]", "127.0.0.1", StringComparison.Ordinal)));
        }

        public Task<GrpcServerStreamingCall<ShardMapUpdate>> StartAsync() =>
            GrpcClient.StartServerStreamingAsync(
                _invoker, Address, GrpcProtocol.WatchPath, new WatchRequest { Service = "s" }, ShardMapUpdate.Parser, TimeSpan.FromSeconds(10),
                GrpcProtocol.DefaultMaxMessageBytes, CancellationToken.None);

        public async ValueTask DisposeAsync()
        {
            _invoker.Dispose();
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }
}

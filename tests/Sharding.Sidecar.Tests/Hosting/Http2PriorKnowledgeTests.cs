using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Sharding.Sidecar.Hosting;
using Sharding.Sidecar.Tests.Infrastructure;
using Sharding.Testing;

namespace Sharding.Sidecar.Tests.Hosting;

/// <summary>The h2c preface detection against byte-level clients: slow, short, gone mid-detection.</summary>
public sealed class Http2PriorKnowledgeTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    private static ReadOnlySpan<byte> Preface => "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8;

    [Fact]
    public async Task APrefaceSentOneByteAtATime_IsHttp2()
    {
        await using var server = await Server.StartAsync();
        using var socket = await server.ConnectAsync();
        foreach (var b in Preface.ToArray())
        {
            await socket.SendAsync(new[] { b });
            await Task.Delay(20);
        }

        await socket.SendAsync(new byte[] { 0, 0, 0, 4, 0, 0, 0, 0, 0 }); // empty SETTINGS
        var frame = await ReadAtLeastAsync(socket, 9);
        Assert.Equal(4, frame[3]); // the server's SETTINGS frame
    }

    [Fact]
    public async Task AnHttp11RequestShorterThanThePreface_IsAnsweredAtOnce()
    {
        await using var server = await Server.StartAsync();
        using var socket = await server.ConnectAsync();
        await socket.SendAsync("GET / HTTP/1.1\r\nHost: a\r\n\r\n"u8.ToArray());
        var head = Encoding.ASCII.GetString(await ReadAtLeastAsync(socket, 12));
        Assert.StartsWith("HTTP/1.1 200", head, StringComparison.Ordinal);
    }

    /// <summary>
    /// Kestrel lets a new connection wait <see cref="KestrelServerLimits.KeepAliveTimeout"/> for its first request (as it
    /// lets a kept-alive one wait for its next); the detection must not cut it sooner (it used to at a fixed 10 s, with a
    /// reset, so a pre-connected client's first request failed).
    /// </summary>
    [Fact]
    public async Task AConnectionThatWaitsBeforeItsFirstRequest_IsHeldAsLongAsKestrelsKeepAliveTimeout()
    {
        await using var server = await Server.StartAsync();
        using var socket = await server.ConnectAsync();
        await Task.Delay(TimeSpan.FromSeconds(11));
        await socket.SendAsync("GET / HTTP/1.1\r\nHost: a\r\n\r\n"u8.ToArray());
        Assert.StartsWith("HTTP/1.1 200", Encoding.ASCII.GetString(await ReadAtLeastAsync(socket, 12)), StringComparison.Ordinal);
    }

    [Fact]
    public async Task AConnectionThatSendsNothing_IsClosedAfterKestrelsKeepAliveTimeout()
    {
        await using var server = await Server.StartAsync(k => k.Limits.KeepAliveTimeout = TimeSpan.FromSeconds(1));
        using var socket = await server.ConnectAsync();
        var buffer = new byte[16];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        try
        {
            Assert.Equal(0, await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token));
        }
        catch (SocketException)
        {
            // reset: closed too
        }
    }

    [Fact]
    public async Task AClientThatResetsMidDetection_IsNotLoggedAsAnError()
    {
        await using var server = await Server.StartAsync();
        using (var socket = await server.ConnectAsync())
        {
            await socket.SendAsync("PRI * HT"u8.ToArray());
            await Task.Delay(100);
            socket.LingerState = new LingerOption(true, 0);
            socket.Close(); // RST
        }

        // The server is still fine, and nothing at warning level or above was logged for the reset.
        using (var socket = await server.ConnectAsync())
        {
            await socket.SendAsync("GET / HTTP/1.1\r\nHost: a\r\n\r\n"u8.ToArray());
            Assert.StartsWith("HTTP/1.1 200", Encoding.ASCII.GetString(await ReadAtLeastAsync(socket, 12)), StringComparison.Ordinal);
        }

        await Task.Delay(200);
        Assert.DoesNotContain(server.Logs.Entries, e => e.Level >= LogLevel.Warning);
    }

    [Fact]
    public async Task AClientThatClosesMidDetection_IsNotLoggedAsAnError()
    {
        await using var server = await Server.StartAsync();
        using (var socket = await server.ConnectAsync())
        {
            await socket.SendAsync("PRI * HT"u8.ToArray());
            socket.Shutdown(SocketShutdown.Send);
            var buffer = new byte[256];
            using var cts = new CancellationTokenSource(Timeout);
            while (await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token) > 0)
            {
            }
        }

        await Task.Delay(200);
        Assert.DoesNotContain(server.Logs.Entries, e => e.Level >= LogLevel.Warning);
    }

    private static async Task<byte[]> ReadAtLeastAsync(Socket socket, int count)
    {
        var buffer = new byte[4096];
        var total = 0;
        using var cts = new CancellationTokenSource(Timeout);
        while (total < count)
        {
            var read = await socket.ReceiveAsync(buffer.AsMemory(total), SocketFlags.None, cts.Token);
            Assert.True(read > 0, "the server closed the connection");
            total += read;
        }

        return buffer[..total];
    }

    private sealed class Server : IAsyncDisposable
    {
        private WebApplication _app = null!;
        private ListenOptions _listen = null!;

        public CollectingLoggerProvider Logs { get; } = new();

        public static async Task<Server> StartAsync(Action<KestrelServerOptions>? configure = null)
        {
            var server = new Server();
            var builder = WebApplication.CreateSlimBuilder();
            builder.Logging.ClearProviders();
            builder.Logging.SetMinimumLevel(LogLevel.Debug);
            builder.Logging.AddProvider(server.Logs);
            builder.WebHost.ConfigureKestrel(k =>
            {
                configure?.Invoke(k);
                k.Listen(IPAddress.Loopback, 0, l =>
                {
                    l.UseHttp1AndHttp2PriorKnowledge();
                    server._listen = l;
                });
            });
            server._app = builder.Build();
            server._app.Run(context => context.Response.WriteAsync("ok"));
            await server._app.StartAsync();
            return server;
        }

        public int Port => _listen.IPEndPoint!.Port;

        public async Task<Socket> ConnectAsync()
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            await socket.ConnectAsync(IPAddress.Loopback, _listen.IPEndPoint!.Port);
            return socket;
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }
}

using System.Buffers.Binary;
using System.Net;
using System.Net.WebSockets;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;
using Sharding.Sidecar.Hosting;

namespace Sharding.Sidecar.Tests.Infrastructure;

/// <summary>
/// A tiny app behind a sidecar: answers <c>{instance}|{x-shard-key}|{method} {target}|{body bytes}|{x-sharding-* it saw}</c>,
/// plus SSE, WebSocket echo, gRPC-framed unary/server streaming, large upload/download. Listens on HTTP/1.1 and h2c.
/// </summary>
internal sealed class EchoApp : IAsyncDisposable
{
    private readonly WebApplication _app;

    private EchoApp(string name, WebApplication app)
    {
        Name = name;
        _app = app;
    }

    public string Name { get; }

    public int Port { get; private set; }

    /// <summary>Released by a test to let the SSE endpoint send its second event (proves per-event flushing).</summary>
    public TaskCompletionSource SseGate { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completed when a /hang request saw its client go away (through the sidecars).</summary>
    public TaskCompletionSource HangAborted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public static async Task<EchoApp> StartAsync(string name)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        ListenOptions? bound = null;
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = null;
            k.Listen(IPAddress.Loopback, 0, l =>
            {
                l.UseHttp1AndHttp2PriorKnowledge();
                bound = l;
            });
        });
        var app = builder.Build();
        var echo = new EchoApp(name, app);
        app.UseWebSockets();
        app.Run(echo.HandleAsync);
        await app.StartAsync();
        echo.Port = bound!.IPEndPoint!.Port;
        return echo;
    }

    private async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        var path = request.Path.Value ?? "/";
        if (path == "/ws" && context.WebSockets.IsWebSocketRequest)
        {
            using var socket = await context.WebSockets.AcceptWebSocketAsync();
            var buffer = new byte[4096];
            while (true)
            {
                var result = await socket.ReceiveAsync(buffer, context.RequestAborted);
                if (result.MessageType == WebSocketMessageType.Close)
                {
                    await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", context.RequestAborted);
                    return;
                }

                var reply = System.Text.Encoding.UTF8.GetBytes($"{Name}:{System.Text.Encoding.UTF8.GetString(buffer, 0, result.Count)}");
                await socket.SendAsync(reply, WebSocketMessageType.Text, true, context.RequestAborted);
            }
        }

        if (path == "/ws-watch" && context.WebSockets.IsWebSocketRequest)
        {
            await WebSocketWatchAsync(context);
            return;
        }

        if (path == "/sse-forever")
        {
            // A watch stream: this instance's name every 200 ms until the client or a drain ends it.
            context.Response.ContentType = "text/event-stream";
            try
            {
                while (!context.RequestAborted.IsCancellationRequested)
                {
                    await context.Response.WriteAsync($"data: {Name}\n\n", context.RequestAborted);
                    await context.Response.Body.FlushAsync(context.RequestAborted);
                    await Task.Delay(200, context.RequestAborted);
                }
            }
            catch (OperationCanceledException)
            {
            }
            catch (IOException)
            {
            }

            return;
        }

        if (path == "/trailers")
        {
            // The request body's length and the trailers that came after it (docs/sidecar.md: the sidecar drops them).
            var length = 0L;
            var chunk = new byte[16 * 1024];
            while (await request.Body.ReadAsync(chunk, context.RequestAborted) is var got and > 0)
            {
                length += got;
            }

            var trailers = request.CheckTrailersAvailable() && context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpRequestTrailersFeature>()!.Trailers is { Count: > 0 } all
                ? string.Join(',', all.Select(t => $"{t.Key}:{t.Value}"))
                : "none";
            var text = System.Text.Encoding.UTF8.GetBytes($"{Name}|bytes={length}|trailers={trailers}");
            context.Response.ContentLength = text.Length;
            await context.Response.Body.WriteAsync(text, context.RequestAborted);
            return;
        }

        if (path == "/long-poll")
        {
            // A long poll that never answers: no response headers until the client or a drain ends it.
            try
            {
                await Task.Delay(TimeSpan.FromSeconds(60), context.RequestAborted);
            }
            catch (OperationCanceledException)
            {
            }

            return;
        }

        if (path == "/hang")
        {
            await context.Response.StartAsync();
            await context.Response.Body.FlushAsync();
            try
            {
                await Task.Delay(Timeout.Infinite, context.RequestAborted);
            }
            catch (OperationCanceledException)
            {
                HangAborted.TrySetResult();
            }

            return;
        }

        if (path == "/sse")
        {
            context.Response.ContentType = "text/event-stream";
            await context.Response.WriteAsync($"data: {Name} 1\n\n");
            await context.Response.Body.FlushAsync();
            await SseGate.Task.WaitAsync(TimeSpan.FromSeconds(20));
            await context.Response.WriteAsync($"data: {Name} 2\n\n");
            return;
        }

        if (request.ContentType?.StartsWith("application/grpc", StringComparison.Ordinal) == true)
        {
            await GrpcAsync(context, streaming: path.EndsWith("/Stream", StringComparison.Ordinal));
            return;
        }

        if (path == "/echo")
        {
            // Full duplex: each piece of the body goes back as it is read, before the body has ended.
            context.Response.ContentType = "application/octet-stream";
            await request.Body.CopyToAsync(context.Response.Body, context.RequestAborted);
            return;
        }

        if (path == "/download")
        {
            var size = long.Parse(request.Query["size"]!, System.Globalization.CultureInfo.InvariantCulture);
            context.Response.ContentLength = size;
            var chunk = new byte[64 * 1024];
            for (long sent = 0; sent < size; sent += chunk.Length)
            {
                await context.Response.Body.WriteAsync(chunk.AsMemory(0, (int)Math.Min(chunk.Length, size - sent)));
            }

            return;
        }

        long bytes = 0;
        var readBuffer = new byte[64 * 1024];
        int read;
        using var sha256 = path == "/sha256" ? IncrementalHash.CreateHash(HashAlgorithmName.SHA256) : null;
        while ((read = await request.Body.ReadAsync(readBuffer)) > 0)
        {
            bytes += read;
            sha256?.AppendData(readBuffer, 0, read);
        }

        if (sha256 is not null)
        {
            // The body's length and digest, to check a body arrived byte for byte.
            await context.Response.WriteAsync($"{Name}|{bytes}|{Convert.ToHexStringLower(sha256.GetHashAndReset())}");
            return;
        }

        var seen = string.Join(",", request.Headers.Keys.Where(static k => k.StartsWith("x-sharding-", StringComparison.OrdinalIgnoreCase)).Order(StringComparer.Ordinal));
        await context.Response.WriteAsync($"{Name}|{request.Headers["x-shard-key"]}|{request.Method} {request.Path}{request.QueryString}|{bytes}|{seen}|{request.Protocol}");
    }

    /// <summary>Sends this instance's name now and every 200 ms; answers the client's close.</summary>
    private async Task WebSocketWatchAsync(HttpContext context)
    {
        using var socket = await context.WebSockets.AcceptWebSocketAsync();
        using var done = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
        var sender = Task.Run(async () =>
        {
            try
            {
                while (!done.IsCancellationRequested)
                {
                    await socket.SendAsync(System.Text.Encoding.UTF8.GetBytes(Name), WebSocketMessageType.Text, true, done.Token);
                    await Task.Delay(200, done.Token);
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or WebSocketException or IOException or ObjectDisposedException)
            {
            }
        });
        try
        {
            var buffer = new byte[1024];
            while (true)
            {
                var result = await socket.ReceiveAsync(buffer, context.RequestAborted);
                if (result.MessageType == WebSocketMessageType.Close)
                {
                    await done.CancelAsync();
                    await sender;
                    await socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, "bye", CancellationToken.None);
                    return;
                }
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or WebSocketException or IOException)
        {
            await done.CancelAsync();
            await sender;
        }
    }

    /// <summary>gRPC framing: 1 byte compressed flag, 4 bytes big-endian length, payload; status in trailers.</summary>
    private async Task GrpcAsync(HttpContext context, bool streaming)
    {
        using var body = new MemoryStream();
        await context.Request.Body.CopyToAsync(body);
        var frame = body.ToArray();
        var length = BinaryPrimitives.ReadInt32BigEndian(frame.AsSpan(1, 4));
        var message = System.Text.Encoding.UTF8.GetString(frame, 5, length);
        context.Response.ContentType = "application/grpc";
        if (context.Request.Path.Value!.EndsWith("/Watch", StringComparison.Ordinal))
        {
            // Endless server streaming: "{Name}:{message}:{i}" every 200 ms until cancelled or drained.
            try
            {
                for (var i = 0; !context.RequestAborted.IsCancellationRequested; i++)
                {
                    var payload = System.Text.Encoding.UTF8.GetBytes($"{Name}:{message}:{i}");
                    var header = new byte[5];
                    BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(1), payload.Length);
                    await context.Response.Body.WriteAsync(header, context.RequestAborted);
                    await context.Response.Body.WriteAsync(payload, context.RequestAborted);
                    await context.Response.Body.FlushAsync(context.RequestAborted);
                    await Task.Delay(200, context.RequestAborted);
                }
            }
            catch (OperationCanceledException)
            {
            }

            return;
        }

        var count = streaming ? 5 : 1;
        for (var i = 0; i < count; i++)
        {
            var payload = System.Text.Encoding.UTF8.GetBytes($"{Name}:{message}:{i}");
            var header = new byte[5];
            BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(1), payload.Length);
            await context.Response.Body.WriteAsync(header);
            await context.Response.Body.WriteAsync(payload);
            await context.Response.Body.FlushAsync();
        }

        context.Response.AppendTrailer("grpc-status", "0");
        context.Response.AppendTrailer("grpc-message", "ok");
    }

    public async ValueTask DisposeAsync()
    {
        SseGate.TrySetResult();
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}

using System.Diagnostics;
using System.Text;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;

namespace Sharding.Sidecar.Tests.FastPath;

/// <summary>
/// Bytes the fast path must treat as Kestrel does on the full path: its limits (the request-headers deadline, the request
/// line's length) and its validation of the Host field hold whichever path a request takes.
/// </summary>
public sealed class FastPathAuditTests
{
    private static readonly TimeSpan Soon = TimeSpan.FromSeconds(5);

    private static Dictionary<string, string?> FastPath(bool on, Dictionary<string, string?>? extra = null)
    {
        var settings = new Dictionary<string, string?> { ["Sidecar:Http1FastPath"] = on ? "true" : "false" };
        foreach (var (key, value) in extra ?? [])
        {
            settings[key] = value;
        }

        return settings;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task HeadTrickledByteByByte_IsCutAtTheRequestHeadersTimeout_NotKeptAliveByEachByte(bool fastPath)
    {
        await using var app = FakeApp.Start();
        await using var solo = await SoloSidecar.StartAsync(app.Port, FastPath(fastPath), configure: static builder =>
            builder.Services.Configure<KestrelServerOptions>(static kestrel => kestrel.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(2)));
        using var client = await RawClient.ConnectAsync(solo.Port);

        // Kestrel's RequestHeadersTimeout bounds the whole head, however its bytes are spread (slowloris): a byte every
        // 0.5 s must not restart it.
        var started = Stopwatch.GetTimestamp();
        await client.SendAsync("GET / HTTP/1.1\r\nHost: app.test\r\nx-shard-key: k1\r\nX-Slow: ");
        using var stop = new CancellationTokenSource();
        var trickle = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                await Task.Delay(500);
                try
                {
                    await client.SendAsync("a");
                }
                catch (Exception ex) when (ex is System.Net.Sockets.SocketException or OperationCanceledException or ObjectDisposedException)
                {
                    return;
                }
            }
        });
        try
        {
            await client.DrainUntilClosedAsync(TimeSpan.FromSeconds(8)); // Kestrel may answer 408 first
        }
        finally
        {
            await stop.CancelAsync();
            await trickle;
        }

        Assert.True(Stopwatch.GetElapsedTime(started) < TimeSpan.FromSeconds(5), $"closed only after {Stopwatch.GetElapsedTime(started).TotalSeconds:F1} s");
        Assert.Equal(0, app.Connections);
    }
}

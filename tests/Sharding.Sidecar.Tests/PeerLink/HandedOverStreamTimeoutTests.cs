using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Logging.Abstractions;
using Sharding.Sidecar.PeerLink;
using Sharding.Sidecar.Tests.Infrastructure;
using Sharding.Sidecar.Transport;

namespace Sharding.Sidecar.Tests.PeerLink;

/// <summary>
/// A link stream the owner's fast path hands over to Kestrel is a Kestrel connection like any other: its keep-alive
/// timeout closes it when it idles (Kestrel's timeouts run on a heartbeat the stream must provide).
/// </summary>
public sealed class HandedOverStreamTimeoutTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);

    [Fact]
    public async Task A_handed_over_stream_that_idles_is_closed_after_Kestrels_keep_alive_timeout()
    {
        var directory = Path.Combine(Path.GetTempPath(), "sharding-sidecar-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(directory);
        await using var app = await EchoApp.StartAsync("pod-0");
        var port = TestSidecar.FreePort();
        var mapFile = Path.Combine(directory, "map.yaml");
        await File.WriteAllTextAsync(mapFile, Cluster.MapYaml([port]));
        await using var sidecar = await TestSidecar.StartAsync(
            "pod-0", port, app.Port, mapFile, configure: builder => builder.WebHost.ConfigureKestrel(kestrel => kestrel.Limits.KeepAliveTimeout = TimeSpan.FromSeconds(2)));

        using var loop = new EpollLoop("handover-test-io", 0, inline: false);
        var link = await LinkConnection.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), loop, Timeout, metrics: null, NullLogger.Instance, CancellationToken.None)
            ?? throw new InvalidOperationException("the sidecar did not answer as a link");
        try
        {
            // A chunked body does not qualify for the fast path: the owner's session hands the stream to Kestrel.
            var stream = link.TryOpenStream()!;
            await stream.SendAsync(Encoding.ASCII.GetBytes(
                "POST /p HTTP/1.1\r\nHost: pod-0\r\nx-shard-key: k\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"));
            var response = await ReadResponseAsync(stream);
            Assert.StartsWith("HTTP/1.1 200", response, StringComparison.Ordinal);
            Assert.Contains("pod-0|k|", response, StringComparison.Ordinal);
            Assert.True(await HandoversAsync(sidecar.AdminPort) >= 1, "the request was not handed over to Kestrel");

            // Idle after its response: Kestrel closes it after 2 s (a heartbeat ticks once a second), not never.
            var idle = Stopwatch.StartNew();
            var buffer = new byte[256];
            try
            {
                while (await stream.ReceiveAsync(buffer, CancellationToken.None).AsTask().WaitAsync(Timeout) > 0)
                {
                    Assert.Fail("bytes after the response: " + Encoding.ASCII.GetString(buffer));
                }
            }
            catch (SocketException)
            {
                // Ended with a reset (refused) rather than END_STREAM: closed either way.
            }

            Assert.InRange(idle.Elapsed, TimeSpan.FromSeconds(1.5), TimeSpan.FromSeconds(8));
            stream.Release();
        }
        finally
        {
            link.Close(null);
            await link.Closed.WaitAsync(Timeout);
        }
    }

    /// <summary>One HTTP/1.1 response (Content-Length or chunked) read from the stream.</summary>
    private static async Task<string> ReadResponseAsync(LinkStream stream)
    {
        var text = new StringBuilder();
        var buffer = new byte[4096];
        while (!IsComplete(text.ToString()))
        {
            var read = await stream.ReceiveAsync(buffer, CancellationToken.None).AsTask().WaitAsync(Timeout);
            Assert.True(read > 0, "the stream ended before the response did: " + text);
            text.Append(Encoding.ASCII.GetString(buffer, 0, read));
        }

        return text.ToString();
    }

    private static bool IsComplete(string response)
    {
        var headEnd = response.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        if (headEnd < 0)
        {
            return false;
        }

        var length = Regex.Match(response[..headEnd], @"(?im)^content-length:\s*(\d+)\s*$");
        return length.Success
            ? response.Length - headEnd - 4 >= int.Parse(length.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)
            : response.EndsWith("\r\n0\r\n\r\n", StringComparison.Ordinal);
    }

    private static async Task<double> HandoversAsync(int adminPort)
    {
        using var admin = new HttpClient();
        var text = await admin.GetStringAsync($"http://127.0.0.1:{adminPort}/metrics");
        return Regex.Matches(text, @"^sharding_sidecar_fast_path_handovers_total\{[^}]*\} ([0-9.e+-]+)$", RegexOptions.Multiline)
            .Sum(match => double.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
    }
}

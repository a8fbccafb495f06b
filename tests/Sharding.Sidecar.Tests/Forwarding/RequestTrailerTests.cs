using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Sharding.Sidecar.Tests.Infrastructure;
using Sharding.Testing;

namespace Sharding.Sidecar.Tests.Forwarding;

/// <summary>
/// Pins a documented limitation (docs/sidecar.md, "Request trailers"): trailers a client sends after its request body do not
/// reach the app, on either path and either protocol; the request itself, body included, goes through whole. HttpClient has
/// no way to send request trailers, so carrying them would need clients of our own for every outbound protocol.
/// </summary>
public sealed class RequestTrailerTests
{
    [Fact]
    public async Task Http11ChunkedRequestTrailers_AreDropped_TheBodyArrivesWhole()
    {
        await using var cluster = await Cluster.StartAsync(size: 2);
        var local = Key(cluster, "pod-0");
        var forwarded = Key(cluster, "pod-1");

        // The control: the app itself sees the trailer when the client talks to it directly.
        Assert.EndsWith("|bytes=5|trailers=x-checksum:abc", await ChunkedPostAsync(cluster.Apps[0].Port, local), StringComparison.Ordinal);
        Assert.EndsWith("pod-0|bytes=5|trailers=none", await ChunkedPostAsync(cluster.Sidecars[0].Port, local), StringComparison.Ordinal);
        Assert.EndsWith("pod-1|bytes=5|trailers=none", await ChunkedPostAsync(cluster.Sidecars[0].Port, forwarded), StringComparison.Ordinal);
    }

    [RequiresToolFact("nghttp", "nghttp2-client")]
    public async Task Http2RequestTrailers_AreDropped_TheBodyArrivesWhole()
    {
        await using var cluster = await Cluster.StartAsync(size: 2);
        var local = Key(cluster, "pod-0");
        var forwarded = Key(cluster, "pod-1");
        var body = Path.Combine(cluster.Directory, "body.txt");
        await File.WriteAllTextAsync(body, "hello");

        Assert.EndsWith("|bytes=5|trailers=x-checksum:abc", await NghttpPostAsync(cluster.Apps[0].Port, local, body), StringComparison.Ordinal);
        Assert.EndsWith("pod-0|bytes=5|trailers=none", await NghttpPostAsync(cluster.Sidecars[0].Port, local, body), StringComparison.Ordinal);
        Assert.EndsWith("pod-1|bytes=5|trailers=none", await NghttpPostAsync(cluster.Sidecars[0].Port, forwarded, body), StringComparison.Ordinal);
    }

    private static string Key(Cluster cluster, string owner) =>
        Enumerable.Range(0, 1000).Select(i => $"trailer-{i}").First(k => cluster.OwnerOf(k) == owner);

    /// <summary>A chunked POST with a trailer section, written by hand (HttpClient cannot send request trailers).</summary>
    private static async Task<string> ChunkedPostAsync(int port, string key)
    {
        using var client = new TcpClient();
        await client.ConnectAsync("127.0.0.1", port);
        var stream = client.GetStream();
        var request = $"POST /trailers HTTP/1.1\r\nHost: 127.0.0.1\r\nx-shard-key: {key}\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n" +
                      "Connection: close\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n";
        await stream.WriteAsync(Encoding.ASCII.GetBytes(request));
        using var reader = new StreamReader(stream, Encoding.UTF8);
        var response = await reader.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.StartsWith("HTTP/1.1 200", response, StringComparison.Ordinal);
        return response.TrimEnd();
    }

    private static async Task<string> NghttpPostAsync(int port, string key, string bodyFile)
    {
        using var process = Process.Start(new ProcessStartInfo("nghttp",
            ["-d", bodyFile, "--trailer", "x-checksum: abc", "-H", $"x-shard-key: {key}", $"http://127.0.0.1:{port}/trailers"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        })!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(process.ExitCode == 0, await error);
        return (await output).TrimEnd();
    }
}

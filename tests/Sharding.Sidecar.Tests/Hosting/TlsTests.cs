using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Sharding.Sidecar.Tests.Infrastructure;

namespace Sharding.Sidecar.Tests.Hosting;

public sealed class TlsTests
{
    [Fact]
    public async Task Tls_AlpnPicksHttp2OrHttp11_AndCarriesWebSocketsOverHttp2()
    {
        var directory = Directory.CreateTempSubdirectory("sharding-tls-").FullName;
        using var key = RSA.Create(2048);
        var request = new CertificateRequest("CN=127.0.0.1", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        using var certificate = request.CreateSelfSigned(TimeProvider.System.GetUtcNow().AddDays(-1), TimeProvider.System.GetUtcNow().AddDays(1));
        var pfx = Path.Combine(directory, "sidecar.pfx");
        await File.WriteAllBytesAsync(pfx, certificate.Export(X509ContentType.Pfx, "pw"));

        await using var app = await EchoApp.StartAsync("pod-0");
        var port = TestSidecar.FreePort();
        var map = Path.Combine(directory, "map.yaml");
        await File.WriteAllTextAsync(map, Cluster.MapYaml([port], "[\"header:x-shard-key\"]"));
        await using var sidecar = await TestSidecar.StartAsync("pod-0", port, app.Port, map, new Dictionary<string, string?>
        {
            ["Sidecar:TlsCertificatePath"] = pfx,
            ["Sidecar:TlsCertificatePassword"] = "pw",
        });

        foreach (var version in new[] { HttpVersion.Version20, HttpVersion.Version11 })
        {
            using var handler = new SocketsHttpHandler { UseProxy = false };
            var expected = certificate.GetCertHash();
            handler.SslOptions.RemoteCertificateValidationCallback = (_, presented, _, _) => presented is not null && presented.GetCertHash().AsSpan().SequenceEqual(expected);
            using var client = new HttpClient(handler);
            using var message = new HttpRequestMessage(HttpMethod.Get, $"https://127.0.0.1:{port}/t") { Version = version, VersionPolicy = HttpVersionPolicy.RequestVersionExact };
            message.Headers.Add("x-shard-key", "tls-key");
            using var response = await client.SendAsync(message);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(version, response.Version);
            Assert.StartsWith("pod-0|tls-key|GET /t|", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        // What a browser does on an h2 connection whose server announces extended CONNECT (RFC 8441).
        using var webSocketHandler = new SocketsHttpHandler { UseProxy = false };
        var hash = certificate.GetCertHash();
        webSocketHandler.SslOptions.RemoteCertificateValidationCallback = (_, presented, _, _) => presented is not null && presented.GetCertHash().AsSpan().SequenceEqual(hash);
        using var invoker = new HttpMessageInvoker(webSocketHandler);
        using var socket = new System.Net.WebSockets.ClientWebSocket();
        socket.Options.HttpVersion = HttpVersion.Version20;
        socket.Options.HttpVersionPolicy = HttpVersionPolicy.RequestVersionExact;
        socket.Options.SetRequestHeader("x-shard-key", "tls-key");
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        await socket.ConnectAsync(new Uri($"wss://127.0.0.1:{port}/ws"), invoker, timeout.Token);
        await socket.SendAsync("over tls"u8.ToArray(), System.Net.WebSockets.WebSocketMessageType.Text, true, timeout.Token);
        var buffer = new byte[256];
        var result = await socket.ReceiveAsync(buffer, timeout.Token);
        Assert.Equal("pod-0:over tls", System.Text.Encoding.UTF8.GetString(buffer, 0, result.Count));
        await socket.CloseAsync(System.Net.WebSockets.WebSocketCloseStatus.NormalClosure, "done", timeout.Token);
    }

    /// <summary>
    /// A rotated certificate (cert-manager renewing a Kubernetes secret, the file replaced in place) is served to new
    /// connections without a restart; a file that does not load (half written) keeps the last good one.
    /// </summary>
    [Fact]
    public async Task Tls_ARotatedCertificateFile_IsServedToNewConnections()
    {
        var directory = Directory.CreateTempSubdirectory("sharding-tls-").FullName;
        using var first = SelfSigned();
        using var second = SelfSigned();
        var pfx = Path.Combine(directory, "sidecar.pfx");
        await File.WriteAllBytesAsync(pfx, first.Export(X509ContentType.Pfx, "pw"));

        await using var app = await EchoApp.StartAsync("pod-0");
        var port = TestSidecar.FreePort();
        var map = Path.Combine(directory, "map.yaml");
        await File.WriteAllTextAsync(map, Cluster.MapYaml([port], "[\"header:x-shard-key\"]"));
        await using var sidecar = await TestSidecar.StartAsync("pod-0", port, app.Port, map, new Dictionary<string, string?>
        {
            ["Sidecar:TlsCertificatePath"] = pfx,
            ["Sidecar:TlsCertificatePassword"] = "pw",
        });

        Assert.Equal(first.GetCertHashString(), await PresentedAsync(port));

        await File.WriteAllBytesAsync(pfx, [1, 2, 3]); // mid-rotation: not a certificate
        File.SetLastWriteTimeUtc(pfx, TimeProvider.System.GetUtcNow().UtcDateTime.AddSeconds(-30));
        await Task.Delay(1500);
        Assert.Equal(first.GetCertHashString(), await PresentedAsync(port));

        var staged = Path.Combine(directory, "staged.pfx");
        await File.WriteAllBytesAsync(staged, second.Export(X509ContentType.Pfx, "pw"));
        File.Move(staged, pfx, overwrite: true); // atomic, as a secret volume's symlink swap
        var deadline = TimeProvider.System.GetUtcNow().AddSeconds(10);
        string presented;
        while ((presented = await PresentedAsync(port)) != second.GetCertHashString() && TimeProvider.System.GetUtcNow() < deadline)
        {
            await Task.Delay(200);
        }

        Assert.Equal(second.GetCertHashString(), presented);
    }

    private static X509Certificate2 SelfSigned()
    {
        using var key = RSA.Create(2048);
        var request = new CertificateRequest("CN=127.0.0.1", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        return request.CreateSelfSigned(TimeProvider.System.GetUtcNow().AddDays(-1), TimeProvider.System.GetUtcNow().AddDays(1));
    }

    /// <summary>The certificate a new connection's handshake presents (hash), after one request over it.</summary>
    private static async Task<string> PresentedAsync(int port)
    {
        string? hash = null;
        using var handler = new SocketsHttpHandler { UseProxy = false };
        handler.SslOptions.RemoteCertificateValidationCallback = (_, presented, _, _) =>
        {
            hash = presented?.GetCertHashString();
            return presented is not null;
        };
        using var client = new HttpClient(handler);
        using var message = new HttpRequestMessage(HttpMethod.Get, $"https://127.0.0.1:{port}/t") { Version = HttpVersion.Version20, VersionPolicy = HttpVersionPolicy.RequestVersionExact };
        message.Headers.Add("x-shard-key", "tls-key");
        using var response = await client.SendAsync(message);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(HttpVersion.Version20, response.Version);
        return hash!;
    }
}

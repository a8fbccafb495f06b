using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.WebSockets;
using System.Text;
using Sharding.Mapping;
using Sharding.Sidecar.Tests.Infrastructure;

namespace Sharding.Sidecar.Tests.Draining;

/// <summary>Four echo apps behind four sidecars; the map file names the first <c>n</c> of them, with an explicit generation.</summary>
internal sealed class DrainCluster : IAsyncDisposable
{
    public static readonly TimeSpan Grace = TimeSpan.FromSeconds(1);

    private readonly string _directory;
    private readonly List<int> _ports;

    private DrainCluster(string directory, List<int> ports, List<EchoApp> apps, List<TestSidecar> sidecars)
    {
        _directory = directory;
        _ports = ports;
        Apps = apps;
        Sidecars = sidecars;
    }

    public IReadOnlyList<EchoApp> Apps { get; }

    public IReadOnlyList<TestSidecar> Sidecars { get; }

    public string MapFile => Path.Combine(_directory, "map.yaml");

    public ShardMap Expected { get; private set; } = null!;

    public static async Task<DrainCluster> StartAsync(int size = 4, int members = 3, IDictionary<string, string?>? settings = null)
    {
        var directory = Path.Combine(Path.GetTempPath(), "sharding-drain-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(directory);
        var apps = new List<EchoApp>();
        var ports = new List<int>();
        for (var i = 0; i < size; i++)
        {
            apps.Add(await EchoApp.StartAsync($"pod-{i}"));
            ports.Add(TestSidecar.FreePort());
        }

        var all = new Dictionary<string, string?>
        {
            ["Sidecar:DrainGrace"] = Grace.ToString(),
            ["Sidecar:StreamThreshold"] = "00:00:01",
        };
        foreach (var (key, value) in settings ?? new Dictionary<string, string?>())
        {
            all[key] = value;
        }

        var cluster = new DrainCluster(directory, ports, apps, []);
        await File.WriteAllTextAsync(cluster.MapFile, cluster.Yaml(members, 10));
        cluster.Expected = cluster.Build(members, 10);
        var sidecars = (List<TestSidecar>)cluster.Sidecars;
        for (var i = 0; i < size; i++)
        {
            sidecars.Add(await TestSidecar.StartAsync($"pod-{i}", ports[i], apps[i].Port, cluster.MapFile, all));
        }

        return cluster;
    }

    private string Yaml(int members, long generation)
    {
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"generation: {generation}\n").Append("service: echo\nalgorithm: maglev\nmembers:\n");
        for (var i = 0; i < members; i++)
        {
            text.Append(CultureInfo.InvariantCulture, $"  - name: pod-{i}\n    address: 127.0.0.1:{_ports[i]}\n");
        }

        text.Append("keys:\n  rules: [\"header:x-shard-key\"]\n");
        return text.ToString();
    }

    /// <summary>The map the test expects, built independently of the sidecars (what <c>shardctl owner</c> computes).</summary>
    private ShardMap Build(int members, long generation) =>
        ShardMap.Create("echo", generation, Enumerable.Range(0, members).Select(i => new ShardMember($"pod-{i}", $"127.0.0.1:{_ports[i]}")));

    /// <summary>Rewrites the map file and waits until every sidecar has the new generation; returns when the last one got it.</summary>
    public async Task<long> ChangeMembersAsync(int members, long generation)
    {
        Expected = Build(members, generation);
        var temp = MapFile + ".tmp";
        await File.WriteAllTextAsync(temp, Yaml(members, generation));
        File.Move(temp, MapFile, overwrite: true);
        var deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency * 5;
        while (Sidecars.Any(s => s.Store.Generation < generation))
        {
            Assert.True(Stopwatch.GetTimestamp() < deadline, "the sidecars did not load the new map within 5 s");
            await Task.Delay(10);
        }

        return Stopwatch.GetTimestamp();
    }

    public string OwnerOf(string key) => Expected.OwnerOf(key.AsSpan())!.Name;

    public async ValueTask DisposeAsync()
    {
        foreach (var sidecar in Sidecars)
        {
            await sidecar.DisposeAsync();
        }

        foreach (var app in Apps)
        {
            await app.DisposeAsync();
        }

        try
        {
            Directory.Delete(_directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>One long-lived watch stream of a test, whatever its protocol; records who served it and how it ended.</summary>
internal sealed class Watch(int id, string kind, string key, int port)
{
    private readonly TaskCompletionSource<string> _first = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public int Id { get; } = id;

    public string Kind { get; } = kind;

    public string Key { get; } = key;

    public int Port { get; } = port;

    public Task<string> FirstPod => _first.Task;

    public string? LastPod { get; private set; }

    /// <summary>Stopwatch timestamp of the end, 0 while open.</summary>
    public long EndedAt { get; private set; }

    public string? EndStatus { get; private set; }

    public bool IsOpen => EndedAt == 0;

    public void Served(string pod)
    {
        LastPod = pod;
        _first.TrySetResult(pod);
    }

    public void Ended(string status)
    {
        if (EndedAt == 0)
        {
            EndStatus = status;
            EndedAt = Stopwatch.GetTimestamp();
            _first.TrySetResult("(ended before any event: " + status + ")");
        }
    }

    public override string ToString() => $"#{Id} {Kind} key {Key} via :{Port}";
}

/// <summary>C# clients for the three kinds (SSE over HttpClient, WebSocket over HTTP/1.1 or HTTP/2, gRPC framing over HttpClient HTTP/2).</summary>
internal static class WatchClients
{
    public static HttpClient CreateClient() => new(new SocketsHttpHandler { UseProxy = false, EnableMultipleHttp2Connections = true })
    {
        Timeout = Timeout.InfiniteTimeSpan,
    };

    public static Task RunAsync(Watch watch, HttpClient client, bool http2, CancellationToken cancellationToken) => watch.Kind switch
    {
        "sse" => SseAsync(watch, client, http2, cancellationToken),
        "ws" => WebSocketAsync(watch, http2, cancellationToken),
        _ => GrpcAsync(watch, client, cancellationToken),
    };

    private static async Task SseAsync(Watch watch, HttpClient client, bool http2, CancellationToken cancellationToken)
    {
        try
        {
            using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{watch.Port}/sse-forever", http2);
            request.Headers.Add("x-shard-key", watch.Key);
            request.Headers.Add("accept", "text/event-stream");
            using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellationToken));
            while (await reader.ReadLineAsync(cancellationToken) is { } line)
            {
                if (line.StartsWith("data: ", StringComparison.Ordinal))
                {
                    watch.Served(line[6..]);
                }
            }

            watch.Ended("eof");
        }
        catch (Exception ex) when (ex is HttpRequestException or IOException or OperationCanceledException)
        {
            watch.Ended("error: " + ex.GetType().Name);
        }
    }

    /// <summary>Carries WebSockets over HTTP/2 (RFC 8441), several on one connection.</summary>
    private static readonly HttpMessageInvoker Http2WebSockets = new(new SocketsHttpHandler { EnableMultipleHttp2Connections = true });

    private static async Task WebSocketAsync(Watch watch, bool http2, CancellationToken cancellationToken)
    {
        using var socket = new ClientWebSocket();
        socket.Options.SetRequestHeader("x-shard-key", watch.Key);
        if (http2)
        {
            socket.Options.HttpVersion = System.Net.HttpVersion.Version20;
            socket.Options.HttpVersionPolicy = HttpVersionPolicy.RequestVersionExact;
        }

        try
        {
            socket.Options.CollectHttpResponseDetails = true;
            await socket.ConnectAsync(new Uri($"ws://127.0.0.1:{watch.Port}/ws-watch"), http2 ? Http2WebSockets : null, cancellationToken);
            if (socket.HttpStatusCode != (http2 ? System.Net.HttpStatusCode.OK : System.Net.HttpStatusCode.SwitchingProtocols))
            {
                watch.Ended($"error: handshake answered {(int)socket.HttpStatusCode}");
                return;
            }

            var buffer = new byte[1024];
            while (true)
            {
                var result = await socket.ReceiveAsync(buffer, cancellationToken);
                if (result.MessageType == WebSocketMessageType.Close)
                {
                    watch.Ended("close " + (int?)socket.CloseStatus);
                    await socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, "ok", CancellationToken.None);
                    return;
                }

                watch.Served(Encoding.UTF8.GetString(buffer, 0, result.Count));
            }
        }
        catch (Exception ex) when (ex is WebSocketException or IOException or OperationCanceledException)
        {
            watch.Ended("error: " + ex.GetType().Name);
        }
    }

    private static async Task GrpcAsync(Watch watch, HttpClient client, CancellationToken cancellationToken)
    {
        try
        {
            using var request = Cluster.Request(HttpMethod.Post, $"http://127.0.0.1:{watch.Port}/echo.Echo/Watch", http2: true);
            request.Headers.Add("x-shard-key", watch.Key);
            request.Headers.TryAddWithoutValidation("te", "trailers");
            var payload = Encoding.UTF8.GetBytes("watch");
            var frame = new byte[5 + payload.Length];
            BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(1), payload.Length);
            payload.CopyTo(frame, 5);
            request.Content = new ByteArrayContent(frame);
            request.Content.Headers.TryAddWithoutValidation("content-type", "application/grpc");
            using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
            var stream = await response.Content.ReadAsStreamAsync(cancellationToken);
            var header = new byte[5];
            while (true)
            {
                try
                {
                    await stream.ReadExactlyAsync(header, cancellationToken);
                }
                catch (EndOfStreamException)
                {
                    break;
                }

                var message = new byte[BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(1))];
                await stream.ReadExactlyAsync(message, cancellationToken);
                watch.Served(Encoding.UTF8.GetString(message).Split(':')[0]);
            }

            var status = response.TrailingHeaders.TryGetValues("grpc-status", out var values) ? values.First()
                : response.Headers.TryGetValues("grpc-status", out var headerValues) ? headerValues.First() : "?";
            watch.Ended("grpc " + status);
        }
        catch (Exception ex) when (ex is HttpRequestException or IOException or OperationCanceledException)
        {
            watch.Ended("error: " + ex.GetType().Name);
        }
    }
}

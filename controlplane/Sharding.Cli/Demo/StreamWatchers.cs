using System.Globalization;
using System.Text.Json;

namespace Sharding.Cli.Demo;

/// <summary>
/// Long-lived SSE watch streams (<c>GET /watch</c>) opened through random sidecars. A stream that the server ends (a drain after
/// its key moved) is counted and reopened, and the reopened stream must land on the key's new owner. Even-numbered streams
/// speak HTTP/1.1 (the sidecar's fast path; a drain ends the response and closes the connection), odd-numbered ones HTTP/2
/// prior knowledge, like gRPC clients (a drain sends GOAWAY, then ends the stream).
/// </summary>
internal sealed class StreamWatchers : IAsyncDisposable
{
    private readonly LocalCluster _cluster;
    private readonly HttpClient _http = new(new SocketsHttpHandler { UseProxy = false }) { Timeout = Timeout.InfiniteTimeSpan };
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _tasks = [];
    private readonly string[] _servingPod;
    private long _open;
    private long _ended;
    private long _reopenedOnOwner;
    private long _reopenedElsewhere;

    public StreamWatchers(LocalCluster cluster, int count)
    {
        _cluster = cluster;
        _servingPod = new string[count];
        Keys = Enumerable.Range(0, count).Select(i => "stream-" + i.ToString(CultureInfo.InvariantCulture)).ToArray();
    }

    public string[] Keys { get; }

    public long Open => Interlocked.Read(ref _open);

    /// <summary>Streams the server ended (drained).</summary>
    public long Ended => Interlocked.Read(ref _ended);

    public long ReopenedOnOwner => Interlocked.Read(ref _reopenedOnOwner);

    public long ReopenedElsewhere => Interlocked.Read(ref _reopenedElsewhere);

    /// <summary>The pod each stream's events currently come from.</summary>
    public string? ServingPod(int index) => Volatile.Read(ref _servingPod[index]);

    public void Start()
    {
        for (var i = 0; i < Keys.Length; i++)
        {
            var index = i;
            _tasks.Add(Task.Run(() => RunAsync(index, _stop.Token)));
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await Task.WhenAll(_tasks).ConfigureAwait(false);
        _http.Dispose();
        _stop.Dispose();
    }

    private async Task RunAsync(int index, CancellationToken cancellationToken)
    {
        var random = new Random(index + 17);
        var reopened = false;
        while (!cancellationToken.IsCancellationRequested)
        {
            var targets = _cluster.Pods.Where(p => p.AcceptsLoad).ToArray();
            if (targets.Length == 0)
            {
                await Delay(100, cancellationToken).ConfigureAwait(false);
                continue;
            }

            var target = targets[random.Next(targets.Length)];
            try
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(target.SidecarUrl + "/watch"));
                request.Headers.Add("x-shard-key", Keys[index]);
                if (index % 2 == 1)
                {
                    request.Version = System.Net.HttpVersion.Version20;
                    request.VersionPolicy = HttpVersionPolicy.RequestVersionExact;
                }

                using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
                if (!response.IsSuccessStatusCode)
                {
                    await Delay(200, cancellationToken).ConfigureAwait(false);
                    continue;
                }

                using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false));
                var first = true;
                Interlocked.Increment(ref _open);
                try
                {
                    while (await reader.ReadLineAsync(cancellationToken).ConfigureAwait(false) is { } line)
                    {
                        if (!line.StartsWith("data: ", StringComparison.Ordinal))
                        {
                            continue;
                        }

                        using var json = JsonDocument.Parse(line.AsMemory(6));
                        var pod = json.RootElement.GetProperty("pod").GetString();
                        Volatile.Write(ref _servingPod[index], pod!);
                        if (first && reopened)
                        {
                            var owner = _cluster.ExpectedMap().OwnerOf(Keys[index])?.Name;
                            Interlocked.Increment(ref string.Equals(owner, pod, StringComparison.Ordinal) ? ref _reopenedOnOwner : ref _reopenedElsewhere);
                        }

                        first = false;
                    }
                }
                finally
                {
                    Interlocked.Decrement(ref _open);
                }

                // The server ended the stream: a drain.
                Interlocked.Increment(ref _ended);
                reopened = true;
            }
            catch (Exception ex) when (ex is HttpRequestException or IOException or JsonException or KeyNotFoundException)
            {
                Interlocked.Increment(ref _ended);
                reopened = true;
                await Delay(100, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
        }
    }

    private static async Task Delay(int milliseconds, CancellationToken cancellationToken)
    {
        try
        {
            await Task.Delay(milliseconds, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
    }
}

using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Text.Json;

namespace Sharding.Cli.Demo;

/// <summary>
/// Drives requests with random keys through random sidecars and checks every reply: the app says which pod served it, the
/// sidecar says which pod it believes owns the key (<c>x-sharding-owner</c>); they must agree.
/// </summary>
internal sealed class LoadGenerator : IAsyncDisposable
{
    private readonly LocalCluster _cluster;
    private readonly int _keySpace;
    private readonly HttpClient _http;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _workers = [];
    private readonly ConcurrentDictionary<string, long> _servedBy = new(StringComparer.Ordinal);
    private long _ok;
    private long _failed;
    private long _retried;
    private long _mismatched;

    public LoadGenerator(LocalCluster cluster, int keySpace)
    {
        _cluster = cluster;
        _keySpace = keySpace;
        _http = new HttpClient(new SocketsHttpHandler { UseProxy = false, MaxConnectionsPerServer = 64, PooledConnectionIdleTimeout = TimeSpan.FromSeconds(5) })
        {
            Timeout = TimeSpan.FromSeconds(10),
        };
    }

    /// <summary>The last pod seen serving each key (for measuring which keys moved).</summary>
    public ConcurrentDictionary<string, string> LastOwner { get; } = new(StringComparer.Ordinal);

    public long Ok => Interlocked.Read(ref _ok);

    public long Failed => Interlocked.Read(ref _failed);

    public long Retried => Interlocked.Read(ref _retried);

    /// <summary>Replies whose serving pod differs from the owner the answering sidecar named.</summary>
    public long Mismatched => Interlocked.Read(ref _mismatched);

    public IReadOnlyDictionary<string, long> ServedBy => _servedBy;

    public List<string> FailureSamples { get; } = [];

    public void Start(int workers)
    {
        for (var i = 0; i < workers; i++)
        {
            var seed = i;
            _workers.Add(Task.Run(() => RunWorkerAsync(seed, _stop.Token)));
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await Task.WhenAll(_workers).ConfigureAwait(false);
        _stop.Dispose();
        _http.Dispose();
    }

    private async Task RunWorkerAsync(int seed, CancellationToken cancellationToken)
    {
        var random = new Random(seed * 7919 + 1);
        while (!cancellationToken.IsCancellationRequested)
        {
            var targets = _cluster.Pods.Where(p => p.AcceptsLoad).ToArray();
            if (targets.Length == 0)
            {
                await Task.Delay(20, CancellationToken.None).ConfigureAwait(false);
                continue;
            }

            var key = "acct-" + random.Next(_keySpace).ToString(CultureInfo.InvariantCulture);
            await SendAsync(targets[random.Next(targets.Length)], key, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task SendAsync(DemoPod target, string key, CancellationToken cancellationToken)
    {
        // A 503 with Retry-After is the sidecar's way of saying "not now" during a change; clients retry it, so do we (3 times).
        for (var attempt = 0; attempt < 4; attempt++)
        {
            try
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(target.SidecarUrl + "/counter"));
                request.Headers.Add("x-shard-key", key);
                request.Content = new StringContent("{\"op\":\"increment\"}", System.Text.Encoding.UTF8, "application/json");
                using var response = await _http.SendAsync(request, CancellationToken.None).ConfigureAwait(false);
                var body = await response.Content.ReadAsStringAsync(CancellationToken.None).ConfigureAwait(false);
                if (response.StatusCode == HttpStatusCode.ServiceUnavailable && attempt < 3)
                {
                    Interlocked.Increment(ref _retried);
                    await Task.Delay(100, CancellationToken.None).ConfigureAwait(false);
                    continue;
                }

                if (response.StatusCode != HttpStatusCode.OK)
                {
                    Fail($"{(int)response.StatusCode} from {target.Name} for {key}: {Truncate(body)}");
                    return;
                }

                using var json = JsonDocument.Parse(body);
                var pod = json.RootElement.GetProperty("pod").GetString() ?? "?";
                var owner = response.Headers.TryGetValues("x-sharding-owner", out var values) ? values.FirstOrDefault() : null;
                if (!string.Equals(owner, pod, StringComparison.Ordinal))
                {
                    Interlocked.Increment(ref _mismatched);
                    Fail($"{key} served by {pod} but the sidecar named {owner ?? "no owner"}");
                }

                Interlocked.Increment(ref _ok);
                _servedBy.AddOrUpdate(pod, 1, static (_, n) => n + 1);
                LastOwner[key] = pod;
                return;
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or JsonException or KeyNotFoundException)
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    return;
                }

                Fail($"{ex.GetType().Name} from {target.Name} for {key}: {ex.Message}");
                return;
            }
        }
    }

    private void Fail(string sample)
    {
        Interlocked.Increment(ref _failed);
        lock (FailureSamples)
        {
            if (FailureSamples.Count < 10)
            {
                FailureSamples.Add(sample);
            }
        }
    }

    private static string Truncate(string text) => text.Length <= 200 ? text : text[..200] + "…";
}

using Sharding.Kubernetes;
using Sharding.Testing;
using Sharding.Testing.Kubernetes;

namespace Sharding.ControlPlane.Tests.Kubernetes;

public sealed class KubernetesClientTests : IAsyncLifetime
{
    private FakeKubernetesApiServer _server = null!;
    private KubernetesClient _client = null!;

    public async Task InitializeAsync()
    {
        _server = await FakeKubernetesApiServer.StartAsync();
        _client = _server.CreateClient();
    }

    public async Task DisposeAsync()
    {
        _client.Dispose();
        await _server.DisposeAsync();
    }

    [Fact]
    public async Task ListPodsAsync_WithSelector_ReturnsMatchingPodsAndListVersion()
    {
        _server.AddPod("shop", "a", new Dictionary<string, string> { ["sharding.dev/service"] = "s" }, ready: true, podIP: "10.0.0.1");
        _server.AddPod("shop", "b", new Dictionary<string, string> { ["app"] = "x" });
        var list = await _client.ListPodsAsync("shop", "sharding.dev/service", CancellationToken.None);
        Assert.Equal("a", Assert.Single(list.Items).Metadata.Name);
        Assert.True(list.Items[0].IsReady);
        Assert.Equal("10.0.0.1", list.Items[0].Status!.PodIP);
        Assert.Equal(_server.Revision.ToString(System.Globalization.CultureInfo.InvariantCulture), list.Metadata.ResourceVersion);
    }

    [Fact]
    public async Task ListPodsAsync_TooManyRequestsWithRetryAfter_RetriedAfterTheDelay()
    {
        // API Priority and Fairness sheds load with 429 + Retry-After; client-go waits that long and sends the request again.
        _server.AddPod("shop", "a", new Dictionary<string, string> { ["sharding.dev/service"] = "s" });
        _server.FailNextRequests(1, 429, pathContains: "/pods", retryAfterSeconds: 1);
        var started = System.Diagnostics.Stopwatch.StartNew();

        var list = await _client.ListPodsAsync("shop", "sharding.dev/service", CancellationToken.None);

        Assert.Equal("a", Assert.Single(list.Items).Metadata.Name);
        Assert.True(started.Elapsed >= TimeSpan.FromMilliseconds(900), $"retried after {started.Elapsed.TotalMilliseconds:0} ms");
        Assert.Equal(2, _server.Requests.Count(r => r.StartsWith("GET /api/v1/namespaces/shop/pods", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task GetLeaseAsync_ServiceUnavailableWithRetryAfter_Retried()
    {
        _server.FailNextRequests(2, 503, pathContains: "/leases/", retryAfterSeconds: 0);
        Assert.Null(await _client.GetLeaseAsync("sharding-system", "sharding-controlplane", CancellationToken.None));
        Assert.Equal(3, _server.Requests.Count(r => r.Contains("/leases/", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task WatchPodsAsync_TooManyRequestsWithRetryAfter_RetriedThenStreams()
    {
        _server.FailNextRequests(1, 429, pathContains: "/pods", retryAfterSeconds: 0);
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        await using var watch = _client.WatchPodsAsync("shop", null, _server.Revision.ToString(System.Globalization.CultureInfo.InvariantCulture), allowWatchBookmarks: false, timeoutSeconds: 30, stop.Token)
            .GetAsyncEnumerator(stop.Token);
        var next = watch.MoveNextAsync();
        await WaitUntilAsync(() => _server.ActiveWatchCount == 1);
        _server.AddPod("shop", "a", new Dictionary<string, string>());
        Assert.True(await next);
        Assert.Equal(WatchEventType.Added, watch.Current.Type);
    }

    [Fact]
    public async Task ListPodsAsync_TooManyRequestsWithoutRetryAfter_FailsAtOnceWithTheStatus()
    {
        _server.FailNextRequests(1, 429, pathContains: "/pods");
        var ex = await Assert.ThrowsAsync<KubernetesApiException>(() => _client.ListPodsAsync("shop", null, CancellationToken.None));
        Assert.Equal(429, ex.Code);
        Assert.Equal("TooManyRequests", ex.Reason);
    }

    [Fact]
    public async Task ListPodsAsync_RetryAfterBeyondTheRequestTimeout_FailsWithTheStatusNotATimeout()
    {
        using var client = new KubernetesClient(_client.Configuration, new SocketsHttpHandler(), disposeHandler: true) { RequestTimeout = TimeSpan.FromSeconds(2) };
        _server.FailNextRequests(1, 429, pathContains: "/pods", retryAfterSeconds: 60);
        var started = System.Diagnostics.Stopwatch.StartNew();
        var ex = await Assert.ThrowsAsync<KubernetesApiException>(() => client.ListPodsAsync("shop", null, CancellationToken.None));
        Assert.Equal(429, ex.Code);
        Assert.True(started.Elapsed < TimeSpan.FromSeconds(2), $"failed after {started.Elapsed.TotalMilliseconds:0} ms");
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(waited.Elapsed < TimeSpan.FromSeconds(10), "condition not met within 10 s");
            await Task.Delay(20);
        }
    }

    [Fact]
    public async Task ProjectedTokenFile_RotatedAndOldOneRejected_ReReadAndRetried()
    {
        using var folder = new TokenFolder("token-1");
        using var client = new KubernetesClient(new KubernetesClientConfiguration
        {
            Server = _server.BaseAddress,
            Token = BearerTokenSource.FromFile(folder.TokenPath, new ManualTimeProvider()),
        })
        { RequestTimeout = TimeSpan.FromSeconds(10) };
        _server.RequiredToken = "token-1";
        await client.ListPodsAsync("shop", null, CancellationToken.None);

        // kubelet rotates the projected token; the apiserver stops accepting the old one before our minute is up.
        folder.Write("token-2");
        _server.RequiredToken = "token-2";
        await client.ListPodsAsync("shop", null, CancellationToken.None);
    }

    [Fact]
    public async Task ProjectedTokenFile_UnreadableWhenTheTokenIsRejected_FailsAs401NotAsAnonymous403()
    {
        // After a 401 the file is read again; if that read fails, the retry must not go out without a token: the apiserver would
        // answer 403 "system:anonymous cannot list pods", reported (and logged) as a missing RBAC rule.
        using var folder = new TokenFolder("token-1");
        using var client = new KubernetesClient(new KubernetesClientConfiguration
        {
            Server = _server.BaseAddress,
            Token = BearerTokenSource.FromFile(folder.TokenPath, new ManualTimeProvider()),
        })
        { RequestTimeout = TimeSpan.FromSeconds(10) };
        _server.RequiredToken = "token-1";
        await client.ListPodsAsync("shop", null, CancellationToken.None);

        File.Delete(folder.TokenPath);
        _server.RequiredToken = "token-2";
        var ex = await Assert.ThrowsAsync<KubernetesApiException>(() => client.ListPodsAsync("shop", null, CancellationToken.None));
        Assert.Equal(401, ex.Code);
        Assert.False(ex.IsForbidden);
    }

    private sealed class TokenFolder : IDisposable
    {
        private readonly string _path = Directory.CreateTempSubdirectory("sa-token-").FullName;

        public TokenFolder(string token) => Write(token);

        public string TokenPath => Path.Combine(_path, "token");

        public void Write(string token) => File.WriteAllText(TokenPath, token + "\n");

        public void Dispose() => Directory.Delete(_path, recursive: true);
    }
}

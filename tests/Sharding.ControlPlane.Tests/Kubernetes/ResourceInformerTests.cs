using System.Threading.Channels;
using Sharding.Kubernetes;
using Sharding.Testing;
using Sharding.Testing.Kubernetes;

namespace Sharding.ControlPlane.Tests.Kubernetes;

/// <summary>The informer's resume policy against the fake API server; the informer's clock (backoff) is a manual one.</summary>
public sealed class ResourceInformerTests : IAsyncLifetime
{
    private const string Ns = "shop";
    private const string Selector = "sharding.dev/service";
    private readonly ManualTimeProvider _time = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Channel<InformerEvent<Pod>> _events = Channel.CreateUnbounded<InformerEvent<Pod>>();
    private FakeKubernetesApiServer _server = null!;
    private KubernetesClient _client = null!;
    private Task _pump = Task.CompletedTask;

    private static Dictionary<string, string> Labels => new() { [Selector] = "sharded-svc" };

    private int WatchRequests => _server.Requests.Count(static r => r.Contains("watch=1", StringComparison.Ordinal));

    public async Task InitializeAsync()
    {
        _server = await FakeKubernetesApiServer.StartAsync(_time);
        _client = _server.CreateClient();
    }

    public async Task DisposeAsync()
    {
        await _stop.CancelAsync();
        await _pump.WaitAsync(TimeSpan.FromSeconds(10)).ContinueWith(static _ => { }, TaskScheduler.Default);
        _client.Dispose();
        await _server.DisposeAsync();
    }

    [Fact]
    public async Task RunAsync_EveryWatchEndsAtOnce_BacksOffInsteadOfHammeringTheServer()
    {
        _server.EndWatchesAtOnce = true;
        await StartWithOnePodAsync();

        // The clock does not move: a backoff holds the informer after the first empty watch; a hot loop sends hundreds.
        await Task.Delay(TimeSpan.FromSeconds(1));
        Assert.InRange(WatchRequests, 1, 2);

        // The backoff ends, the next watch is empty too and backs off again. (Moving the clock a whole second while a watch is
        // open would make it look as long as a healthy one.)
        await AdvanceUntilAsync(() => WatchRequests >= 2);
        await Task.Delay(TimeSpan.FromSeconds(1));
        Assert.Equal(2, WatchRequests);

        // The proxy is fixed: the informer resumes from its version and sees changes again, without listing again.
        _server.EndWatchesAtOnce = false;
        await AdvanceUntilAsync(() => _server.ActiveWatchCount == 1);
        _server.AddPod(Ns, "sharded-svc-1", Labels, ready: true, podIP: "10.0.0.11");
        Assert.Equal("sharded-svc-1", (await NextAsync(InformerEventKind.Added)).Item!.Metadata.Name);
        Assert.Single(_server.Requests, static r => !r.Contains("watch=1", StringComparison.Ordinal));
    }

    [Fact]
    public async Task RunAsync_WatchLastsItsTimeoutWithoutEvents_ResumesAtOnce()
    {
        // A quiet watch that the server ends at timeoutSeconds is normal: no backoff, the clock need not move for the next one.
        await StartWithOnePodAsync(watchTimeoutSeconds: 5);
        await UntilAsync(() => _server.ActiveWatchCount == 1);

        _time.Advance(TimeSpan.FromSeconds(5));
        await UntilAsync(() => WatchRequests == 2 && _server.ActiveWatchCount == 1);
        _server.AddPod(Ns, "sharded-svc-1", Labels, ready: true, podIP: "10.0.0.11");
        Assert.Equal("sharded-svc-1", (await NextAsync(InformerEventKind.Added)).Item!.Metadata.Name);
    }

    [Fact]
    public async Task RunAsync_WatchEndsAtOnceAfterDeliveringEvents_ResumesAtOnce()
    {
        // Events prove the watch works: a resume right after them (the connection was recycled) is not held back.
        await StartWithOnePodAsync();
        await UntilAsync(() => _server.ActiveWatchCount == 1);

        _server.AddPod(Ns, "sharded-svc-1", Labels, ready: true, podIP: "10.0.0.11");
        await NextAsync(InformerEventKind.Added);
        _server.DropWatches();
        await UntilAsync(() => WatchRequests == 2 && _server.ActiveWatchCount == 1);
        _server.AddPod(Ns, "sharded-svc-2", Labels, ready: true, podIP: "10.0.0.12");
        Assert.Equal("sharded-svc-2", (await NextAsync(InformerEventKind.Added)).Item!.Metadata.Name);
    }

    [Fact]
    public async Task RunAsync_EveryWatchExpiresAtOnceEvenAfterAFreshList_BacksOffInsteadOfListingInALoop()
    {
        _server.ExpireEveryWatch = true;
        await StartWithOnePodAsync();

        // The clock does not move: a backoff holds the informer after the first 410; a hot loop lists again and again.
        await Task.Delay(TimeSpan.FromSeconds(1));
        Assert.InRange(ListRequests, 1, 2);

        // Fixed: the informer lists again after its backoff and watches from there.
        _server.ExpireEveryWatch = false;
        await AdvanceUntilAsync(() => _server.ActiveWatchCount == 1);
        _server.AddPod(Ns, "sharded-svc-1", Labels, ready: true, podIP: "10.0.0.11");
        await NextAsync(InformerEventKind.Synced);
        Assert.Equal("sharded-svc-1", (await NextAsync(InformerEventKind.Added)).Item!.Metadata.Name);
    }

    [Fact]
    public async Task RunAsync_WatchWindowCompactedLater_ListsAgainAtOnce()
    {
        // The usual 410: the version was fine when listed, and later left the window. That one lists again without waiting.
        await StartWithOnePodAsync();
        await UntilAsync(() => _server.ActiveWatchCount == 1);
        _server.AddPod(Ns, "sharded-svc-1", Labels, ready: true, podIP: "10.0.0.11");
        await NextAsync(InformerEventKind.Added); // a watch with events resumes at once when it drops

        // The watch drops; before the informer's next watch arrives, a pod is added and the window compacted past its version.
        var compacted = 0;
        _server.BeforeRequest = request =>
        {
            if (request.QueryString.Value?.Contains("watch=1", StringComparison.Ordinal) == true && Interlocked.Exchange(ref compacted, 1) == 0)
            {
                _server.AddPod(Ns, "sharded-svc-2", Labels, ready: true, podIP: "10.0.0.12");
                _server.ExpireHistory();
            }

            return Task.CompletedTask;
        };
        _server.DropWatches();
        Assert.Equal("sharded-svc-2", (await NextAsync(InformerEventKind.Added)).Item!.Metadata.Name);
        await NextAsync(InformerEventKind.Synced);
        Assert.Equal(2, ListRequests);
    }

    private int ListRequests => _server.Requests.Count(static r => !r.Contains("watch=1", StringComparison.Ordinal));

    // One pod listed and reported (Added, Synced): where every test starts.
    private async Task StartWithOnePodAsync(int watchTimeoutSeconds = 300)
    {
        _server.AddPod(Ns, "sharded-svc-0", Labels, ready: true, podIP: "10.0.0.10");
        var informer = new ResourceInformer<Pod>(
            new PodListWatchSource(_client, Ns, Selector, watchTimeoutSeconds),
            new ResourceInformerOptions { BackoffBase = TimeSpan.FromSeconds(1), BackoffMax = TimeSpan.FromSeconds(8), UseJitter = false },
            _time);
        _pump = Task.Run(async () =>
        {
            await foreach (var change in informer.RunAsync(_stop.Token))
            {
                _events.Writer.TryWrite(change);
            }
        });
        await NextAsync(InformerEventKind.Added);
        await NextAsync(InformerEventKind.Synced);
    }

    private async Task<InformerEvent<Pod>> NextAsync(InformerEventKind kind)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var next = await _events.Reader.ReadAsync(timeout.Token);
        Assert.Equal(kind, next.Kind);
        return next;
    }

    // Real time only: the informer's clock stays put.
    private static async Task UntilAsync(Func<bool> condition)
    {
        for (var waited = 0; !condition(); waited += 10)
        {
            Assert.True(waited < 10_000, "the condition did not hold within 10 s");
            await Task.Delay(10);
        }
    }

    // Moves the informer's clock a quarter second at a time (its backoff timer may not exist yet) until the condition holds.
    private async Task AdvanceUntilAsync(Func<bool> condition)
    {
        for (var i = 0; !condition(); i++)
        {
            Assert.True(i < 200, "the condition did not hold");
            await Task.Delay(50);
            _time.Advance(TimeSpan.FromMilliseconds(250));
        }
    }
}

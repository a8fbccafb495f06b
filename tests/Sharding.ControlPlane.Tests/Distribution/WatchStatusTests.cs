using System.Net;
using System.Net.Http.Headers;
using Sharding.ControlPlane.Tests.Hosting;
using Sharding.Protocol;
using Sharding.Protocol.V1;

namespace Sharding.ControlPlane.Tests.Distribution;

/// <summary>Every way a Watch ends carries a gRPC status (docs/protocol.md), on a real replica over h2c on 127.0.0.1.</summary>
public sealed class WatchStatusTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task Watch_DeadlineBeyondTimerRange_StreamsInsteadOfFailing()
    {
        // A 100-day deadline is sent as grpc-timeout 8640000S (GrpcProtocol.FormatTimeout), beyond what a .NET timer accepts
        // (about 49.7 days). The call must stream as if it had no deadline, not fail with HTTP 500.
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(2, tableSize: 251));
        await using var replica = await ControlPlaneReplica.StartAsync(cluster.Directory, "a");
        Assert.True(await replica.WaitAsync(r => r.Registry.IsSynced, Wait));
        using var client = new HttpClient();

        await using var call = await GrpcClient.StartServerStreamingAsync(
            client, replica.GrpcUrl, GrpcProtocol.WatchPath, new WatchRequest { Service = "sharded-svc" }, ShardMapUpdate.Parser,
            TimeSpan.FromDays(100), 1 << 20, CancellationToken.None);
        var first = await call.ReadAsync(CancellationToken.None).AsTask().WaitAsync(Wait);
        Assert.Equal(UpdateKind.Snapshot, first!.Kind);
    }

    [Fact]
    public async Task Watch_DeadlineExpiresBeforeTheRequestMessage_DeadlineExceeded()
    {
        // The client sends headers (grpc-timeout 300m) but never its request message: at the deadline the call must end with
        // DEADLINE_EXCEEDED, not with a 200 response that carries no grpc-status at all.
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(2, tableSize: 251));
        await using var replica = await ControlPlaneReplica.StartAsync(cluster.Directory, "a");
        Assert.True(await replica.WaitAsync(r => r.Registry.IsSynced, Wait));
        using var client = new HttpClient();
        var body = new NeverEndingContent();
        using var message = new HttpRequestMessage(HttpMethod.Post, new Uri(replica.GrpcUrl, GrpcProtocol.WatchPath))
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = body,
        };
        message.Content.Headers.ContentType = new MediaTypeHeaderValue(GrpcProtocol.ContentType);
        message.Headers.TryAddWithoutValidation("te", "trailers");
        message.Headers.TryAddWithoutValidation(GrpcProtocol.TimeoutHeader, "300m");

        using var timeout = new CancellationTokenSource(Wait);
        using var response = await client.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        string? status = response.Headers.TryGetValues(GrpcProtocol.StatusHeader, out var inHeaders) ? inHeaders.First() : null;
        if (status is null)
        {
            _ = await response.Content.ReadAsByteArrayAsync(timeout.Token);
            status = response.TrailingHeaders.TryGetValues(GrpcProtocol.StatusHeader, out var inTrailers) ? inTrailers.First() : null;
        }

        body.Release();
        Assert.Equal(((int)GrpcStatusCode.DeadlineExceeded).ToString(System.Globalization.CultureInfo.InvariantCulture), status);
    }

    [Fact]
    public async Task Watch_UnknownServiceAskedBeforeTheReplicaIsInSync_NotFoundOnceInSync()
    {
        // The replica has no membership yet (not in sync), so a Watch for any service waits. Once the membership arrives and the
        // service is not in it, the call must end with NOT_FOUND naming the known services, not with a stream without status.
        using var cluster = new TempCluster();
        await using var replica = await ControlPlaneReplica.StartAsync(cluster.Directory, "a");
        Assert.False(replica.Registry.IsSynced);
        using var client = new HttpClient();
        await using var call = await GrpcClient.StartServerStreamingAsync(
            client, replica.GrpcUrl, GrpcProtocol.WatchPath, new WatchRequest { Service = "nope", PingIntervalMs = 100 }, ShardMapUpdate.Parser,
            null, 1 << 20, CancellationToken.None);

        cluster.Write(TempCluster.Yaml(2, tableSize: 251));
        var ex = await Assert.ThrowsAsync<GrpcCallException>(async () =>
        {
            for (var i = 0; i < 1000 && await call.ReadAsync(CancellationToken.None).AsTask().WaitAsync(Wait) is not null; i++)
            {
            }
        });
        Assert.Equal(GrpcStatusCode.NotFound, ex.StatusCode);
        Assert.Contains("unknown service 'nope'", ex.Detail, StringComparison.Ordinal);
        Assert.Contains("sharded-svc", ex.Detail, StringComparison.Ordinal);
    }

    /// <summary>Request content that sends nothing until released.</summary>
    private sealed class NeverEndingContent : HttpContent
    {
        private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Release() => _release.TrySetResult();

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            await stream.FlushAsync();
            await _release.Task.WaitAsync(TimeSpan.FromSeconds(30));
        }

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }
}

/// <summary>The directory endpoints on a replica that has no complete view yet.</summary>
public sealed class DirectoryNotInSyncTests
{
    [Theory]
    [InlineData("/v1/lookup?service=sharded-svc&key=k")]
    [InlineData("/v1/services/sharded-svc/map")]
    public async Task Directory_BeforeTheReplicaIsInSync_503NotUnknownService(string path)
    {
        // No membership yet: the service may well exist. A 404 "unknown service" would tell a directory client that it does not.
        using var cluster = new TempCluster();
        await using var replica = await ControlPlaneReplica.StartAsync(cluster.Directory, "a");
        Assert.False(replica.Registry.IsSynced);
        using var http = new HttpClient { BaseAddress = replica.HttpUrl };

        using var response = await http.GetAsync(new Uri(path, UriKind.Relative));
        var text = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Contains("not in sync", text, StringComparison.Ordinal);
        Assert.NotNull(response.Headers.RetryAfter);
    }
}

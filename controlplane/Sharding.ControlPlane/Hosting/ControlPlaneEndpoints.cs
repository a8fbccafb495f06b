namespace Sharding.ControlPlane.Hosting;

/// <summary>The URLs this replica is bound to, known once Kestrel has started (port 0 resolves then).</summary>
internal sealed class ControlPlaneEndpoints
{
    private readonly TaskCompletionSource<(Uri Http, Uri Grpc)> _bound = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes with the bound HTTP/1.1 and gRPC URLs.</summary>
    public Task<(Uri Http, Uri Grpc)> Bound => _bound.Task;

    /// <summary>The advertised gRPC URL (what followers and sidecars dial), once bound.</summary>
    public Uri? AdvertisedGrpcUrl { get; private set; }

    public void SetBound(Uri http, Uri grpc, Uri advertisedGrpc)
    {
        AdvertisedGrpcUrl = advertisedGrpc;
        _bound.TrySetResult((http, grpc));
    }

    public void Fail(Exception exception) => _bound.TrySetException(exception);
}

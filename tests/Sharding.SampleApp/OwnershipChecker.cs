using System.Collections.Concurrent;
using System.Net.Http.Json;
using Microsoft.Extensions.Options;

namespace Sharding.SampleApp;

/// <summary>
/// The misroute detector: asks the sidecar's ownership API (<c>GET /v1/ownership?key=K</c>) whether this pod owns each key
/// it served, and counts the answers. Also records which keys were served under which generation, so tests can check that
/// no key was served by two pods in overlapping windows.
/// </summary>
internal sealed class OwnershipChecker(IHttpClientFactory clients, IOptions<SampleAppOptions> options, TimeProvider time)
{
    public const string HttpClientName = "sidecar-admin";

    private readonly ConcurrentQueue<ServedRecord> _served = new();
    private long _verified;
    private long _misroutes;
    private long _unverified;

    public bool Enabled => options.Value.SidecarAdminUrl.Length > 0;

    /// <summary>Checks one served request; <paramref name="routedGeneration"/> is the generation the sidecar routed it with.</summary>
    public async Task CheckAsync(string key, long routedGeneration, CancellationToken cancellationToken)
    {
        if (!Enabled)
        {
            return;
        }

        try
        {
            var client = clients.CreateClient(HttpClientName);
            var url = $"{options.Value.SidecarAdminUrl.TrimEnd('/')}/v1/ownership?key={Uri.EscapeDataString(key)}";
            var answer = await client.GetFromJsonAsync(url, SampleJsonContext.Default.OwnershipAnswer, cancellationToken).ConfigureAwait(false);
            if (answer is null)
            {
                Interlocked.Increment(ref _unverified);
                return;
            }

            _served.Enqueue(new ServedRecord(key, answer.Generation, time.GetUtcNow().ToUnixTimeMilliseconds()));
            if (answer.Owned)
            {
                Interlocked.Increment(ref _verified);
            }
            else if (routedGeneration < 0 || answer.Generation == routedGeneration)
            {
                // Not the owner under the very map it was routed with: a real misroute.
                Interlocked.Increment(ref _misroutes);
            }
            else
            {
                // The sidecar's map changed between routing and this check; ownership at the routed generation is unknown.
                Interlocked.Increment(ref _unverified);
            }
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or System.Text.Json.JsonException)
        {
            Interlocked.Increment(ref _unverified);
        }
    }

    /// <summary>Records that this pod served <paramref name="key"/> now under the generation its sidecar routed with (watch
    /// streams call it for every event, so a stream's whole serving window is visible). Capped: the oldest records go first.</summary>
    public void RecordServed(string key, long routedGeneration)
    {
        _served.Enqueue(new ServedRecord(key, routedGeneration, time.GetUtcNow().ToUnixTimeMilliseconds()));

        // Bounded: trims at most what the last enqueues added past the cap.
        while (_served.Count > MaxServedRecords && _served.TryDequeue(out _))
        {
        }
    }

    private const int MaxServedRecords = 200_000;

    public OwnershipStats Snapshot(int keyCount) =>
        new(options.Value.PodName, keyCount, Interlocked.Read(ref _verified), Interlocked.Read(ref _misroutes), Interlocked.Read(ref _unverified));

    public IReadOnlyCollection<ServedRecord> Served => _served.ToArray();
}

internal sealed record OwnershipAnswer(string Key, bool Owned, string? Owner, long Generation);

internal sealed record OwnershipStats(string Pod, int Keys, long Verified, long Misroutes, long Unverified);

internal sealed record ServedRecord(string Key, long Generation, long AtUnixMs);

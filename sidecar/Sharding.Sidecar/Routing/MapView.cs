using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using Microsoft.Extensions.Options;
using Sharding.Keys;
using Sharding.Mapping;
using Sharding.Sidecar.Hosting;

namespace Sharding.Sidecar.Routing;

/// <summary>What the sidecar derives once per published map, shared by the full router and the HTTP/1.1 fast path.</summary>
internal sealed class MapView
{
    private readonly ConcurrentDictionary<string, string> _peerBase = new(StringComparer.Ordinal);

    public MapView(ShardMap map, ShardKeyExtractor extractor, string podName)
    {
        Map = map;
        Extractor = extractor;
        Self = map.FindMember(podName);
        LocalMember = Self ?? new ShardMember(podName, "127.0.0.1", 0);
        GenerationText = map.Generation.ToString(CultureInfo.InvariantCulture);
        AppHeaders = Encoding.Latin1.GetBytes($"x-sharding-generation: {GenerationText}\r\nx-sharding-owner: {podName}\r\n");
        ResponseHeaders = Encoding.Latin1.GetBytes($"x-sharding-owner: {podName}\r\nx-sharding-generation: {GenerationText}\r\n");
        NoKeyServedHere = map.KeyPolicy.NoKey == NoKeyAction.ServeLocally
            || (map.KeyPolicy.NoKey == NoKeyAction.FixedMember && string.Equals(map.KeyPolicy.FallbackMember, podName, StringComparison.Ordinal));
    }

    public ShardMap Map { get; }

    public ShardKeyExtractor Extractor { get; }

    public string GenerationText { get; }

    /// <summary>This pod in the map (null: not a member, so it owns nothing).</summary>
    public ShardMember? Self { get; }

    /// <summary>This pod as the full path names it when it serves a request itself: <see cref="Self"/>, or a stand-in
    /// with this pod's name when the map does not list it (no-key "serve locally" still works).</summary>
    public ShardMember LocalMember { get; }

    /// <summary><c>x-sharding-generation</c> and <c>x-sharding-owner</c> for the app (what the sidecar decided).</summary>
    public byte[] AppHeaders { get; }

    /// <summary><c>x-sharding-owner</c> and <c>x-sharding-generation</c> for the client.</summary>
    public byte[] ResponseHeaders { get; }

    /// <summary>Whether a request without a key is served by this pod (no-key policy serveLocally, or fixedMember naming it).</summary>
    public bool NoKeyServedHere { get; }

    /// <summary>The base URL of another sidecar, built once per address.</summary>
    public string PeerBase(ShardMember owner) => _peerBase.GetOrAdd(owner.Address, static address => "http://" + address);
}

/// <summary>The <see cref="MapView"/> of the current map: built on first use after a publication, so the key rules are
/// compiled once per map (and reused when the policy did not change).</summary>
internal sealed class MapViews(IOptions<SidecarOptions> options)
{
    private readonly string _podName = options.Value.PodName;
    private MapView? _current;

    public MapView For(ShardMap map)
    {
        var view = Volatile.Read(ref _current);
        if (view is not null && ReferenceEquals(view.Map, map))
        {
            return view;
        }

        // Two threads may build the same view at once; either result is correct and the later one stays.
        var created = new MapView(map, ShardKeyExtractor.For(map.KeyPolicy, view?.Extractor), _podName);
        Volatile.Write(ref _current, created);
        return created;
    }
}

namespace Sharding.Client;

/// <summary>Settings of client-side routing for one sharded service (named options; the name is the service name).</summary>
/// <remarks>
/// Register with <c>services.AddHttpClient("x").AddShardRouting("sharded-svc", o =&gt; o.ControlPlaneAddresses = ["http://…:15001"])</c>
/// or <c>services.AddShardRouter("sharded-svc", …)</c>; validated when the host starts (<see cref="ShardRoutingOptionsValidator"/>).
/// </remarks>
public sealed class ShardRoutingOptions
{
    /// <summary>The sharded service to follow, as the control plane names it.</summary>
    /// <value>Set from the name given to <c>AddShardRouting</c>/<c>AddShardRouter</c>; required.</value>
    public string Service { get; set; } = string.Empty;

    /// <summary>Control-plane gRPC URLs (h2c), e.g. <c>http://sharding-controlplane.sharding-system.svc:8081</c>; any replica will do, they are
    /// tried in turn.</summary>
    /// <value>Empty; at least one absolute http:// or https:// URL is required.</value>
    public IList<string> ControlPlaneAddresses { get; set; } = [];

    /// <summary>Who subscribes, as the control plane logs it.</summary>
    /// <value>Null: <c>POD_NAME</c> when set, else the machine name, followed by <c>/client</c>.</value>
    public string? SubscriberName { get; set; }

    /// <summary>Whether a request rewritten to an owner keeps the original authority in its <c>Host</c> header (HTTP/2 <c>:authority</c>).</summary>
    /// <value>
    /// True: the app behind the owner's sidecar sees the same <c>Host</c> as when the request came through the Service, and TLS
    /// validates the certificate against the Service name, not the pod IP. False sends <c>Host: &lt;owner address&gt;</c>.
    /// A <c>Host</c> header the caller set explicitly is never touched.
    /// </value>
    public bool PreserveHostHeader { get; set; } = true;

    /// <summary>Whether JSON body rules may buffer the request body (up to the policy's <c>maxBodyBytes</c>) to find the key.</summary>
    /// <value>True, as the sidecar does; false sends such requests to the Service address and lets the sidecar read the body.</value>
    public bool ReadBodyKeys { get; set; } = true;

    /// <summary>The keep-alive interval asked from the control plane.</summary>
    /// <value>2 s, as the sidecar: with <see cref="IdleTimeout"/> 6 s a dead stream is noticed within seconds.</value>
    public TimeSpan PingInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>A subscription silent for this long (no update, no ping) is dropped and re-opened.</summary>
    /// <value>6 s: three missed pings.</value>
    public TimeSpan IdleTimeout { get; set; } = TimeSpan.FromSeconds(6);

    /// <summary>How long connecting to a control plane and receiving its response headers may take.</summary>
    /// <value>3 s.</value>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(3);

    /// <summary>The first reconnect delay; doubles per failed attempt, with jitter.</summary>
    /// <value>100 ms.</value>
    public TimeSpan MinReconnectDelay { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>The largest reconnect delay.</summary>
    /// <value>5 s: a control plane that comes back (or a service that gets created) is found within seconds.</value>
    public TimeSpan MaxReconnectDelay { get; set; } = TimeSpan.FromSeconds(5);
}

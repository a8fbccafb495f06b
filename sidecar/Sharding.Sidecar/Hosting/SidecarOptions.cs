using System.ComponentModel.DataAnnotations;

namespace Sharding.Sidecar.Hosting;

/// <summary>The sidecar's settings: section <c>Sidecar</c>, or environment variables <c>Sidecar__PodName</c> etc.</summary>
internal sealed class SidecarOptions
{
    /// <summary>The configuration section.</summary>
    public const string SectionName = "Sidecar";

    /// <summary>This pod's member name, as it appears in the shard map.</summary>
    /// <value>From <c>POD_NAME</c> (downward API) when not set.</value>
    public string PodName { get; set; } = string.Empty;

    /// <summary>The sharded service's name; a map for another service is refused.</summary>
    /// <value>Empty: take whatever service the map names.</value>
    public string Service { get; set; } = string.Empty;

    /// <summary>Address the data-plane listener binds.</summary>
    /// <value>
    /// <c>::</c>: dual-stack, IPv4 and IPv6 clients (IPv4 only where the kernel has no IPv6), so one default serves IPv4,
    /// IPv6 and dual-stack clusters. <c>0.0.0.0</c> is IPv4 only; tests and benchmarks use <c>127.0.0.1</c>.
    /// </value>
    public string ListenAddress { get; set; } = "::";

    /// <summary>The data-plane port: HTTP/1.1 and HTTP/2 prior knowledge on the same socket (and ALPN with TLS).</summary>
    /// <value>15100. 0 picks a free port (tests).</value>
    [Range(0, 65535)]
    public int Port { get; set; } = 15100;

    /// <summary>The admin port: <c>/metrics</c>, <c>/healthz</c>, <c>/readyz</c>, <c>/v1/map</c>.</summary>
    /// <value>15101. 0 picks a free port (tests).</value>
    [Range(0, 65535)]
    public int AdminPort { get; set; } = 15101;

    /// <summary>Address the admin port binds.</summary>
    /// <value><c>::</c> (dual-stack, as <see cref="ListenAddress"/>): Prometheus scrapes it through the pod IP; loopback-only endpoints check the caller themselves.</value>
    public string AdminListenAddress { get; set; } = "::";

    /// <summary>The app's port on 127.0.0.1 (ignored when <see cref="AppUnixSocket"/> is set).</summary>
    /// <value>8080.</value>
    [Range(1, 65535)]
    public int AppPort { get; set; } = 8080;

    /// <summary>A Unix socket the app listens on instead of <see cref="AppPort"/>.</summary>
    public string? AppUnixSocket { get; set; }

    /// <summary>Where the app listens: <see cref="AppUnixSocket"/>, else <see cref="AppPort"/> on 127.0.0.1.</summary>
    public System.Net.EndPoint AppEndPoint() => AppUnixSocket is { } path
        ? new System.Net.Sockets.UnixDomainSocketEndPoint(path)
        : new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, AppPort);

    /// <summary>Which HTTP version the sidecar speaks to the app.</summary>
    /// <value><see cref="AppProtocol.Http1"/>: every app speaks it; HTTP/2 requests (gRPC) go out as HTTP/2 prior knowledge
    /// anyway because gRPC needs it; choose <see cref="AppProtocol.Auto"/> to mirror the client's version always.</value>
    public AppProtocol AppProtocol { get; set; } = AppProtocol.Http1;

    /// <summary>
    /// The control plane's gRPC URLs (h2c, e.g. <c>http://sharding-controlplane.sharding-system.svc:8081</c>); any replica will do.
    /// When set, shard maps come from its <c>Assignments/Watch</c> stream and <see cref="Service"/> is required.
    /// </summary>
    /// <value>Empty: use <see cref="MapFile"/>. Exactly one of the two must be given.</value>
    public string[] ControlPlaneUrls { get; set; } = [];

    /// <summary>A static shard-map file (JSON or YAML), watched for changes: for running without a control plane.</summary>
    /// <value>Null. Exactly one of <see cref="MapFile"/> and <see cref="ControlPlaneUrls"/> must be given.</value>
    public string? MapFile { get; set; }

    /// <summary>The cluster secret for the forwarding proof (HMAC-SHA256); at least 16 chars, the same on every sidecar.</summary>
    public string ForwardingSecret { get; set; } = string.Empty;

    /// <summary>How far a forwarded request's timestamp may be from this sidecar's clock.</summary>
    /// <value>60 s: clocks in a cluster are NTP-synced to well under a second; a replayed proof is only good for its key anyway.</value>
    public TimeSpan ProofWindow { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Timeout for a TCP connect to the app or a peer sidecar.</summary>
    /// <value>2 s: loopback and pod-to-pod connects take well under a millisecond; longer means the peer is gone.</value>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>How long to wait for the upstream's response headers; <see cref="Timeout.InfiniteTimeSpan"/> or zero disables it.</summary>
    /// <value>100 s, as HttpClient and YARP: long polls answer within that.</value>
    public TimeSpan ResponseHeadersTimeout { get; set; } = TimeSpan.FromSeconds(100);

    /// <summary>How long a body may stay idle (no bytes either way) before the forward is cancelled; zero disables it.</summary>
    /// <value>Zero: SSE and WebSockets may be quiet for a long time; set it to bound idle streams.</value>
    public TimeSpan ActivityTimeout { get; set; } = TimeSpan.Zero;

    /// <summary>The slowest a client may read a response, in bytes per second, once a write has waited
    /// <see cref="MinResponseDataRateGracePeriod"/>: a slower client's connection is closed. Kestrel's
    /// <c>MinResponseDataRate</c> on the full path, and the same rule on the HTTP/1.1 fast path; zero disables it.</summary>
    /// <value>240, Kestrel's default: a client that stops reading must not hold its connection, and the app's, forever.</value>
    [Range(0, double.MaxValue)]
    public double MinResponseDataRate { get; set; } = 240;

    /// <summary>How long a write to a client may wait before <see cref="MinResponseDataRate"/> applies (more than 1 s).</summary>
    /// <value>5 s, Kestrel's default.</value>
    public TimeSpan MinResponseDataRateGracePeriod { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Connect retries to an owner, only while nothing of the request was sent.</summary>
    /// <value>2, with jittered exponential backoff from <see cref="RetryBaseDelay"/>.</value>
    [Range(0, 10)]
    public int ConnectRetries { get; set; } = 2;

    /// <summary>The first retry's delay before jitter.</summary>
    /// <value>50 ms.</value>
    public TimeSpan RetryBaseDelay { get; set; } = TimeSpan.FromMilliseconds(50);

    /// <summary>Failure ratio (connect failures / attempts) in <see cref="BreakerSamplingDuration"/> that opens an owner's circuit.</summary>
    /// <value>0.5.</value>
    [Range(0.01, 1.0)]
    public double BreakerFailureRatio { get; set; } = 0.5;

    /// <summary>Attempts needed in the sampling window before the circuit may open.</summary>
    /// <value>5.</value>
    [Range(2, 10_000)]
    public int BreakerMinimumThroughput { get; set; } = 5;

    /// <summary>The window in which failures are counted.</summary>
    /// <value>10 s.</value>
    public TimeSpan BreakerSamplingDuration { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How long an open circuit sheds load; also the <c>Retry-After</c> it answers with.</summary>
    /// <value>5 s.</value>
    public TimeSpan BreakerDuration { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>HTTP/2 connections to one peer sidecar may grow past one when streams fill it.</summary>
    /// <value>True.</value>
    public bool EnableMultipleHttp2Connections { get; set; } = true;

    /// <summary>A PFX certificate for TLS on the data-plane port (ALPN h2 and http/1.1); none = cleartext. Read again when the
    /// file changes (<see cref="ReloadingCertificate"/>).</summary>
    public string? TlsCertificatePath { get; set; }

    /// <summary>The PFX password.</summary>
    public string? TlsCertificatePassword { get; set; }

    /// <summary>Run socket continuations inline on the I/O thread instead of queueing them to the thread pool: Kestrel's
    /// <c>UnsafePreferInlineScheduling</c> and, in the sidecar process, <c>DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=1</c>
    /// unless that variable is already set.</summary>
    /// <value>True. The sidecar never blocks on a request path; without the thread-pool hop per read the HTTP/1.1 fast path
    /// needs about a quarter less CPU per request (docs/benchmarks.md).</value>
    public bool InlineSocketCompletions { get; set; } = true;

    /// <summary>Serve the sidecar's TCP listeners, the fast path's app and peer connections and the full path's HTTP/1.1 app
    /// connections with the sidecar's own epoll event loops (Transport/EpollLoop) instead of the runtime's sockets: a receive
    /// that drained the socket waits for the next edge instead of trying again and finding nothing. Linux only; elsewhere
    /// the runtime's sockets are used.</summary>
    /// <value>True.</value>
    public bool EpollTransport { get; set; } = true;

    /// <summary>Event loops (threads) of the epoll transport; connections are spread over them round robin.</summary>
    /// <value>0: half the processors the process may use, at least 2 (1 on one processor) and at most 4 (a sidecar shares
    /// its pod's CPU, and each loop links to every peer on its own).</value>
    [Range(0, 256)]
    public int IoThreads { get; set; }

    /// <summary>Before an event loop with nothing left to do sleeps in epoll_wait, it gives the processor to another runnable
    /// thread (sched_yield) and polls again, at most this many times in a row and at most once per event it handled. On a busy
    /// node the thread it yields to is often the app answering or the client sending, and the loop then finds their bytes
    /// without having slept: a sleeping loop must be woken (a wake-up and a context switch, much of a loopback request's CPU
    /// in a VM). On an idle node a yield returns at once, so the bound keeps the polling to about half a microsecond per event.
    /// 0: sleep at once.</summary>
    /// <value>16.</value>
    [Range(0, 1000)]
    public int IdleYields { get; set; } = 16;

    /// <summary>The fast path forwards to another sidecar over a multiplexed link (PeerLink/): one HTTP/2 connection per event
    /// loop and peer, each stream a tunnel for one kept-alive HTTP/1.1 connection, whose frames from all the requests of an
    /// event-loop turn leave in one send. Needs <see cref="EpollTransport"/>; a peer that does not answer as a link (an older
    /// version) is reached over plain HTTP/1.1 connections instead.</summary>
    /// <value>True.</value>
    public bool PeerLink { get; set; } = true;

    /// <summary>Serve plain HTTP/1.1 requests for keys this pod owns on the connection-level fast path (FastPath/Http1FastPath)
    /// instead of Kestrel plus an HTTP client. Applies on a cleartext data port with <see cref="AppProtocol"/> Http1; requests
    /// it does not take (forwards, upgrades, chunked uploads, JSON-body keys, event streams) use the full path as before.</summary>
    /// <value>True.</value>
    public bool Http1FastPath { get; set; } = true;

    /// <summary>On the fast path, forward HTTP/1.1 requests for other pods' keys to the owner's sidecar over kept-alive
    /// HTTP/1.1 connections (with the same internal headers and proof). False sends them through the full path, i.e. over
    /// the pooled h2c connections between sidecars (fewer connections between pods, more CPU per request).</summary>
    /// <value>True.</value>
    public bool Http1FastPathForwards { get; set; } = true;

    /// <summary>The <c>Retry-After</c> seconds on 503s that are not a breaker's (no map, loop prevented).</summary>
    /// <value>1.</value>
    [Range(0, 3600)]
    public int RetryAfterSeconds { get; set; } = 1;

    /// <summary>A request still open after this long is tracked as a long-lived stream (and drained when its key moves);
    /// gRPC, <c>text/event-stream</c> and WebSocket requests are tracked from their start.</summary>
    /// <value>1 s: ordinary requests finish well within it, long polls and streams do not.</value>
    public TimeSpan StreamThreshold { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>How long a stream whose key moved may go on after its connection got GOAWAY before the sidecar ends it;
    /// also the bound on draining every stream at shutdown.</summary>
    /// <value>5 s: enough for a client to open its new connection and for in-flight messages to arrive; short enough that
    /// nobody is served by a former owner for long.</value>
    public TimeSpan DrainGrace { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a forwarded request carrying a newer generation than this sidecar's waits for that map.</summary>
    /// <value>100 ms: map propagation to all sidecars takes a few ms; waiting longer only adds latency when the map is stuck.</value>
    public TimeSpan SkewWait { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Client connections older than this get GOAWAY (HTTP/1.1: close after the response); their streams are ended
    /// after <see cref="DrainGrace"/>. A coarse backstop; zero turns it off.</summary>
    /// <value>Zero (off): the sidecar drains exactly the streams whose key moved.</value>
    public TimeSpan MaxConnectionAge { get; set; } = TimeSpan.Zero;

    /// <summary>Random extra age up to this fraction of <see cref="MaxConnectionAge"/>, so connections opened together do not all close together.</summary>
    /// <value>0.1, as gRPC's MAX_CONNECTION_AGE jitter (±10 %).</value>
    [Range(0.0, 1.0)]
    public double MaxConnectionAgeJitter { get; set; } = 0.1;

    /// <summary>How many keys one <c>POST /v1/ownership/check</c> may ask about.</summary>
    /// <value>10,000.</value>
    [Range(1, 1_000_000)]
    public int OwnershipCheckMaxKeys { get; set; } = 10_000;
}

/// <summary>The HTTP version the sidecar uses towards its app.</summary>
internal enum AppProtocol
{
    /// <summary>Mirror the client: HTTP/1.1 for HTTP/1.x, HTTP/2 prior knowledge for HTTP/2 (the app must accept h2c).</summary>
    Auto = 0,

    /// <summary>Always HTTP/1.1, except gRPC (content type application/grpc), which needs HTTP/2.</summary>
    Http1 = 1,

    /// <summary>Always HTTP/2 prior knowledge.</summary>
    Http2 = 2,
}

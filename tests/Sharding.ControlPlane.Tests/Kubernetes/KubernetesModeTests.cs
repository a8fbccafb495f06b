using System.Net;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Sharding.ControlPlane.Distribution;
using Sharding.ControlPlane.Hosting;
using Sharding.ControlPlane.Leadership;
using Sharding.Kubernetes;
using Sharding.Protocol;
using Sharding.Testing;
using Sharding.Testing.Kubernetes;

namespace Sharding.ControlPlane.Tests.Kubernetes;

/// <summary>The whole control-plane app in Kubernetes mode against the fake API server: Lease election, pod membership, directory.</summary>
public sealed class KubernetesModeTests
{
    private const string Ns = "shop";

    [Fact]
    public async Task ControlPlane_KubernetesMode_LeadsThroughLeaseAndServesPodMembership()
    {
        await using var api = await FakeKubernetesApiServer.StartAsync();
        var labels = new Dictionary<string, string> { ["sharding.dev/service"] = "carts" };
        var annotations = new Dictionary<string, string> { ["sharding.dev/key"] = "header:x-cart" };
        api.AddPod(Ns, "carts-0", labels, annotations, ready: true, podIP: "10.0.0.10");
        api.AddPod(Ns, "carts-1", labels, annotations, ready: true, podIP: "10.0.0.11");
        api.AddPod(Ns, "carts-2", labels, annotations, ready: false, podIP: "10.0.0.12");

        var app = Build(api, Args());
        await app.StartAsync();
        try
        {
            var (http, _) = await app.Services.GetRequiredService<ControlPlaneEndpoints>().Bound.WaitAsync(TimeSpan.FromSeconds(10));
            var elector = app.Services.GetRequiredService<ILeaderElector>();
            Assert.IsType<LeaseLeaderElector>(elector);
            using var client = new HttpClient { BaseAddress = http };

            var map = await PollAsync(client, "/v1/services/carts/map?table=false", doc => doc.RootElement.GetProperty("members").GetArrayLength() == 2);

            Assert.True(elector.Current.IsLeader);
            var members = map.RootElement.GetProperty("members").EnumerateArray().Select(m => m.GetProperty("name").GetString()).ToList();
            Assert.Equal(["carts-0", "carts-1"], members);
            var lease = api.Get("leases", "sharding-system", "sharding-controlplane");
            Assert.Equal("cp-0", (string?)lease!["spec"]!["holderIdentity"]);

            // A pod turning Ready joins the next generation.
            api.Update("pods", Ns, "carts-2", pod => pod["status"]!["conditions"]![0]!["status"] = "True");
            using var grown = await PollAsync(client, "/v1/services/carts/map?table=false", doc => doc.RootElement.GetProperty("members").GetArrayLength() == 3);
            Assert.True(grown.RootElement.GetProperty("generation").GetInt64() > map.RootElement.GetProperty("generation").GetInt64());
            map.Dispose();
        }
        finally
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }

        // Graceful shutdown released the Lease so the next replica can take over at once.
        Assert.True(string.IsNullOrEmpty((string?)api.Get("leases", "sharding-system", "sharding-controlplane")!["spec"]!["holderIdentity"]));
    }

    [Fact]
    public async Task TwoReplicas_KubernetesMode_FollowerRelaysLeaderAndTakesOverOnRelease()
    {
        await using var api = await FakeKubernetesApiServer.StartAsync();
        var labels = new Dictionary<string, string> { ["sharding.dev/service"] = "carts" };
        api.AddPod(Ns, "carts-0", labels, ready: true, podIP: "10.0.0.10");
        api.AddPod(Ns, "carts-1", labels, ready: true, podIP: "10.0.0.11");

        var first = await StartReplicaAsync(api, "cp-0");
        var firstElector = first.App.Services.GetRequiredService<ILeaderElector>();
        for (var i = 0; i < 200 && !firstElector.Current.IsLeader; i++)
        {
            await Task.Delay(25);
        }

        Assert.True(firstElector.Current.IsLeader, "the first replica did not acquire the Lease");
        var second = await StartReplicaAsync(api, "cp-1");
        try
        {
            using var firstClient = new HttpClient { BaseAddress = first.Http };
            using var secondClient = new HttpClient { BaseAddress = second.Http };
            using var leaderMap = await PollAsync(firstClient, "/v1/services/carts/map?table=false", doc => doc.RootElement.GetProperty("members").GetArrayLength() == 2);
            var generation = leaderMap.RootElement.GetProperty("generation").GetInt64();

            // The follower learned the leader's gRPC URL from the Lease annotation and relays its generation.
            using var relayed = await PollAsync(secondClient, "/v1/services/carts/map?table=false", doc => doc.RootElement.GetProperty("generation").GetInt64() == generation);
            Assert.False(second.App.Services.GetRequiredService<ILeaderElector>().Current.IsLeader);

            // The leader stops gracefully and releases the Lease; the follower takes over and publishes a newer generation.
            await first.App.StopAsync();
            api.AddPod(Ns, "carts-2", labels, ready: true, podIP: "10.0.0.12");
            using var taken = await PollAsync(secondClient, "/v1/services/carts/map?table=false", doc => doc.RootElement.GetProperty("members").GetArrayLength() == 3);
            Assert.True(second.App.Services.GetRequiredService<ILeaderElector>().Current.IsLeader);
            Assert.True(taken.RootElement.GetProperty("generation").GetInt64() > generation);
            Assert.Equal("cp-1", (string?)api.Get("leases", "sharding-system", "sharding-controlplane")!["spec"]!["holderIdentity"]);
        }
        finally
        {
            await second.App.StopAsync();
            await second.App.DisposeAsync();
            await first.App.DisposeAsync();
        }
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public async Task LeaseDeleted_NewInstallation_RaisesItsEpochAboveWhatSubscribersHold(bool throughFollower, bool claimBeforeElection)
    {
        // A long-lived installation: the Lease has seen 6 transitions, so its leader publishes generations of epoch 7 (or more).
        await using var api = await FakeKubernetesApiServer.StartAsync();
        var labels = new Dictionary<string, string> { ["sharding.dev/service"] = "carts" };
        api.AddPod(Ns, "carts-0", labels, ready: true, podIP: "10.0.0.10");
        api.AddPod(Ns, "carts-1", labels, ready: true, podIP: "10.0.0.11");
        api.Create("leases", "sharding-system", new JsonObject
        {
            ["metadata"] = new JsonObject { ["name"] = "sharding-controlplane" },
            ["spec"] = new JsonObject { ["leaseDurationSeconds"] = 2, ["leaseTransitions"] = 6 },
        });
        int[] ports = [FreePort(), FreePort(), FreePort()];
        var old = await StartReplicaAsync(api, "cp-0", ports[0]);
        await using var watcher = new AssignmentsWatcher(new AssignmentsWatcherOptions
        {
            // After the reinstall it reaches the new leader (cp-1), or only a follower (cp-2) that must pass its claim on.
            ControlPlaneUrls = [new Uri($"http://127.0.0.1:{ports[0]}"), new Uri($"http://127.0.0.1:{ports[throughFollower ? 2 : 1]}")],
            Service = "carts",
            SubscriberName = "carts-watcher",
            MaxReconnectDelay = TimeSpan.FromMilliseconds(300),
        });
        watcher.Start();
        Assert.True(await watcher.Store.WaitForGenerationAsync(7L << 32, TimeSpan.FromSeconds(20), default));
        var held = watcher.Store.Current!;
        var heldEpoch = held.Generation >> 32; // 7, or 8 when a cold start let cp-0's first renewal miss its 1 s deadline
        Assert.True(heldEpoch >= 7, $"epoch {heldEpoch}");

        // The control plane's namespace is reinstalled: replicas and Lease gone, the sidecars (here a watcher) keep running and
        // holding that epoch. The new leader creates the Lease at epoch 0 and, told what the subscribers hold, moves above it.
        await old.App.StopAsync();
        await old.App.DisposeAsync();
        Assert.True(api.Delete("leases", "sharding-system", "sharding-controlplane"));
        if (claimBeforeElection)
        {
            // Someone else holds the new Lease for its first seconds: the watcher reaches cp-1 while it only follows.
            api.Create("leases", "sharding-system", new JsonObject
            {
                ["metadata"] = new JsonObject { ["name"] = "sharding-controlplane" },
                ["spec"] = new JsonObject { ["holderIdentity"] = "ghost", ["leaseDurationSeconds"] = 3, ["leaseTransitions"] = 0 },
            });
        }

        var leader = await StartReplicaAsync(api, "cp-1", ports[1]);
        WebApplication? follower = null;
        try
        {
            var elector = leader.App.Services.GetRequiredService<ILeaderElector>();
            if (claimBeforeElection)
            {
                var registry = leader.App.Services.GetRequiredService<ShardMapRegistry>();
                for (var i = 0; i < 200 && registry.HeldAbove("carts") == 0; i++)
                {
                    await Task.Delay(10);
                }

                Assert.True(registry.HeldAbove("carts") > 0, "the watcher did not reach cp-1");
                Assert.False(elector.Current.IsLeader, "cp-1 led before the watcher reached it: the test proves nothing");
            }

            for (var i = 0; i < 400 && !elector.Current.IsLeader; i++)
            {
                await Task.Delay(25);
            }

            Assert.True(elector.Current.IsLeader, "the new replica did not create the Lease");
            follower = (await StartReplicaAsync(api, "cp-2", ports[2])).App;

            var moved = await watcher.Store.WaitForGenerationAsync(held.Generation + 1, TimeSpan.FromSeconds(20), default);
            var now = watcher.Store.Current!;
            Assert.True(moved, $"the watcher still holds generation {now.Generation} (epoch {now.Generation >> 32})");
            Assert.True(now.Generation >> 32 > heldEpoch, $"generation {now.Generation} is not of an epoch above {heldEpoch}");
            Assert.Equal(["carts-0", "carts-1"], now.Members.Select(m => m.Name));
            Assert.True((int?)api.Get("leases", "sharding-system", "sharding-controlplane")!["spec"]!["leaseTransitions"] > heldEpoch);
            Assert.Equal(elector.Current.Epoch, (long?)api.Get("leases", "sharding-system", "sharding-controlplane")!["spec"]!["leaseTransitions"]);
        }
        finally
        {
            if (follower is not null)
            {
                await follower.StopAsync();
                await follower.DisposeAsync();
            }

            await leader.App.StopAsync();
            await leader.App.DisposeAsync();
        }
    }

    [Fact]
    public async Task Webhook_ServesTheRecordedApiServerRequestOverTls_TrustedThroughThePatchedCaBundle()
    {
        await using var api = await FakeKubernetesApiServer.StartAsync();
        api.Create("mutatingwebhookconfigurations", null, new JsonObject
        {
            ["apiVersion"] = "admissionregistration.k8s.io/v1",
            ["kind"] = "MutatingWebhookConfiguration",
            ["metadata"] = new JsonObject { ["name"] = "sharding-sidecar-injector" },
            ["webhooks"] = new JsonArray(new JsonObject
            {
                ["name"] = "inject.sharding.dev",
                ["clientConfig"] = new JsonObject
                {
                    ["service"] = new JsonObject { ["name"] = "sharding-controlplane", ["namespace"] = "sharding-system", ["path"] = "/mutate", ["port"] = 443 },
                },
                ["admissionReviewVersions"] = new JsonArray("v1"),
                ["sideEffects"] = "None",
            }),
        });
        var webhookPort = FreePort();
        var app = Build(api, Args($"--Sharding:Kubernetes:Injection:WebhookPort={webhookPort}", "--Sharding:Kubernetes:Injection:Image=sidecar:test"));
        await app.StartAsync();
        try
        {
            // The control plane puts its CA into the configuration's caBundle, which is all the API server trusts.
            var clock = System.Diagnostics.Stopwatch.StartNew();
            string? bundle = null;
            while (bundle is null && clock.Elapsed < TimeSpan.FromSeconds(20))
            {
                var b64 = (string?)api.Get("mutatingwebhookconfigurations", null, "sharding-sidecar-injector")!["webhooks"]![0]!["clientConfig"]!["caBundle"];
                bundle = string.IsNullOrEmpty(b64) ? null : Encoding.UTF8.GetString(Convert.FromBase64String(b64));
                await Task.Delay(bundle is null ? 50 : 0);
            }

            Assert.NotNull(bundle);
            using var ca = X509Certificate2.CreateFromPem(bundle);
            var body = await File.ReadAllBytesAsync(Path.Combine(RepositoryPaths.KubernetesFixtures, "webhook", "received", "01-valid.request.json"));

            // As the API server calls a service reference: https://<service>.<namespace>.svc:<service port>, name checked, only the
            // bundle trusted. The Host it sends names the Service port (443 in manifests/base), not the container port the
            // Service forwards to, so the webhook must not match on the Host's port.
            using (var client = WebhookClient(webhookPort, ca))
            {
                using var response = await client.PostAsync(
                    new Uri("https://sharding-controlplane.sharding-system.svc:443/mutate?timeout=5s"), Json(body));
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                var review = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
                Assert.True((bool)review["response"]!["allowed"]!);
                var patch = Encoding.UTF8.GetString(Convert.FromBase64String((string)review["response"]!["patch"]!));
                Assert.Contains("\"sharding-sidecar\"", patch, StringComparison.Ordinal);
                Assert.Contains("sidecar:test", patch, StringComparison.Ordinal);
            }

            // The plain HTTP port does not serve the webhook, whatever Host the request names.
            var (http, _) = await app.Services.GetRequiredService<ControlPlaneEndpoints>().Bound.WaitAsync(TimeSpan.FromSeconds(10));
            using (var plain = new HttpClient())
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(http, "/mutate")) { Content = Json(body) };
                request.Headers.Host = "sharding-controlplane.sharding-system.svc:" + webhookPort.ToString(System.Globalization.CultureInfo.InvariantCulture);
                using var response = await plain.SendAsync(request);
                Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
            }

            // A name the certificate does not carry, or a CA other than the bundle's, fails the TLS handshake.
            using (var client = WebhookClient(webhookPort, ca))
            {
                var wrongName = await Assert.ThrowsAsync<HttpRequestException>(() => client.PostAsync(new Uri($"https://webhook.example:{webhookPort}/mutate"), Json(body)));
                Assert.IsType<AuthenticationException>(wrongName.InnerException);
            }

            using var otherKey = ECDsa.Create();
            using var other = new CertificateRequest("CN=other-ca", otherKey, HashAlgorithmName.SHA256)
                .CreateSelfSigned(DateTimeOffset.UnixEpoch, DateTimeOffset.UnixEpoch.AddYears(100));
            using (var client = WebhookClient(webhookPort, other))
            {
                var untrusted = await Assert.ThrowsAsync<HttpRequestException>(
                    () => client.PostAsync(new Uri($"https://sharding-controlplane.sharding-system.svc:{webhookPort}/mutate"), Json(body)));
                Assert.IsType<AuthenticationException>(untrusted.InnerException);
            }
        }
        finally
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }

        static ByteArrayContent Json(byte[] body) => new(body) { Headers = { ContentType = new("application/json") } };
    }

    /// <summary>An HTTPS client that reaches any host name at 127.0.0.1:<paramref name="port"/> and trusts only <paramref name="ca"/>.</summary>
    private static HttpClient WebhookClient(int port, X509Certificate2 ca)
    {
        var policy = new X509ChainPolicy { TrustMode = X509ChainTrustMode.CustomRootTrust, RevocationMode = X509RevocationMode.NoCheck };
        policy.CustomTrustStore.Add(ca);
        var handler = new SocketsHttpHandler
        {
            SslOptions = { CertificateChainPolicy = policy },
            ConnectCallback = async (_, token) =>
            {
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                await socket.ConnectAsync(IPAddress.Loopback, port, token);
                return new NetworkStream(socket, ownsSocket: true);
            },
        };
        return new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(20) };
    }

    private static async Task<(WebApplication App, Uri Http)> StartReplicaAsync(FakeKubernetesApiServer api, string identity, int grpcPort = 0)
    {
        grpcPort = grpcPort == 0 ? FreePort() : grpcPort;
        var args = Args(
            $"--ControlPlane:ReplicaId={identity}",
            $"--ControlPlane:GrpcUrl=http://127.0.0.1:{grpcPort}",
            $"--Sharding:Kubernetes:Election:Identity={identity}",
            "--Sharding:Kubernetes:Election:RetryPeriod=00:00:00.200",
            "--Sharding:Kubernetes:Election:RenewDeadline=00:00:01",
            "--Sharding:Kubernetes:Election:LeaseDuration=00:00:02",
            $"--Sharding:Kubernetes:Election:LeaderUrl=http://127.0.0.1:{grpcPort}");
        var app = Build(api, args);
        await app.StartAsync();
        var (http, _) = await app.Services.GetRequiredService<ControlPlaneEndpoints>().Bound.WaitAsync(TimeSpan.FromSeconds(10));
        return (app, http);
    }

    private static async Task<JsonDocument> PollAsync(HttpClient client, string path, Func<JsonDocument, bool> done)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        string last = "(nothing)";
        while (clock.Elapsed < TimeSpan.FromSeconds(20))
        {
            using var response = await client.GetAsync(new Uri(path, UriKind.Relative));
            last = $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}";
            if (response.IsSuccessStatusCode)
            {
                var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
                if (done(doc))
                {
                    return doc;
                }

                doc.Dispose();
            }

            await Task.Delay(50);
        }

        throw new TimeoutException($"{path} never satisfied the condition; last answer: {last}");
    }

    [Theory]
    [InlineData("0")]
    [InlineData("-1")]
    [InlineData("2147483648")]
    public async Task InjectionRunAsUser_ThatIsRootOrOutOfRange_StopsTheStartWithAClearError(string value)
    {
        await using var api = await FakeKubernetesApiServer.StartAsync();
        var error = await Assert.ThrowsAsync<Microsoft.Extensions.Options.OptionsValidationException>(async () =>
        {
            await using var app = Build(api, Args($"--Sharding:Kubernetes:Injection:RunAsUser={value}"));
            await app.StartAsync();
        });
        Assert.Equal(
            "Sharding:Kubernetes:Injection:RunAsUser must be a non-root user id, 1..2147483647 (the sidecar runs as non-root)", error.Message);
    }

    private static int FreePort() => LoopbackPorts.Free();

    /// <summary>One replica in Kubernetes mode on free loopback ports, with <paramref name="overrides"/> (a later value wins).</summary>
    private static string[] Args(params string[] overrides) =>
    [
        "--ControlPlane:Mode=kubernetes",
        "--ControlPlane:HttpUrl=http://127.0.0.1:0",
        "--ControlPlane:GrpcUrl=http://127.0.0.1:0",
        "--ControlPlane:Debounce=00:00:00.050",
        "--Sharding:Kubernetes:Election:Namespace=sharding-system",
        "--Sharding:Kubernetes:Election:Identity=cp-0",
        "--Sharding:Kubernetes:Election:LeaderUrl=http://127.0.0.1:1",
        $"--Sharding:Kubernetes:Injection:WebhookPort={FreePort()}",
        .. overrides,
    ];

    /// <summary>The control plane with its Kubernetes client pointed at the fake API server.</summary>
    private static WebApplication Build(FakeKubernetesApiServer api, string[] args) => ControlPlaneApp.Build(args, builder =>
    {
        builder.Logging.ClearProviders();
        builder.Services.Replace(ServiceDescriptor.Singleton(api.CreateClient()));
    });
}

using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Sharding.ControlPlane.Injection;
using Sharding.Kubernetes;
using Sharding.Testing;
using Sharding.Testing.Kubernetes;

namespace Sharding.ControlPlane.Tests.Injection;

public sealed class SidecarInjectorTests
{
    private static readonly string Fixtures = Path.Combine(RepositoryPaths.KubernetesFixtures, "webhook", "received");
    private readonly SidecarInjector _injector = new(Options.Create(new SidecarInjectionOptions { Image = "sidecar:test" }));

    private static JsonObject Review(JsonObject pod, string operation = "CREATE") => new()
    {
        ["apiVersion"] = "admission.k8s.io/v1",
        ["kind"] = "AdmissionReview",
        ["request"] = new JsonObject
        {
            ["uid"] = "uid-1",
            ["kind"] = new JsonObject { ["group"] = "", ["version"] = "v1", ["kind"] = "Pod" },
            ["operation"] = operation,
            ["namespace"] = "shop",
            ["object"] = pod,
        },
    };

    private static JsonObject Pod(JsonObject? labels = null, JsonObject? annotations = null, params string[] containers)
    {
        var metadata = new JsonObject { ["name"] = "sharded-svc-0", ["namespace"] = "shop" };
        if (labels is not null)
        {
            metadata["labels"] = labels;
        }

        if (annotations is not null)
        {
            metadata["annotations"] = annotations;
        }

        return new JsonObject
        {
            ["kind"] = "Pod",
            ["apiVersion"] = "v1",
            ["metadata"] = metadata,
            ["spec"] = new JsonObject
            {
                ["containers"] = new JsonArray([.. (containers.Length == 0 ? ["app"] : containers).Select(n => (JsonNode)new JsonObject
                {
                    ["name"] = n,
                    ["image"] = "app:1",
                    ["ports"] = new JsonArray(new JsonObject { ["containerPort"] = 7000 }),
                })]),
            },
        };
    }

    private (AdmissionResponse Response, JsonObject? Patched) Run(JsonObject review)
    {
        var result = _injector.Review(Encoding.UTF8.GetBytes(review.ToJsonString()));
        Assert.Equal(200, result.StatusCode);
        var response = result.Review!.Response!;
        Assert.Equal("uid-1", response.Uid);
        if (response.Patch is null)
        {
            return (response, null);
        }

        Assert.Equal("JSONPatch", response.PatchType);
        var patch = (JsonArray)JsonNode.Parse(response.Patch)!;
        return (response, (JsonObject)JsonPatch.Apply(review["request"]!["object"]!, patch));
    }

    [Fact]
    public void Review_OptedInByLabel_AddsSidecarAndServiceLabel()
    {
        var pod = Pod(new JsonObject { ["sharding.dev/inject"] = "true" }, new JsonObject { ["sharding.dev/service"] = "carts" });
        var (response, patched) = Run(Review(pod));

        Assert.True(response.Allowed);
        Assert.Equal("carts", (string?)patched!["metadata"]!["labels"]!["sharding.dev/service"]);
        var containers = patched["spec"]!["containers"]!.AsArray();
        Assert.Equal(["app", "sharding-sidecar"], containers.Select(c => (string?)c!["name"]));
        var sidecar = containers[1]!;
        Assert.Equal("sidecar:test", (string?)sidecar["image"]);
        Assert.Equal(15100, (int?)sidecar["ports"]![0]!["containerPort"]);
        Assert.Equal(15101, (int?)sidecar["readinessProbe"]!["httpGet"]!["port"]);
        Assert.Equal(15101, (int?)sidecar["livenessProbe"]!["httpGet"]!["port"]);
        var env = sidecar["env"]!.AsArray().ToDictionary(e => (string)e!["name"]!, e => e);
        Assert.Equal("metadata.name", (string?)env["POD_NAME"]!["valueFrom"]!["fieldRef"]!["fieldPath"]);
        Assert.Equal("metadata.namespace", (string?)env["POD_NAMESPACE"]!["valueFrom"]!["fieldRef"]!["fieldPath"]);
        Assert.Equal("status.podIP", (string?)env["POD_IP"]!["valueFrom"]!["fieldRef"]!["fieldPath"]);
        Assert.Equal("7000", (string?)env["Sidecar__AppPort"]!["value"]);
        Assert.Equal("carts", (string?)env["Sidecar__Service"]!["value"]);
        Assert.Equal("15100", (string?)env["Sidecar__Port"]!["value"]);
        Assert.Equal("15101", (string?)env["Sidecar__AdminPort"]!["value"]);
        Assert.Equal("http://sharding-controlplane.sharding-system.svc:8081", (string?)env["Sidecar__ControlPlaneUrls__0"]!["value"]);
        Assert.Equal("sharding-forwarding-secret", (string?)env["Sidecar__ForwardingSecret"]!["valueFrom"]!["secretKeyRef"]!["name"]);
        Assert.NotNull(sidecar["resources"]!["requests"]);
    }

    [Fact]
    public void Review_LabelKeyWithSlash_IsEscapedAsTilde1()
    {
        var pod = Pod(new JsonObject { ["sharding.dev/inject"] = "true", ["app"] = "carts" });
        var result = _injector.Review(Encoding.UTF8.GetBytes(Review(pod).ToJsonString()));
        var patchText = Encoding.UTF8.GetString(result.Review!.Response!.Patch!);
        Assert.Contains("/metadata/labels/sharding.dev~1service", patchText, StringComparison.Ordinal);
    }

    [Fact]
    public void Review_OptedInByAnnotationWithoutLabels_CreatesLabelsMap()
    {
        var pod = Pod(annotations: new JsonObject { ["sharding.dev/inject"] = "true", ["sharding.dev/service"] = "docs", ["sharding.dev/app-port"] = "9000" });
        var (_, patched) = Run(Review(pod));
        Assert.Equal("docs", (string?)patched!["metadata"]!["labels"]!["sharding.dev/service"]);
        var env = patched["spec"]!["containers"]![1]!["env"]!.AsArray();
        Assert.Equal("9000", (string?)env.Single(e => (string?)e!["name"] == "Sidecar__AppPort")!["value"]);
    }

    [Fact]
    public void Review_StatefulSetPod_ServiceFromOwner()
    {
        var pod = Pod(new JsonObject { ["sharding.dev/inject"] = "true" });
        pod["metadata"]!["ownerReferences"] = new JsonArray(new JsonObject { ["kind"] = "StatefulSet", ["name"] = "sharded-svc", ["controller"] = true });
        var (_, patched) = Run(Review(pod));
        Assert.Equal("sharded-svc", (string?)patched!["metadata"]!["labels"]!["sharding.dev/service"]);
    }

    [Fact]
    public void Review_DeploymentPod_ServiceFromReplicaSetWithoutHash()
    {
        var pod = Pod(new JsonObject { ["sharding.dev/inject"] = "true", ["pod-template-hash"] = "7d9f8c" });
        pod["metadata"]!["ownerReferences"] = new JsonArray(new JsonObject { ["kind"] = "ReplicaSet", ["name"] = "web-7d9f8c", ["controller"] = true });
        var (_, patched) = Run(Review(pod));
        Assert.Equal("web", (string?)patched!["metadata"]!["labels"]!["sharding.dev/service"]);
    }

    [Fact]
    public void Review_NotOptedIn_AllowedWithoutPatch()
    {
        var (response, patched) = Run(Review(Pod(new JsonObject { ["app"] = "x" })));
        Assert.True(response.Allowed);
        Assert.Null(patched);
        Assert.Null(response.PatchType);
    }

    [Fact]
    public void Review_AlreadyInjected_AllowedWithoutPatch()
    {
        var (response, patched) = Run(Review(Pod(new JsonObject { ["sharding.dev/inject"] = "true", ["app"] = "x" }, null, "app", "sharding-sidecar")));
        Assert.True(response.Allowed);
        Assert.Null(patched);
    }

    [Fact]
    public void Review_AppliedTwice_SecondPassIsNoOp()
    {
        var review = Review(Pod(new JsonObject { ["sharding.dev/inject"] = "true", ["app"] = "x" }));
        var (_, patched) = Run(review);
        review["request"]!["object"] = patched;
        var (response, again) = Run(review);
        Assert.True(response.Allowed);
        Assert.Null(again);
    }

    [Fact]
    public void Review_UpdateOperation_NotPatched()
    {
        var (response, patched) = Run(Review(Pod(new JsonObject { ["sharding.dev/inject"] = "true", ["app"] = "x" }), "UPDATE"));
        Assert.True(response.Allowed);
        Assert.Null(patched);
    }

    [Fact]
    public void Review_NoServiceDerivable_DeniedWithClearMessage()
    {
        var (response, _) = Run(Review(Pod(new JsonObject { ["sharding.dev/inject"] = "true" })));
        Assert.False(response.Allowed);
        Assert.Equal(400, response.Status!.Code);
        Assert.Contains("sharding.dev/service", response.Status.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("not json", "not JSON")]
    [InlineData("[1,2]", "not an AdmissionReview")]
    [InlineData("{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1beta1\",\"request\":{\"uid\":\"u\"}}", "admissionReviewVersions")]
    [InlineData("{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\"}", "request.uid")]
    public void Review_Malformed_Http400WithMessage(string body, string expected)
    {
        var result = _injector.Review(Encoding.UTF8.GetBytes(body));
        Assert.Equal(400, result.StatusCode);
        Assert.Contains(expected, result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void Review_PodWithoutContainers_DeniedNotCrashed()
    {
        var pod = new JsonObject { ["kind"] = "Pod", ["metadata"] = new JsonObject { ["labels"] = new JsonObject { ["sharding.dev/inject"] = "true" } } };
        var (response, _) = Run(Review(pod));
        Assert.False(response.Allowed);
        Assert.Contains("spec.containers", response.Status!.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("", "not JSON")]
    [InlineData("{\"kind\":1}", "not an AdmissionReview")]
    [InlineData("{\"kind\":\"AdmissionReview\",\"apiVersion\":[\"admission.k8s.io/v1\"]}", "apiVersion")]
    [InlineData("{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"uid\":5}}", "request.uid")]
    [InlineData("{\"kind\":\"AdmissionReview\",\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"uid\":\"u\"}}", "")]
    public void Review_EnvelopeFieldsOfTheWrongType_Http400NotAnException(string body, string expected)
    {
        var result = _injector.Review(Encoding.UTF8.GetBytes(body));
        Assert.Equal(400, result.StatusCode);
        Assert.Contains(expected, result.Error, StringComparison.Ordinal);
    }

    public static TheoryData<string> BrokenPods => new()
    {
        // Shapes a real apiserver does not send, but a caller of /mutate can: each must be a denial, not an exception (HTTP 500).
        """{"kind":"Pod","metadata":{"labels":{"sharding.dev/inject":true}},"spec":{"containers":[{"name":"app"}]}}""",
        """{"kind":"Pod","metadata":{"labels":{"sharding.dev/inject":"true","app":"a"}},"spec":"none"}""",
        """{"kind":"Pod","metadata":{"labels":{"sharding.dev/inject":"true","app":"a"}},"spec":{"containers":["app"]}}""",
        """{"kind":"Pod","metadata":{"labels":{"sharding.dev/inject":"true","app":"a"}},"spec":{"containers":[{"name":"app","ports":[{"containerPort":"7000"}]}]}}""",
        """{"kind":"Pod","metadata":{"labels":{"sharding.dev/inject":"true"},"ownerReferences":[{"kind":"StatefulSet","name":"s","controller":"yes"}]},"spec":{"containers":[{"name":"app"}]}}""",
        """{"kind":"Pod","metadata":{"labels":{"sharding.dev/inject":"true","app":"a"},"annotations":{"sharding.dev/app-port":9000}},"spec":{"containers":[{"name":"app"}]}}""",
    };

    [Theory]
    [MemberData(nameof(BrokenPods))]
    public void Review_PodFieldsOfTheWrongType_AnsweredNotThrown(string pod)
    {
        var (response, patched) = Run(Review(JsonNode.Parse(pod)!.AsObject()));
        Assert.Equal("uid-1", response.Uid);
        if (!response.Allowed)
        {
            Assert.Equal(400, response.Status!.Code);
            Assert.False(string.IsNullOrEmpty(response.Status.Message));
        }
        else
        {
            Assert.Null(patched);
        }
    }

    [Fact]
    public void Review_EmptyContainerList_DeniedNotCrashed()
    {
        // containers: [] reaches the webhook (validation runs after mutating admission); injecting would make it a valid pod
        // holding only the sidecar, and indexing the first container's ports threw (HTTP 500).
        var pod = Pod(new JsonObject { ["sharding.dev/inject"] = "true", ["app"] = "x" });
        pod["spec"]!["containers"] = new JsonArray();
        var (response, _) = Run(Review(pod));
        Assert.False(response.Allowed);
        Assert.Contains("spec.containers", response.Status!.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Review_FirstContainerWithEmptyPortList_DefaultAppPort()
    {
        var pod = Pod(new JsonObject { ["sharding.dev/inject"] = "true", ["app"] = "x" });
        pod["spec"]!["containers"]![0]!["ports"] = new JsonArray();
        var (response, patched) = Run(Review(pod));
        Assert.True(response.Allowed);
        var env = patched!["spec"]!["containers"]![1]!["env"]!.AsArray();
        Assert.Equal("8080", (string?)env.Single(e => (string?)e!["name"] == "Sidecar__AppPort")!["value"]);
    }

    [Fact]
    public void Review_SidecarPortAnnotation_TheSidecarListensOnIt()
    {
        // Membership publishes podIP:<sharding.dev/sidecar-port>, so the injected sidecar must listen there, not on 15100.
        var pod = Pod(new JsonObject { ["sharding.dev/inject"] = "true", ["app"] = "x" }, new JsonObject { ["sharding.dev/sidecar-port"] = "16000" });
        var (response, patched) = Run(Review(pod));
        Assert.True(response.Allowed);
        var sidecar = patched!["spec"]!["containers"]![1]!;
        Assert.Equal(16000, (int?)sidecar["ports"]![0]!["containerPort"]);
        Assert.Equal("16000", (string?)sidecar["env"]!.AsArray().Single(e => (string?)e!["name"] == "Sidecar__Port")!["value"]);
        Assert.Equal(15101, (int?)sidecar["readinessProbe"]!["httpGet"]!["port"]);
    }

    [Theory]
    [InlineData("proxy")]
    [InlineData("0")]
    [InlineData("70000")]
    [InlineData("15101")]
    [InlineData("7000")]
    public void Review_BadSidecarPortAnnotation_DeniedWithClearMessage(string value)
    {
        var pod = Pod(new JsonObject { ["sharding.dev/inject"] = "true", ["app"] = "x" }, new JsonObject { ["sharding.dev/sidecar-port"] = value });
        var (response, _) = Run(Review(pod));
        Assert.False(response.Allowed);
        Assert.Contains("sharding.dev/sidecar-port", response.Status!.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Review_SidecarAlreadyANativeSidecarInitContainer_NotInjectedAgain()
    {
        // A second container of the same name makes the pod invalid ("Duplicate value"): the init container counts as injected.
        var pod = Pod(new JsonObject { ["sharding.dev/inject"] = "true", ["app"] = "x" });
        pod["spec"]!["initContainers"] = new JsonArray(new JsonObject { ["name"] = "sharding-sidecar", ["image"] = "sidecar:1", ["restartPolicy"] = "Always" });
        var (response, patched) = Run(Review(pod));
        Assert.True(response.Allowed);
        Assert.Null(patched);
    }

    [Fact]
    public void Review_UnknownOrInvalidShardingAnnotations_InjectedWithWarnings()
    {
        // A typo or a bad value would otherwise be ignored silently (the control plane logs it and uses the default).
        var pod = Pod(new JsonObject { ["sharding.dev/inject"] = "true", ["app"] = "x" }, new JsonObject
        {
            ["sharding.dev/app_port"] = "9000",
            ["sharding.dev/algorithm"] = "rendezvous",
            ["sharding.dev/table-size"] = "1000",
            ["sharding.dev/key"] = "header:x-tenant,bogus:y",
            ["sharding.dev/hash-key"] = "ip",
            ["sharding.dev/weight"] = "-1",
            ["example.com/other"] = "ignored",
        });
        var (response, patched) = Run(Review(pod));
        Assert.True(response.Allowed);
        Assert.NotNull(patched);
        var warnings = response.Warnings!;
        Assert.Contains(warnings, w => w.Contains("sharding.dev/app_port", StringComparison.Ordinal));
        foreach (var key in new[] { "algorithm", "table-size", "key", "hash-key", "weight" })
        {
            Assert.Contains(warnings, w => w.Contains("sharding.dev/" + key + "=", StringComparison.Ordinal));
        }

        Assert.DoesNotContain(warnings, w => w.Contains("example.com", StringComparison.Ordinal));
        Assert.Null(Run(Review(Pod(new JsonObject { ["sharding.dev/inject"] = "true", ["app"] = "x" }))).Response.Warnings);
    }

    [Fact]
    public void Review_KeyPolicyAnnotations_KnownAndChecked()
    {
        JsonObject Annotated(JsonObject annotations) => Pod(new JsonObject { ["sharding.dev/inject"] = "true", ["app"] = "x" }, annotations);

        var good = Run(Review(Annotated(new JsonObject
        {
            ["sharding.dev/no-key"] = "fixed-member",
            ["sharding.dev/fallback-member"] = "x-0",
            ["sharding.dev/max-body-bytes"] = "1024",
        }))).Response;
        Assert.Null(good.Warnings);

        var bad = Run(Review(Annotated(new JsonObject { ["sharding.dev/no-key"] = "fixed-member", ["sharding.dev/max-body-bytes"] = "16777217" }))).Response;
        Assert.Contains("sharding: annotation sharding.dev/no-key='fixed-member' is invalid (fixed-member needs sharding.dev/fallback-member naming the pod that serves key-less requests); the default is used", bad.Warnings!);
        Assert.Contains("sharding: annotation sharding.dev/max-body-bytes='16777217' is invalid (must be a number of bytes 1-16777216, e.g. 65536); the default is used", bad.Warnings!);
        Assert.Contains(
            "sharding: annotation sharding.dev/no-key='maybe' is invalid (use reject, serve-locally or fixed-member); the default is used",
            Run(Review(Annotated(new JsonObject { ["sharding.dev/no-key"] = "maybe" }))).Response.Warnings!);
    }

    [Fact]
    public void Review_Sidecar_MeetsRestrictedPodSecurity()
    {
        // Pod Security "restricted" wants, per container unless the pod sets it: runAsNonRoot, no privilege escalation, all
        // capabilities dropped and a seccomp profile. Without the last, a compliant pod was refused once injected.
        var (_, patched) = Run(Review(Pod(new JsonObject { ["sharding.dev/inject"] = "true", ["app"] = "x" })));
        var security = patched!["spec"]!["containers"]![1]!["securityContext"]!;
        Assert.True((bool?)security["runAsNonRoot"]);
        Assert.Null(security["runAsUser"]); // the image's user (or the one OpenShift assigns from the namespace's range)
        Assert.False((bool?)security["allowPrivilegeEscalation"]);
        Assert.Equal("ALL", (string?)security["capabilities"]!["drop"]![0]);
        Assert.Equal("RuntimeDefault", (string?)security["seccompProfile"]!["type"]);
    }

    /// <summary>
    /// An app that runs as root with a pod-level <c>runAsUser: 0</c>: the sidecar's own <c>runAsUser</c> wins over the pod's,
    /// so its <c>runAsNonRoot</c> lets it start (without it the kubelet refuses the container); the app keeps the pod's. A pod
    /// with a non-root user (or none) leaves the sidecar without one, as OpenShift's UID ranges need.
    /// </summary>
    [Theory]
    [InlineData(0, 1654L)]
    [InlineData(1000, null)]
    [InlineData(null, null)]
    public void Review_PodRunningAsRoot_SidecarStillRunsAsItsOwnNonRootUser(int? podUser, long? sidecarUser)
    {
        var pod = Pod(new JsonObject { ["sharding.dev/inject"] = "true", ["app"] = "x" });
        pod["spec"]!["securityContext"] = podUser is null ? new JsonObject { ["fsGroup"] = 2000 } : new JsonObject { ["runAsUser"] = podUser, ["fsGroup"] = 2000 };
        var (_, patched) = Run(Review(pod));
        Assert.Equal(podUser, (int?)patched!["spec"]!["securityContext"]!["runAsUser"]);
        Assert.Null(patched["spec"]!["containers"]![0]!["securityContext"]);
        var sidecar = patched["spec"]!["containers"]![1]!["securityContext"]!;
        Assert.Equal(sidecarUser, (long?)sidecar["runAsUser"]);
        Assert.True((bool?)sidecar["runAsNonRoot"]);
    }

    [Fact]
    public void Review_RecordedApiServerRequest_InjectsAndAnswersInRecordedShape()
    {
        var path = Path.Combine(Fixtures, "01-valid.request.json");
        Assert.True(File.Exists(path), "fixture missing: " + path);
        var body = File.ReadAllBytes(path);
        var request = JsonNode.Parse(body)!;
        var result = _injector.Review(body);
        Assert.Equal(200, result.StatusCode);

        // The recorded answer's shape: apiVersion, kind, response{uid, allowed, patchType, patch}.
        var answer = JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(result.Review!, KubernetesJsonContext.Default.AdmissionReview))!.AsObject();
        var recorded = JsonNode.Parse(File.ReadAllText(Path.Combine(Fixtures, "01-valid.response.json")))!.AsObject();
        Assert.Equal(recorded.Select(p => p.Key).Order(), answer.Select(p => p.Key).Order());
        Assert.Equal(recorded["response"]!.AsObject().Select(p => p.Key).Order(), answer["response"]!.AsObject().Select(p => p.Key).Order());
        Assert.Equal((string?)request["request"]!["uid"], (string?)answer["response"]!["uid"]);

        var patched = JsonPatch.Apply(request["request"]!["object"]!, (JsonArray)JsonNode.Parse(result.Review!.Response!.Patch)!);
        Assert.Equal(["app", "sharding-sidecar"], patched["spec"]!["containers"]!.AsArray().Select(c => (string?)c!["name"]));
        Assert.Equal("sharded-inject", (string?)patched["metadata"]!["labels"]!["sharding.dev/service"]);
    }
}

public sealed class CaBundleSynchronizerTests
{
    [Fact]
    public async Task SyncOnceAsync_PatchesEveryWebhookOnceAndKeepsOtherCas()
    {
        await using var server = await FakeKubernetesApiServer.StartAsync();
        using var client = server.CreateClient();
        var other = "-----BEGIN CERTIFICATE-----\nMIIBother\n-----END CERTIFICATE-----";
        server.Create("mutatingwebhookconfigurations", null, new JsonObject
        {
            ["metadata"] = new JsonObject { ["name"] = "sharding-sidecar-injector" },
            ["webhooks"] = new JsonArray(
                new JsonObject { ["name"] = "inject.sharding.dev", ["clientConfig"] = new JsonObject { ["caBundle"] = Convert.ToBase64String(Encoding.UTF8.GetBytes(other)) } },
                new JsonObject { ["name"] = "inject-ns.sharding.dev", ["clientConfig"] = new JsonObject { ["service"] = new JsonObject { ["name"] = "x" } } }),
        });
        var options = Options.Create(new SidecarInjectionOptions());
        using var certificates = new WebhookCertificates(options, TimeProvider.System);
        var sync = new CaBundleSynchronizer(client, certificates, options, TimeProvider.System, NullLogger<CaBundleSynchronizer>.Instance);

        Assert.True(await sync.SyncOnceAsync(CancellationToken.None));
        Assert.False(await sync.SyncOnceAsync(CancellationToken.None));

        var stored = server.Get("mutatingwebhookconfigurations", null, "sharding-sidecar-injector")!;
        foreach (var webhook in stored["webhooks"]!.AsArray())
        {
            var bundle = Encoding.UTF8.GetString(Convert.FromBase64String((string)webhook!["clientConfig"]!["caBundle"]!));
            Assert.Contains(certificates.CaBundlePem.Trim(), bundle, StringComparison.Ordinal);
            Assert.Contains("MIIBother", bundle, StringComparison.Ordinal);
        }

        Assert.Single(server.Requests, r => r.StartsWith("PATCH", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ExecuteAsync_RequestTimesOut_RetriesInsteadOfStoppingTheService()
    {
        // The API server answers the first GET after the client's request timeout (TaskCanceledException, not our shutdown).
        // An exception escaping a BackgroundService stops the host: the control plane must retry at its next interval instead.
        await using var server = await FakeKubernetesApiServer.StartAsync();
        using var client = new KubernetesClient(new KubernetesClientConfiguration
        {
            Server = server.BaseAddress,
            Namespace = "default",
            Token = BearerTokenSource.FromValue("fake-token"),
        })
        { RequestTimeout = TimeSpan.FromMilliseconds(200) };
        server.Create("mutatingwebhookconfigurations", null, new JsonObject
        {
            ["metadata"] = new JsonObject { ["name"] = "sharding-sidecar-injector" },
            ["webhooks"] = new JsonArray(new JsonObject { ["name"] = "inject.sharding.dev", ["clientConfig"] = new JsonObject() }),
        });
        var slow = 1;
        server.BeforeRequest = async request =>
        {
            if (Interlocked.Exchange(ref slow, 0) == 1)
            {
                await Task.WhenAny(Task.Delay(TimeSpan.FromSeconds(2), request.HttpContext.RequestAborted));
            }
        };
        var options = Options.Create(new SidecarInjectionOptions { CaBundleRefreshInterval = TimeSpan.FromMilliseconds(100) });
        using var certificates = new WebhookCertificates(options, TimeProvider.System);
        using var sync = new CaBundleSynchronizer(client, certificates, options, TimeProvider.System, NullLogger<CaBundleSynchronizer>.Instance);

        await sync.StartAsync(CancellationToken.None);
        try
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (clock.Elapsed < TimeSpan.FromSeconds(10)
                && string.IsNullOrEmpty((string?)server.Get("mutatingwebhookconfigurations", null, "sharding-sidecar-injector")!["webhooks"]![0]!["clientConfig"]!["caBundle"])
                && !sync.ExecuteTask!.IsCompleted)
            {
                await Task.Delay(20);
            }

            Assert.False(sync.ExecuteTask!.IsCompleted, $"the service ended: {sync.ExecuteTask.Exception?.InnerException?.GetType().Name}");
            Assert.False(string.IsNullOrEmpty((string?)server.Get("mutatingwebhookconfigurations", null, "sharding-sidecar-injector")!["webhooks"]![0]!["clientConfig"]!["caBundle"]));
        }
        finally
        {
            await sync.StopAsync(CancellationToken.None);
        }
    }

    [Fact]
    public void WebhookCertificates_ServingCertificate_ChainsToCaAndNamesService()
    {
        var options = new SidecarInjectionOptions { ServiceName = "sharding-controlplane", ServiceNamespace = "sharding-system" };
        using var certificates = new WebhookCertificates(Options.Create(options), TimeProvider.System);
        Assert.True(certificates.ServerCertificate.HasPrivateKey);
        Assert.True(certificates.ServerCertificate.MatchesHostname("sharding-controlplane.sharding-system.svc"));
        Assert.True(KubernetesClient.ValidateAgainst([certificates.Authority], certificates.ServerCertificate, System.Net.Security.SslPolicyErrors.RemoteCertificateChainErrors));
        using var stranger = new WebhookCertificates(Options.Create(options), TimeProvider.System);
        Assert.False(KubernetesClient.ValidateAgainst([stranger.Authority], certificates.ServerCertificate, System.Net.Security.SslPolicyErrors.None));
    }
}

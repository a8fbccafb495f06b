using Sharding.ControlPlane.Injection;
using Sharding.ControlPlane.Leadership;
using Sharding.Testing;
using YamlDotNet.RepresentationModel;

namespace Sharding.ControlPlane.Tests.Kubernetes;

public sealed class ManifestsTests
{
    private static async Task<List<YamlMappingNode>> RenderAsync(string folder)
    {
        var result = await ProcessRunner.RunAsync("kubectl", ["kustomize", Path.Combine(RepositoryPaths.Root, "manifests", folder)], timeout: TimeSpan.FromSeconds(60));
        Assert.True(result.ExitCode == 0, result.StandardError);
        var yaml = new YamlStream();
        yaml.Load(new StringReader(result.StandardOutput));
        return [.. yaml.Documents.Select(d => (YamlMappingNode)d.RootNode)];
    }

    private static string? S(YamlNode node, params string[] path)
    {
        foreach (var key in path)
        {
            if (node is not YamlMappingNode map || !map.Children.TryGetValue(new YamlScalarNode(key), out var next))
            {
                return null;
            }

            node = next;
        }

        return (node as YamlScalarNode)?.Value;
    }

    private static YamlMappingNode Kind(List<YamlMappingNode> docs, string kind, string? name = null) =>
        docs.Single(d => S(d, "kind") == kind && (name is null || S(d, "metadata", "name") == name));

    [RequiresToolFact("kubectl", "kubectl (not a Debian package; preinstalled on these machines)")]
    public async Task Base_Renders_LeastPrivilegeRbacWebhookAndHaDeployment()
    {
        var docs = await RenderAsync("base");
        Assert.Superset(
            new HashSet<string> { "Namespace", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Deployment", "PodDisruptionBudget", "Service", "MutatingWebhookConfiguration" },
            docs.Select(d => S(d, "kind")!).ToHashSet());

        var role = Kind(docs, "Role");
        Assert.Equal("sharding-system", S(role, "metadata", "namespace"));
        // Exactly the requests KubernetesClient makes: Lease GET/PUT by name and POST; pods list and watch; webhook GET and PATCH.
        var leaseRules = ((YamlSequenceNode)role["rules"]).Cast<YamlMappingNode>().ToList();
        Assert.Equal(["get", "update"], ((YamlSequenceNode)leaseRules[0]["verbs"]).Select(v => v.ToString()));
        Assert.Equal([new LeaseElectionOptions().LeaseName], ((YamlSequenceNode)leaseRules[0]["resourceNames"]).Select(v => v.ToString()));
        Assert.Equal(["create"], ((YamlSequenceNode)leaseRules[1]["verbs"]).Select(v => v.ToString()));
        Assert.All(leaseRules, r => Assert.Equal(["leases"], ((YamlSequenceNode)r["resources"]).Select(v => v.ToString())));

        var clusterRules = ((YamlSequenceNode)Kind(docs, "ClusterRole")["rules"]).Cast<YamlMappingNode>().ToList();
        Assert.Equal(["list", "watch"], ((YamlSequenceNode)clusterRules[0]["verbs"]).Select(v => v.ToString()));
        Assert.Equal(["get", "patch"], ((YamlSequenceNode)clusterRules[1]["verbs"]).Select(v => v.ToString()));
        Assert.Equal(["sharding-sidecar-injector"], ((YamlSequenceNode)clusterRules[1]["resourceNames"]).Select(v => v.ToString()));
        Assert.DoesNotContain(clusterRules, r => ((YamlSequenceNode)r["verbs"]).Any(v => v.ToString() is "*" or "delete" or "create"));

        var deployment = Kind(docs, "Deployment");
        Assert.Equal("2", S(deployment, "spec", "replicas"));
        Assert.NotNull(S(deployment, "spec", "template", "spec", "affinity", "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution") ?? "present");
        var container = (YamlMappingNode)((YamlSequenceNode)deployment["spec"]["template"]["spec"]["containers"])[0];
        Assert.NotNull(S(container, "readinessProbe", "httpGet", "path"));
        Assert.NotNull(S(container, "livenessProbe", "httpGet", "path"));
        var env = ((YamlSequenceNode)container["env"]).Select(e => S(e, "name")).ToList();
        Assert.Superset(new HashSet<string?> { "POD_NAME", "POD_NAMESPACE", "POD_IP", "Sharding__Mode" }, env.ToHashSet());

        var webhook = (YamlMappingNode)((YamlSequenceNode)Kind(docs, "MutatingWebhookConfiguration")["webhooks"])[0];
        Assert.Equal("Fail", S(webhook, "failurePolicy"));
        Assert.Equal("None", S(webhook, "sideEffects"));
        Assert.Equal("true", S(webhook, "objectSelector", "matchLabels", "sharding.dev/inject"));
        Assert.Equal("/mutate", S(webhook, "clientConfig", "service", "path"));
        Assert.Equal(["v1"], ((YamlSequenceNode)webhook["admissionReviewVersions"]).Select(v => v.ToString()));
        Assert.NotNull(S(webhook, "timeoutSeconds"));
        var service = Kind(docs, "Service", "sharding-controlplane");
        Assert.Contains(((YamlSequenceNode)service["spec"]["ports"]).Cast<YamlMappingNode>(), p => S(p, "port") == "443" && S(p, "targetPort") == "webhook");
    }

    /// <summary>The ports, probes and webhook entries the manifests name are the ones the binaries serve and DESIGN.md's opt-in rule.</summary>
    [RequiresToolFact("kubectl", "kubectl (not a Debian package; preinstalled on these machines)")]
    public async Task Base_PortsProbesAndWebhookEntries_MatchTheControlPlane()
    {
        var docs = await RenderAsync("base");
        var deployment = Kind(docs, "Deployment");
        var container = (YamlMappingNode)((YamlSequenceNode)deployment["spec"]["template"]["spec"]["containers"])[0];
        var ports = ((YamlSequenceNode)container["ports"]).Cast<YamlMappingNode>().ToDictionary(p => S(p, "name")!, p => S(p, "containerPort"));
        var env = ((YamlSequenceNode)container["env"]).Cast<YamlMappingNode>().Where(e => S(e, "value") is not null).ToDictionary(e => S(e, "name")!, e => S(e, "value")!);
        string Port(string url) => new Uri(url).Port.ToString(System.Globalization.CultureInfo.InvariantCulture);

        // The listeners the control plane opens (ControlPlane:HttpUrl, ControlPlane:GrpcUrl, the webhook's HTTPS port) are the declared ports.
        Assert.Equal(ports["http"], Port(env["ControlPlane__HttpUrl"]));
        Assert.Equal(ports["grpc"], Port(env["ControlPlane__GrpcUrl"]));
        // Dual-stack: sidecars in an IPv6-only cluster dial the pod's IPv6 address, probes may come over either family.
        Assert.Equal("[::]", new Uri(env["ControlPlane__HttpUrl"]).Host);
        Assert.Equal("[::]", new Uri(env["ControlPlane__GrpcUrl"]).Host);
        Assert.Equal(new SidecarInjectionOptions().WebhookPort.ToString(System.Globalization.CultureInfo.InvariantCulture), ports["webhook"]);
        Assert.Equal(ports["http"], S(deployment, "spec", "template", "metadata", "annotations", "prometheus.io/port"));
        Assert.Equal("/readyz", S(container, "readinessProbe", "httpGet", "path"));
        Assert.Equal("/healthz", S(container, "livenessProbe", "httpGet", "path"));
        Assert.Equal("http", S(container, "readinessProbe", "httpGet", "port"));
        Assert.Equal("http", S(container, "livenessProbe", "httpGet", "port"));

        // Sidecars subscribe to the gRPC port through the Service.
        var service = Kind(docs, "Service", "sharding-controlplane");
        var grpcPort = ((YamlSequenceNode)service["spec"]["ports"]).Cast<YamlMappingNode>().Single(p => S(p, "targetPort") == "grpc");
        Assert.Equal(Port(env["Sharding__Kubernetes__Injection__ControlPlaneAddress"]), S(grpcPort, "port"));
        Assert.Equal(new SidecarInjectionOptions().ControlPlaneAddress, env["Sharding__Kubernetes__Injection__ControlPlaneAddress"]);

        // DESIGN.md: opt in with the label (objectSelector, Fail), or with the annotation in a namespace labelled
        // sharding.dev/injection: enabled (the webhook checks the annotation; Ignore, so unrelated pods there are never blocked).
        var webhooks = ((YamlSequenceNode)Kind(docs, "MutatingWebhookConfiguration")["webhooks"]).Cast<YamlMappingNode>().ToList();
        Assert.Equal(2, webhooks.Count);
        Assert.All(webhooks, w =>
        {
            Assert.Equal("None", S(w, "sideEffects"));
            Assert.Equal("Never", S(w, "reinvocationPolicy"));
            Assert.Equal("/mutate", S(w, "clientConfig", "service", "path"));
            Assert.Equal("443", S(w, "clientConfig", "service", "port"));
            Assert.Equal("sharding-controlplane", S(w, "clientConfig", "service", "name"));
            var rule = (YamlMappingNode)((YamlSequenceNode)w["rules"])[0];
            Assert.Equal(["CREATE"], ((YamlSequenceNode)rule["operations"]).Select(v => v.ToString()));
            Assert.Equal(["pods"], ((YamlSequenceNode)rule["resources"]).Select(v => v.ToString()));
        });
        Assert.Equal("Fail", S(webhooks[0], "failurePolicy"));
        Assert.Equal("Ignore", S(webhooks[1], "failurePolicy"));
        Assert.Equal("enabled", S(webhooks[1], "namespaceSelector", "matchLabels", "sharding.dev/injection"));
        var objectSelector = (YamlMappingNode)((YamlSequenceNode)webhooks[1]["objectSelector"]["matchExpressions"])[0];
        Assert.Equal("sharding.dev/inject", S(objectSelector, "key"));
        Assert.Equal("DoesNotExist", S(objectSelector, "operator"));

        // Prometheus finds sidecars by the admin port's name, which is the one the injector gives it.
        var scrape = S(Kind(docs, "ConfigMap", "sharding-prometheus-scrape"), "data", "sharding-scrape.yaml")!;
        Assert.Contains("regex: sharding-admin", scrape, StringComparison.Ordinal);
        Assert.Contains("regex: sharding-controlplane;http", scrape, StringComparison.Ordinal);
    }

    [RequiresToolFact("kubectl", "kubectl (not a Debian package; preinstalled on these machines)")]
    public async Task Sample_Renders_OptedInStatefulSetAndServiceOnSidecarPort()
    {
        var docs = await RenderAsync("sample");
        var statefulSet = Kind(docs, "StatefulSet");
        Assert.Equal("true", S(statefulSet, "spec", "template", "metadata", "labels", "sharding.dev/inject"));
        Assert.NotNull(S(statefulSet, "spec", "template", "metadata", "annotations", "sharding.dev/key"));
        var service = Kind(docs, "Service", "sharded-svc");
        Assert.Equal("15100", S((YamlMappingNode)((YamlSequenceNode)service["spec"]["ports"])[0], "targetPort"));
    }
}

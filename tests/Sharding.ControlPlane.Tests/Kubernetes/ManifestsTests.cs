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
        var leaseRule = (YamlMappingNode)((YamlSequenceNode)role["rules"])[0];
        Assert.Equal(["get", "create", "update"], ((YamlSequenceNode)leaseRule["verbs"]).Select(v => v.ToString()));

        var clusterRules = ((YamlSequenceNode)Kind(docs, "ClusterRole")["rules"]).Cast<YamlMappingNode>().ToList();
        Assert.Equal(["get", "list", "watch"], ((YamlSequenceNode)clusterRules[0]["verbs"]).Select(v => v.ToString()));
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

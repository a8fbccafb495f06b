using Sharding.ControlPlane.Hosting;
using Sharding.ControlPlane.Injection;
using Sharding.ControlPlane.Leadership;
using Sharding.ControlPlane.Membership;
using Sharding.Testing;

namespace Sharding.ControlPlane.Tests.Hosting;

/// <summary>The options tables of docs/local-mode.md and docs/kubernetes.md name exactly the control plane's option keys.</summary>
public sealed class OptionsDocumentationTests
{
    [Fact]
    public void LocalModeTable_NamesEveryControlPlaneOption()
    {
        var documented = OptionsCatalogue.Documented("docs/local-mode.md", "Local mode");
        var keys = OptionsCatalogue.Keys(typeof(ControlPlaneOptions), section: null);
        OptionsCatalogue.AssertSame(keys, documented);
    }

    [Fact]
    public void KubernetesTable_NamesEveryElectionMembershipAndInjectionOption()
    {
        var documented = OptionsCatalogue.Documented("docs/kubernetes.md", "Options (Kubernetes mode)");
        var keys = OptionsCatalogue.Keys(typeof(LeaseElectionOptions), LeaseElectionOptions.Section);
        keys.UnionWith(OptionsCatalogue.Keys(typeof(PodMembershipOptions), PodMembershipOptions.Section));
        keys.UnionWith(OptionsCatalogue.Keys(typeof(SidecarInjectionOptions), SidecarInjectionOptions.Section));
        OptionsCatalogue.AssertSame(keys, documented);
    }

    [Fact]
    public void AnnotationTable_NamesEveryAnnotationAndLabelThePodsAreReadBy()
    {
        // The keys the webhook and the pod membership read from pods (the Lease's sharding.dev/leader-url is not a pod's).
        var read = new[] { typeof(SidecarInjector), typeof(PodMembershipSource), typeof(PodMembershipOptions) }
            .SelectMany(t => t.GetFields(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static))
            .Where(f => f.IsLiteral && f.GetRawConstantValue() is string { Length: > 13 } value && value.StartsWith("sharding.dev/", StringComparison.Ordinal)) // not the bare prefix
            .Select(f => (string)f.GetRawConstantValue()!)
            .ToHashSet(StringComparer.Ordinal);
        var documented = File.ReadAllLines(Path.Combine(RepositoryPaths.Root, "docs", "kubernetes.md"))
            .Where(l => l.StartsWith("| `sharding.dev/", StringComparison.Ordinal))
            .Select(l => l.Split('`')[1])
            .ToHashSet(StringComparer.Ordinal);
        Assert.Empty(read.Except(documented).Order(StringComparer.Ordinal));
        Assert.Empty(documented.Except(read).Order(StringComparer.Ordinal));
    }
}

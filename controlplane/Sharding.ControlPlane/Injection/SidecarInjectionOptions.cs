namespace Sharding.ControlPlane.Injection;

/// <summary>The sidecar-injection webhook, section <c>Sharding:Kubernetes:Injection</c>.</summary>
public sealed class SidecarInjectionOptions
{
    /// <summary>The configuration section.</summary>
    public const string Section = "Sharding:Kubernetes:Injection";

    /// <summary>The sidecar image.</summary>
    /// <value><c>ghcr.io/sharding/sidecar:latest</c>; pin a digest in production.</value>
    public string Image { get; set; } = "ghcr.io/sharding/sidecar:latest";

    /// <summary>The injected container's name (its presence makes injection idempotent).</summary>
    /// <value><c>sharding-sidecar</c>.</value>
    public string ContainerName { get; set; } = "sharding-sidecar";

    /// <summary>The sidecar's proxy port, which the workload's Service targets.</summary>
    /// <value>15100.</value>
    public int SidecarPort { get; set; } = 15100;

    /// <summary>The sidecar's admin port (probes, metrics).</summary>
    /// <value>15101.</value>
    public int AdminPort { get; set; } = 15101;

    /// <summary>The app port when the pod has no <c>sharding.dev/app-port</c> annotation and its first container declares none.</summary>
    /// <value>8080.</value>
    public int DefaultAppPort { get; set; } = 8080;

    /// <summary>The control-plane URL the sidecar subscribes to.</summary>
    /// <value>The control-plane Service in <c>sharding-system</c>.</value>
    public string ControlPlaneAddress { get; set; } = "http://sharding-controlplane.sharding-system.svc:8081";

    /// <summary>
    /// The Secret, in the workload's namespace, holding the cluster's forwarding secret (the HMAC key of the forwarding proof,
    /// the same for every sidecar of a service); injected as <c>Sidecar__ForwardingSecret</c>.
    /// </summary>
    /// <value><c>sharding-forwarding-secret</c>, key <see cref="ForwardingSecretKey"/>.</value>
    public string ForwardingSecretName { get; set; } = "sharding-forwarding-secret";

    /// <summary>The key inside <see cref="ForwardingSecretName"/>.</summary>
    /// <value><c>secret</c>.</value>
    public string ForwardingSecretKey { get; set; } = "secret";

    /// <summary>CPU request of the sidecar.</summary>
    /// <value>50m.</value>
    public string CpuRequest { get; set; } = "50m";

    /// <summary>Memory request of the sidecar.</summary>
    /// <value>64Mi.</value>
    public string MemoryRequest { get; set; } = "64Mi";

    /// <summary>Memory limit of the sidecar.</summary>
    /// <value>256Mi.</value>
    public string MemoryLimit { get; set; } = "256Mi";

    /// <summary>
    /// The user id set on the sidecar's container when the pod's <c>securityContext</c> says <c>runAsUser: 0</c> (an app that
    /// runs as root): that would apply to the sidecar too, and its <c>runAsNonRoot</c> would then stop it from starting.
    /// Otherwise the sidecar names no user (the image's, the pod's non-root one, or the one OpenShift assigns).
    /// </summary>
    /// <value>1654, the <c>app</c> user of the .NET images that sidecar/Dockerfile runs as (<c>USER $APP_UID</c>).</value>
    public long RunAsUser { get; set; } = 1654;

    /// <summary>The HTTPS port of <c>POST /mutate</c>.</summary>
    /// <value>8443; the Service maps 443 to it.</value>
    public int WebhookPort { get; set; } = 8443;

    /// <summary>The MutatingWebhookConfiguration whose caBundle the control plane keeps current.</summary>
    /// <value><c>sharding-sidecar-injector</c>.</value>
    public string WebhookConfigurationName { get; set; } = "sharding-sidecar-injector";

    /// <summary>The control-plane Service name, for the serving certificate's DNS names.</summary>
    /// <value><c>sharding-controlplane</c>.</value>
    public string ServiceName { get; set; } = "sharding-controlplane";

    /// <summary>The control-plane namespace, for the serving certificate's DNS names.</summary>
    /// <value>From <c>POD_NAMESPACE</c>, else <c>sharding-system</c>.</value>
    public string ServiceNamespace { get; set; } = "sharding-system";

    /// <summary>How often the caBundle is checked and patched.</summary>
    /// <value>1 minute: a replica that just started (with a new CA) is trusted within a minute.</value>
    public TimeSpan CaBundleRefreshInterval { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>Whether to keep the caBundle up to date (false when cert-manager's CA injector does it).</summary>
    /// <value>True.</value>
    public bool ManageCaBundle { get; set; } = true;
}

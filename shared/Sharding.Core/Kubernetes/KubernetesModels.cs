using System.Text.Json;
using System.Text.Json.Serialization;

namespace Sharding.Kubernetes;

/// <summary>Standard object metadata (<c>metav1.ObjectMeta</c>): the fields Sharding reads or writes, the rest kept as read.</summary>
public sealed record ObjectMeta
{
    /// <summary>Object name.</summary>
    public string? Name { get; init; }

    /// <summary>Name prefix the server completes (<c>sharded-svc-</c> for a ReplicaSet's pods).</summary>
    public string? GenerateName { get; init; }

    /// <summary>Namespace, null for cluster-scoped objects.</summary>
    public string? Namespace { get; init; }

    /// <summary>Server-assigned unique id.</summary>
    public string? Uid { get; init; }

    /// <summary>Opaque version for optimistic concurrency and watches.</summary>
    public string? ResourceVersion { get; init; }

    /// <summary>Creation time (whole seconds).</summary>
    [JsonConverter(typeof(KubernetesTimeConverter))]
    public DateTimeOffset? CreationTimestamp { get; init; }

    /// <summary>Set when a graceful delete started: the object is terminating.</summary>
    [JsonConverter(typeof(KubernetesTimeConverter))]
    public DateTimeOffset? DeletionTimestamp { get; init; }

    /// <summary>Labels.</summary>
    public IReadOnlyDictionary<string, string>? Labels { get; init; }

    /// <summary>Annotations.</summary>
    public IReadOnlyDictionary<string, string>? Annotations { get; init; }

    /// <summary>Owners (ReplicaSet, StatefulSet...).</summary>
    public IReadOnlyList<OwnerReference>? OwnerReferences { get; init; }

    /// <summary>Every other field (finalizers, managedFields...), written back as read: a PUT must not drop them.</summary>
    [JsonExtensionData]
    public IDictionary<string, JsonElement>? ExtensionData { get; set; }
}

/// <summary>An owner of an object.</summary>
public sealed record OwnerReference
{
    /// <summary>Owner API version.</summary>
    public string? ApiVersion { get; init; }

    /// <summary>Owner kind, e.g. <c>StatefulSet</c>.</summary>
    public string? Kind { get; init; }

    /// <summary>Owner name.</summary>
    public string? Name { get; init; }

    /// <summary>Owner uid.</summary>
    public string? Uid { get; init; }

    /// <summary>Whether this owner is the managing controller.</summary>
    public bool? Controller { get; init; }
}

/// <summary>List metadata: the list's own resourceVersion (the store revision at read time) and paging token.</summary>
public sealed record ListMeta
{
    /// <summary>The revision to start a watch from.</summary>
    public string? ResourceVersion { get; init; }

    /// <summary>Token of the next page, when a limit was given.</summary>
    public string? Continue { get; init; }
}

/// <summary>A pod, reduced to what membership needs.</summary>
public sealed record Pod
{
    /// <summary><c>v1</c>.</summary>
    public string? ApiVersion { get; init; } = "v1";

    /// <summary><c>Pod</c>.</summary>
    public string? Kind { get; init; } = "Pod";

    /// <summary>Metadata.</summary>
    public ObjectMeta Metadata { get; init; } = new();

    /// <summary>Spec.</summary>
    public PodSpec? Spec { get; init; }

    /// <summary>Status.</summary>
    public PodStatus? Status { get; init; }

    /// <summary>Whether the pod's <c>Ready</c> condition is <c>True</c>.</summary>
    [JsonIgnore]
    public bool IsReady =>
        Status?.Conditions?.Any(static c => c.Type == "Ready" && string.Equals(c.Status, "True", StringComparison.Ordinal)) == true;
}

/// <summary>Pod spec: container names only.</summary>
public sealed record PodSpec
{
    /// <summary>Containers (null in a watch bookmark).</summary>
    public IReadOnlyList<Container>? Containers { get; init; }

    /// <summary>The node the pod is bound to.</summary>
    public string? NodeName { get; init; }
}

/// <summary>A container, name only.</summary>
public sealed record Container
{
    /// <summary>Container name.</summary>
    public string? Name { get; init; }

    /// <summary>Image.</summary>
    public string? Image { get; init; }
}

/// <summary>Pod status.</summary>
public sealed record PodStatus
{
    /// <summary>Pending, Running, Succeeded, Failed, Unknown.</summary>
    public string? Phase { get; init; }

    /// <summary>The pod IP once assigned.</summary>
    public string? PodIP { get; init; }

    /// <summary>Conditions (Ready, ContainersReady, PodScheduled...).</summary>
    public IReadOnlyList<PodCondition>? Conditions { get; init; }
}

/// <summary>A pod condition.</summary>
public sealed record PodCondition
{
    /// <summary>Condition type, e.g. <c>Ready</c>.</summary>
    public string? Type { get; init; }

    /// <summary><c>True</c>, <c>False</c> or <c>Unknown</c>.</summary>
    public string? Status { get; init; }

    /// <summary>When the status last changed.</summary>
    [JsonConverter(typeof(KubernetesTimeConverter))]
    public DateTimeOffset? LastTransitionTime { get; init; }
}

/// <summary>A page of pods.</summary>
public sealed record PodList
{
    /// <summary>List metadata with the list's resourceVersion.</summary>
    public ListMeta Metadata { get; init; } = new();

    /// <summary>Pods (never null on the wire: <c>[]</c> when empty).</summary>
    public IReadOnlyList<Pod> Items { get; init; } = [];
}

/// <summary>A <c>coordination.k8s.io/v1</c> Lease.</summary>
public sealed record Lease
{
    /// <summary><c>coordination.k8s.io/v1</c>.</summary>
    public string? ApiVersion { get; init; } = "coordination.k8s.io/v1";

    /// <summary><c>Lease</c>.</summary>
    public string? Kind { get; init; } = "Lease";

    /// <summary>Metadata; <see cref="ObjectMeta.ResourceVersion"/> is the update precondition.</summary>
    public ObjectMeta Metadata { get; init; } = new();

    /// <summary>Spec.</summary>
    public LeaseSpec Spec { get; init; } = new();

    /// <summary>Fields of newer API versions, written back as read.</summary>
    [JsonExtensionData]
    public IDictionary<string, JsonElement>? ExtensionData { get; set; }
}

/// <summary>Lease spec.</summary>
public sealed record LeaseSpec
{
    /// <summary>The holder (a pod name); null or empty when released.</summary>
    public string? HolderIdentity { get; init; }

    /// <summary>How long candidates wait, after seeing the last change, before they take over.</summary>
    public int? LeaseDurationSeconds { get; init; }

    /// <summary>When the current holder acquired it (MicroTime: exactly 6 fractional digits).</summary>
    [JsonConverter(typeof(MicroTimeConverter))]
    public DateTimeOffset? AcquireTime { get; init; }

    /// <summary>When the holder last renewed it (MicroTime).</summary>
    [JsonConverter(typeof(MicroTimeConverter))]
    public DateTimeOffset? RenewTime { get; init; }

    /// <summary>How many times the holder changed: the leader epoch.</summary>
    public int? LeaseTransitions { get; init; }

    /// <summary>The holder the coordinated leader election controller wants (Kubernetes 1.31+); kept as read.</summary>
    public string? PreferredHolder { get; init; }

    /// <summary>The coordinated leader election strategy, e.g. <c>OldestEmulationVersion</c> (Kubernetes 1.31+); kept as read.</summary>
    public string? Strategy { get; init; }

    /// <summary>Fields of newer API versions, written back as read: the Lease is read, changed and PUT whole.</summary>
    [JsonExtensionData]
    public IDictionary<string, JsonElement>? ExtensionData { get; set; }
}

/// <summary>A <c>Status</c> object, the body of every API error (and of a few successful deletes).</summary>
public sealed record Status
{
    /// <summary><c>Status</c>.</summary>
    public string? Kind { get; init; } = "Status";

    /// <summary><c>v1</c>.</summary>
    public string? ApiVersion { get; init; } = "v1";

    /// <summary><c>Success</c> or <c>Failure</c>.</summary>
    [JsonPropertyName("status")]
    public string? Outcome { get; init; }

    /// <summary>Human-readable description.</summary>
    public string? Message { get; init; }

    /// <summary>Machine-readable reason: NotFound, Conflict, AlreadyExists, Expired, Forbidden...</summary>
    public string? Reason { get; init; }

    /// <summary>Extra details (name, group, kind, causes).</summary>
    public StatusDetails? Details { get; init; }

    /// <summary>HTTP status code.</summary>
    public int? Code { get; init; }
}

/// <summary>Details of a <see cref="Status"/>.</summary>
public sealed record StatusDetails
{
    /// <summary>Object name.</summary>
    public string? Name { get; init; }

    /// <summary>API group, absent for the core group.</summary>
    public string? Group { get; init; }

    /// <summary>Usually the plural resource (<c>leases</c>); the Kind on a failed create.</summary>
    public string? Kind { get; init; }

    /// <summary>Uid of a deleted object.</summary>
    public string? Uid { get; init; }

    /// <summary>Field-level causes.</summary>
    public IReadOnlyList<StatusCause>? Causes { get; init; }
}

/// <summary>One cause of a failure.</summary>
public sealed record StatusCause
{
    /// <summary>Cause reason, e.g. <c>FieldValueInvalid</c>.</summary>
    public string? Reason { get; init; }

    /// <summary>Description.</summary>
    public string? Message { get; init; }

    /// <summary>The field at fault.</summary>
    public string? Field { get; init; }
}

/// <summary>A <c>admissionregistration.k8s.io/v1</c> MutatingWebhookConfiguration, the fields the CA-bundle loop uses.</summary>
public sealed record MutatingWebhookConfiguration
{
    /// <summary>API version.</summary>
    public string? ApiVersion { get; init; } = "admissionregistration.k8s.io/v1";

    /// <summary>Kind.</summary>
    public string? Kind { get; init; } = "MutatingWebhookConfiguration";

    /// <summary>Metadata.</summary>
    public ObjectMeta Metadata { get; init; } = new();

    /// <summary>Webhooks.</summary>
    public IReadOnlyList<MutatingWebhook>? Webhooks { get; init; }
}

/// <summary>One webhook of a configuration.</summary>
public sealed record MutatingWebhook
{
    /// <summary>Name, e.g. <c>inject.sharding.dev</c>.</summary>
    public string? Name { get; init; }

    /// <summary>How the apiserver reaches it.</summary>
    public WebhookClientConfig? ClientConfig { get; init; }
}

/// <summary>Webhook client configuration.</summary>
public sealed record WebhookClientConfig
{
    /// <summary>Base64 PEM CA bundle the apiserver trusts for this webhook.</summary>
    public string? CaBundle { get; init; }

    /// <summary>Direct URL (out-of-cluster webhooks).</summary>
    public string? Url { get; init; }
}

/// <summary>Watch event types.</summary>
public enum WatchEventType
{
    /// <summary>Object added (or synthetic add at the start of an RV-less watch).</summary>
    Added,

    /// <summary>Object changed.</summary>
    Modified,

    /// <summary>Object deleted; carries its last state.</summary>
    Deleted,

    /// <summary>Progress marker carrying only a resourceVersion.</summary>
    Bookmark,

    /// <summary>An error <see cref="Status"/> (410 Expired...), after which the stream ends.</summary>
    Error,
}

/// <summary>One decoded watch event.</summary>
/// <typeparam name="T">The watched kind.</typeparam>
/// <param name="Type">Event type.</param>
/// <param name="Item">The object (for Added/Modified/Deleted/Bookmark).</param>
/// <param name="Status">The error status (for Error).</param>
/// <param name="ResourceVersion">The object's resourceVersion, the one to resume from.</param>
public sealed record WatchEvent<T>(WatchEventType Type, T? Item, Status? Status, string? ResourceVersion)
    where T : class;

/// <summary>The on-the-wire frame of a watch event before the object is typed.</summary>
public sealed record RawWatchEvent
{
    /// <summary>ADDED, MODIFIED, DELETED, BOOKMARK or ERROR.</summary>
    public string? Type { get; init; }

    /// <summary>The object.</summary>
    [JsonPropertyName("object")]
    public JsonElement Item { get; init; }
}

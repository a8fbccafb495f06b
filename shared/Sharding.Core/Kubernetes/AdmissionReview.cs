using System.Text.Json;
using System.Text.Json.Serialization;

namespace Sharding.Kubernetes;

/// <summary>An <c>admission.k8s.io/v1</c> AdmissionReview: the apiserver sends <see cref="Request"/>, the webhook answers <see cref="Response"/>.</summary>
public sealed record AdmissionReview
{
    /// <summary>The only version served: <c>admission.k8s.io/v1</c>.</summary>
    public const string V1 = "admission.k8s.io/v1";

    /// <summary>Must be <c>admission.k8s.io/v1</c> (the answer repeats it).</summary>
    public string? ApiVersion { get; init; }

    /// <summary>Must be <c>AdmissionReview</c>.</summary>
    public string? Kind { get; init; }

    /// <summary>What is being admitted.</summary>
    public AdmissionRequest? Request { get; init; }

    /// <summary>The decision.</summary>
    public AdmissionResponse? Response { get; init; }
}

/// <summary>An admission request.</summary>
public sealed record AdmissionRequest
{
    /// <summary>Identifies this call; the response must repeat it.</summary>
    public string? Uid { get; init; }

    /// <summary>The kind of the object (<c>{"group":"","version":"v1","kind":"Pod"}</c>).</summary>
    public GroupVersionKind? Kind { get; init; }

    /// <summary>The resource (<c>{"group":"","version":"v1","resource":"pods"}</c>).</summary>
    public GroupVersionResource? Resource { get; init; }

    /// <summary>The subresource, if any.</summary>
    public string? SubResource { get; init; }

    /// <summary>Object name (empty on CREATE with generateName).</summary>
    public string? Name { get; init; }

    /// <summary>Namespace.</summary>
    public string? Namespace { get; init; }

    /// <summary>CREATE, UPDATE, DELETE or CONNECT.</summary>
    public string? Operation { get; init; }

    /// <summary>The object as sent (for CREATE: no uid or resourceVersion yet).</summary>
    [JsonPropertyName("object")]
    public JsonElement? Item { get; init; }

    /// <summary>The old object (UPDATE, DELETE).</summary>
    [JsonPropertyName("oldObject")]
    public JsonElement? OldItem { get; init; }

    /// <summary>Whether this is a dry run (a webhook with sideEffects None may answer as usual).</summary>
    public bool? DryRun { get; init; }
}

/// <summary>Group, version and kind.</summary>
public sealed record GroupVersionKind
{
    /// <summary>Group ("" for core).</summary>
    public string? Group { get; init; }

    /// <summary>Version.</summary>
    public string? Version { get; init; }

    /// <summary>Kind.</summary>
    public string? Kind { get; init; }
}

/// <summary>Group, version and resource.</summary>
public sealed record GroupVersionResource
{
    /// <summary>Group ("" for core).</summary>
    public string? Group { get; init; }

    /// <summary>Version.</summary>
    public string? Version { get; init; }

    /// <summary>Plural resource.</summary>
    public string? Resource { get; init; }
}

/// <summary>An admission response.</summary>
public sealed record AdmissionResponse
{
    /// <summary>The JSONPatch patch type.</summary>
    public const string JsonPatchType = "JSONPatch";

    /// <summary>The request's uid.</summary>
    public string Uid { get; init; } = string.Empty;

    /// <summary>Whether the object is admitted.</summary>
    public bool Allowed { get; init; }

    /// <summary>Why not (when <see cref="Allowed"/> is false), with an HTTP code.</summary>
    public Status? Status { get; init; }

    /// <summary>The base64 RFC 6902 patch, when mutating.</summary>
    [JsonConverter(typeof(Base64BytesConverter))]
    public byte[]? Patch { get; init; }

    /// <summary><c>JSONPatch</c> when <see cref="Patch"/> is set.</summary>
    public string? PatchType { get; init; }

    /// <summary>Warnings shown to the client (kubectl prints them).</summary>
    public IReadOnlyList<string>? Warnings { get; init; }
}

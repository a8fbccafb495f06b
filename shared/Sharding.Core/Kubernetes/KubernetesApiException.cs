using System.Net;

namespace Sharding.Kubernetes;

/// <summary>An API call failed: the server's <see cref="Kubernetes.Status"/> (or a synthesized one) with its code and reason.</summary>
public sealed class KubernetesApiException : Exception
{
    /// <summary>Creates the exception from a Status.</summary>
    /// <param name="status">The Status the server sent (or one made from the HTTP status line).</param>
    /// <param name="verb">The verb (get, list, watch, create, update, patch) for messages.</param>
    /// <param name="resource">The plural resource (leases, pods...) for messages.</param>
    /// <param name="apiGroup">The API group ("" for core).</param>
    /// <param name="namespaceName">The namespace, null when cluster-wide.</param>
    public KubernetesApiException(Status status, string verb, string resource, string apiGroup, string? namespaceName)
        : base(Describe(status, verb, resource, namespaceName))
    {
        ArgumentNullException.ThrowIfNull(status);
        Status = status;
        Verb = verb;
        Resource = resource;
        ApiGroup = apiGroup;
        NamespaceName = namespaceName;
    }

    /// <summary>Creates an exception without a request context.</summary>
    public KubernetesApiException()
        : this(new Status { Code = 500, Reason = "Unknown", Message = "unknown error" }, "call", "unknown", string.Empty, null)
    {
    }

    /// <summary>Creates an exception with a message.</summary>
    /// <param name="message">The message.</param>
    public KubernetesApiException(string message)
        : this(new Status { Code = 500, Reason = "Unknown", Message = message }, "call", "unknown", string.Empty, null)
    {
    }

    /// <summary>Creates an exception with a message and an inner exception.</summary>
    /// <param name="message">The message.</param>
    /// <param name="innerException">The cause.</param>
    public KubernetesApiException(string message, Exception innerException)
        : base(message, innerException)
    {
        Status = new Status { Code = 500, Reason = "Unknown", Message = message };
        Verb = "call";
        Resource = "unknown";
        ApiGroup = string.Empty;
    }

    /// <summary>The Status object.</summary>
    public Status Status { get; }

    /// <summary>HTTP code (410 for Expired even when it arrived in a watch ERROR event).</summary>
    public int Code => Status.Code ?? 0;

    /// <summary>Reason (NotFound, Conflict, AlreadyExists, Expired, Forbidden, Unauthorized, Invalid...).</summary>
    public string Reason => Status.Reason ?? string.Empty;

    /// <summary>The verb that failed.</summary>
    public string Verb { get; }

    /// <summary>The plural resource.</summary>
    public string Resource { get; }

    /// <summary>The API group ("" for core).</summary>
    public string ApiGroup { get; }

    /// <summary>The namespace, or null for a cluster-wide call.</summary>
    public string? NamespaceName { get; }

    /// <summary>Whether this is 410 Gone / Expired: the client must list again.</summary>
    public bool IsGone => Code == (int)HttpStatusCode.Gone || Reason is "Expired" or "Gone";

    /// <summary>Whether this is 403: RBAC does not allow the call.</summary>
    public bool IsForbidden => Code == (int)HttpStatusCode.Forbidden;

    /// <summary>
    /// The RBAC rule the caller is missing, e.g. <c>apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get]
    /// in namespace sharding-system</c>, for 403 logs.
    /// </summary>
    public string MissingPermission =>
        $"apiGroups: [\"{ApiGroup}\"], resources: [\"{Resource}\"], verbs: [\"{Verb}\"]"
        + (NamespaceName is null ? " (cluster-wide: ClusterRole + ClusterRoleBinding)" : $" in namespace \"{NamespaceName}\" (Role + RoleBinding)");

    private static string Describe(Status status, string verb, string resource, string? namespaceName) =>
        $"{verb} {resource}{(namespaceName is null ? string.Empty : " in " + namespaceName)} failed: {status.Code} {status.Reason}: {status.Message}";
}

using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Options;
using Sharding.ControlPlane.Membership;
using Sharding.Keys;
using Sharding.Kubernetes;

namespace Sharding.ControlPlane.Injection;

/// <summary>What the webhook answers: an AdmissionReview (HTTP 200), or HTTP 400 with a message when the body is not one.</summary>
/// <param name="StatusCode">200 or 400.</param>
/// <param name="Review">The answer, for 200.</param>
/// <param name="Error">The message, for 400.</param>
internal sealed record InjectionResult(int StatusCode, AdmissionReview? Review, string? Error);

/// <summary>Decides and builds the sidecar injection patch for one AdmissionReview.</summary>
/// <remarks>
/// Contract: a body that is not an <c>admission.k8s.io/v1</c> AdmissionReview with a <c>request.uid</c> gets HTTP 400 and a
/// plain-text message (there is no uid to answer to; with failurePolicy Fail the apiserver then rejects the pod and shows
/// the message). A well-formed review whose object is not a usable Pod, or whose service name cannot be derived, gets
/// HTTP 200 with <c>allowed: false</c> and a Status (code 400) saying what to fix (so do bad <c>app-port</c>/<c>sidecar-port</c>
/// annotations). Pods that do not opt in, operations other than CREATE, and pods that already have the sidecar container (also
/// as an init container) are allowed without a patch. Unknown <c>sharding.dev/</c> annotations, and values the control plane
/// would ignore, are admitted with warnings.
/// Every field is read by its JSON type (a number where a string belongs is "missing"), never cast: malformed input is a
/// 400 or a denial, not an exception (HTTP 500).
/// </remarks>
internal sealed class SidecarInjector(IOptions<SidecarInjectionOptions> options)
{
    internal const string InjectKey = "sharding.dev/inject";
    internal const string ServiceKey = "sharding.dev/service";
    internal const string AppPortAnnotation = PodMembershipSource.AppPortAnnotation;
    internal const string SidecarPortAnnotation = PodMembershipSource.SidecarPortAnnotation;
    private const string Prefix = "sharding.dev/";
    private const string KeyAnnotation = PodMembershipSource.KeyAnnotation;
    private const string NoKeyAnnotation = PodMembershipSource.NoKeyAnnotation;
    private const string FallbackMemberAnnotation = PodMembershipSource.FallbackMemberAnnotation;
    private const string MaxBodyBytesAnnotation = PodMembershipSource.MaxBodyBytesAnnotation;
    private const string AlgorithmAnnotation = PodMembershipSource.AlgorithmAnnotation;
    private const string TableSizeAnnotation = PodMembershipSource.TableSizeAnnotation;
    private const string HashKeyAnnotation = PodMembershipSource.HashKeyAnnotation;
    private const string WeightAnnotation = PodMembershipSource.WeightAnnotation;

    private static readonly string[] KnownAnnotations =
    [
        InjectKey, ServiceKey, KeyAnnotation, NoKeyAnnotation, FallbackMemberAnnotation, MaxBodyBytesAnnotation, AppPortAnnotation, AlgorithmAnnotation,
        TableSizeAnnotation, HashKeyAnnotation, SidecarPortAnnotation, WeightAnnotation,
    ];
    private readonly SidecarInjectionOptions _options = options.Value;

    public InjectionResult Review(ReadOnlySpan<byte> body)
    {
        JsonNode? root;
        try
        {
            // Duplicate keys are refused while parsing (JsonObject would throw ArgumentException later, on first access).
            root = JsonNode.Parse(body, documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false });
        }
        catch (JsonException ex)
        {
            return new InjectionResult(400, null, $"the body is not JSON ({ex.Message}); expected an admission.k8s.io/v1 AdmissionReview");
        }

        if (root is not JsonObject review || Text(review["kind"]) != "AdmissionReview")
        {
            return new InjectionResult(400, null, "the body is not an AdmissionReview (kind must be AdmissionReview)");
        }

        if (Text(review["apiVersion"]) != AdmissionReview.V1)
        {
            return new InjectionResult(400, null, $"AdmissionReview apiVersion '{review["apiVersion"]?.ToJsonString()}' is not supported; set admissionReviewVersions: [v1]");
        }

        if (review["request"] is not JsonObject request || Text(request["uid"]) is not { Length: > 0 } uid)
        {
            return new InjectionResult(400, null, "the AdmissionReview has no request.uid (a non-empty string)");
        }

        var response = Decide(request, uid);
        return new InjectionResult(200, new AdmissionReview { ApiVersion = AdmissionReview.V1, Kind = "AdmissionReview", Response = response }, null);
    }

    private AdmissionResponse Decide(JsonObject request, string uid)
    {
        if (Text(request["operation"]) != "CREATE")
        {
            return Allow(uid);
        }

        if (request["object"] is not JsonObject pod || pod["kind"] is { } kind && Text(kind) != "Pod" || (pod["spec"] as JsonObject)?["containers"] is not JsonArray containers)
        {
            return Deny(uid, "sharding: request.object is not a Pod with spec.containers");
        }

        var metadata = pod["metadata"] as JsonObject;
        var labels = metadata?["labels"] as JsonObject;
        var annotations = metadata?["annotations"] as JsonObject;
        var label = Text(labels?[InjectKey]);
        var annotation = Text(annotations?[InjectKey]);

        // The label (selected by the webhook's objectSelector) or the annotation (namespaces labelled sharding.dev/injection: enabled).
        if (label != "true" && annotation != "true")
        {
            return Allow(uid);
        }

        if (containers.Count == 0 || containers.Any(static c => c is not JsonObject))
        {
            return Deny(uid, "sharding: spec.containers must list the pod's containers (objects); it is empty or holds something else");
        }

        // Already there: injected before, or declared by hand, also as a native sidecar (an init container with restartPolicy
        // Always); a second container of the same name would make the pod invalid.
        if (containers.Concat((pod["spec"]?["initContainers"] as JsonArray) ?? []).Any(c => Text((c as JsonObject)?["name"]) == _options.ContainerName))
        {
            return Allow(uid);
        }

        if (BadTypes(metadata, labels, annotations, containers) is { } badType)
        {
            return Deny(uid, $"sharding: {badType}");
        }

        var service = ServiceName(metadata, labels, annotations);
        if (service is null)
        {
            return Deny(uid, $"sharding: cannot tell which sharded service this pod belongs to; set the annotation {ServiceKey}");
        }

        var sidecarPort = SidecarPort(annotations, out var portError);
        var appPort = portError is null ? AppPort(annotations, containers, sidecarPort, out portError) : 0;
        if (portError is not null)
        {
            return Deny(uid, portError);
        }

        if (appPort == sidecarPort || appPort == _options.AdminPort)
        {
            // Taken from the first container's ports: the app and the sidecar cannot both listen there.
            return Deny(uid, $"sharding: the app port {appPort} (the first container's first port) is also the sidecar's; set {AppPortAnnotation}, or {SidecarPortAnnotation} to another port than {appPort}");
        }

        var patch = new JsonArray();
        if (labels is null)
        {
            if (metadata is null)
            {
                patch.Add(Op("add", "/metadata", new JsonObject()));
            }

            patch.Add(Op("add", "/metadata/labels", new JsonObject()));
        }

        if (Text(labels?[ServiceKey]) != service)
        {
            patch.Add(Op("add", "/metadata/labels/" + Escape(ServiceKey), service));
        }

        // A pod-level runAsUser applies to every container: 0 (an app that runs as root) would make the sidecar's runAsNonRoot
        // refuse to start it, so then the sidecar names its own user. Otherwise it names none: OpenShift's restricted SCC
        // assigns users from the namespace's range and refuses a container that pins one outside it.
        var podRunsAsRoot = pod["spec"]?["securityContext"]?["runAsUser"] is JsonValue user && user.TryGetValue<long>(out var podUser) && podUser == 0;
        patch.Add(Op("add", "/spec/containers/-", Sidecar(service, appPort, sidecarPort, podRunsAsRoot)));
        var warnings = Warnings(annotations);
        return new AdmissionResponse
        {
            Uid = uid,
            Allowed = true,
            PatchType = AdmissionResponse.JsonPatchType,
            Patch = Encoding.UTF8.GetBytes(patch.ToJsonString()),
            Warnings = warnings.Count == 0 ? null : warnings,
        };
    }

    /// <summary>
    /// The service name: annotation <c>sharding.dev/service</c>; else the label; else the controller owner (a StatefulSet's
    /// name; a ReplicaSet's name without its pod-template-hash suffix, i.e. the Deployment); else <c>generateName</c>
    /// without its trailing dash; else the <c>app.kubernetes.io/name</c> or <c>app</c> label.
    /// </summary>
    internal static string? ServiceName(JsonObject? metadata, JsonObject? labels, JsonObject? annotations)
    {
        if (Text(annotations?[ServiceKey]) is { Length: > 0 } fromAnnotation)
        {
            return fromAnnotation;
        }

        if (Text(labels?[ServiceKey]) is { Length: > 0 } fromLabel)
        {
            return fromLabel;
        }

        if (metadata?["ownerReferences"] is JsonArray owners
            && owners.OfType<JsonObject>().FirstOrDefault(o => o["controller"] is JsonValue c && c.TryGetValue<bool>(out var isController) && isController) is { } owner
            && Text(owner["name"]) is { Length: > 0 } ownerName)
        {
            if (Text(owner["kind"]) == "ReplicaSet" && Text(labels?["pod-template-hash"]) is { Length: > 0 } hash
                && ownerName.EndsWith("-" + hash, StringComparison.Ordinal))
            {
                return ownerName[..^(hash.Length + 1)];
            }

            return ownerName;
        }

        if (Text(metadata?["generateName"]) is { Length: > 0 } generateName && generateName.TrimEnd('-') is { Length: > 0 } trimmed)
        {
            return trimmed;
        }

        return Text(labels?["app.kubernetes.io/name"]) is { Length: > 0 } appName ? appName
            : Text(labels?["app"]) is { Length: > 0 } app ? app
            : null;
    }

    private int AppPort(JsonObject? annotations, JsonArray containers, int sidecarPort, out string? error)
    {
        error = null;
        if (Text(annotations?[AppPortAnnotation]) is { } text)
        {
            if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var port) && port is > 0 and < 65536
                && port != sidecarPort && port != _options.AdminPort)
            {
                return port;
            }

            error = $"sharding: annotation {AppPortAnnotation}='{text}' must be a port 1-65535 other than the sidecar's {sidecarPort} and {_options.AdminPort}";
            return 0;
        }

        // BadTypes checked the shape: the first container's first port, if it declares one.
        return ((containers[0] as JsonObject)?["ports"] as JsonArray) is { Count: > 0 } ports
            && (ports[0] as JsonObject)?["containerPort"] is JsonValue value && value.TryGetValue<int>(out var declared)
            ? declared
            : _options.DefaultAppPort;
    }

    /// <summary>
    /// The proxy port: annotation <c>sharding.dev/sidecar-port</c> (membership publishes <c>podIP:</c> that port, so the sidecar
    /// must listen there), else <see cref="SidecarInjectionOptions.SidecarPort"/>.
    /// </summary>
    private int SidecarPort(JsonObject? annotations, out string? error)
    {
        error = null;
        if (Text(annotations?[SidecarPortAnnotation]) is not { } text)
        {
            return _options.SidecarPort;
        }

        if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var port) && port is > 0 and < 65536 && port != _options.AdminPort)
        {
            return port;
        }

        error = $"sharding: annotation {SidecarPortAnnotation}='{text}' must be a port 1-65535 other than the sidecar's admin port {_options.AdminPort}";
        return 0;
    }

    /// <summary>What the webhook reads must have the types a Pod has (strings, objects, numbers); null when it does.</summary>
    private static string? BadTypes(JsonObject? metadata, JsonObject? labels, JsonObject? annotations, JsonArray containers)
    {
        foreach (var (name, map) in new[] { ("labels", labels), ("annotations", annotations) })
        {
            if (map?.FirstOrDefault(static p => p.Value is not null && Text(p.Value) is null) is { Key: { } key })
            {
                return $"metadata.{name}['{key}'] must be a string";
            }
        }

        if (metadata?["ownerReferences"] is JsonArray owners && owners.OfType<JsonObject>().Any(static o => o["controller"] is { } c && (c is not JsonValue v || !v.TryGetValue<bool>(out _))))
        {
            return "metadata.ownerReferences[].controller must be true or false";
        }

        if (((containers[0] as JsonObject)?["ports"] as JsonArray) is { Count: > 0 } ports
            && (ports[0] is not JsonObject port || port["containerPort"] is { } p && (p is not JsonValue v || !v.TryGetValue<int>(out _))))
        {
            return "spec.containers[0].ports[0].containerPort must be a number";
        }

        return null;
    }

    /// <summary>
    /// Warnings (kubectl prints them) for <c>sharding.dev/</c> annotations the control plane does not know, or whose value it would
    /// ignore for its default (PodMembershipSource logs event 205 then): a typo must not pass silently.
    /// </summary>
    private static List<string> Warnings(JsonObject? annotations)
    {
        var warnings = new List<string>();
        foreach (var (key, node) in annotations ?? [])
        {
            if (!key.StartsWith(Prefix, StringComparison.Ordinal))
            {
                continue;
            }

            var value = Text(node) ?? string.Empty;
            string? why = null;
            var problem = key switch
            {
                InjectKey or ServiceKey or AppPortAnnotation or SidecarPortAnnotation or FallbackMemberAnnotation => null,
                KeyAnnotation => KeyRulesProblem(value),
                NoKeyAnnotation => PodMembershipSource.TryParseNoKey(value, annotations![FallbackMemberAnnotation] is not null, out _, out why) ? null : why,
                MaxBodyBytesAnnotation => PodMembershipSource.TryParseMaxBodyBytes(value, out _, out why) ? null : why,
                AlgorithmAnnotation => PodMembershipSource.TryParseAlgorithm(value, out _, out why) ? null : why,
                TableSizeAnnotation => PodMembershipSource.TryParseTableSize(value, out _, out why) ? null : why,
                HashKeyAnnotation => PodMembershipSource.TryParseHashKey(value, out _, out why) ? null : why,
                WeightAnnotation => PodMembershipSource.TryParseWeight(value, out _, out why) ? null : why,
                _ => string.Empty,
            };
            if (problem is null)
            {
                continue;
            }

            warnings.Add(problem.Length == 0
                ? $"sharding: unknown annotation {key} is ignored; known: {string.Join(", ", KnownAnnotations)}"
                : $"sharding: annotation {key}='{value}' is invalid ({problem}); the default is used");
        }

        return warnings;
    }

    private static string? KeyRulesProblem(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0)
        {
            return "no rule; e.g. header:x-shard-key";
        }

        foreach (var part in parts)
        {
            if (!ShardKeyRule.TryParse(part, out _, out var error))
            {
                return $"rule '{part}': {error}";
            }
        }

        return null;
    }

    private JsonObject Sidecar(string service, int appPort, int sidecarPort, bool podRunsAsRoot) => new()
    {
        ["name"] = _options.ContainerName,
        ["image"] = _options.Image,
        ["imagePullPolicy"] = "IfNotPresent",
        ["ports"] = new JsonArray(
            new JsonObject { ["name"] = "sharding-proxy", ["containerPort"] = sidecarPort, ["protocol"] = "TCP" },
            new JsonObject { ["name"] = "sharding-admin", ["containerPort"] = _options.AdminPort, ["protocol"] = "TCP" }),
        ["env"] = new JsonArray(
            FieldEnv("POD_NAME", "metadata.name"),
            FieldEnv("POD_NAMESPACE", "metadata.namespace"),
            FieldEnv("POD_IP", "status.podIP"),
            // The sidecar's own option keys (section Sidecar, docs/sidecar.md); it reads POD_NAME itself.
            Env("Sidecar__Service", service),
            Env("Sidecar__AppPort", appPort.ToString(CultureInfo.InvariantCulture)),
            Env("Sidecar__Port", sidecarPort.ToString(CultureInfo.InvariantCulture)),
            Env("Sidecar__AdminPort", _options.AdminPort.ToString(CultureInfo.InvariantCulture)),
            Env("Sidecar__ControlPlaneUrls__0", _options.ControlPlaneAddress),
            SecretEnv("Sidecar__ForwardingSecret", _options.ForwardingSecretName, _options.ForwardingSecretKey)),
        ["resources"] = new JsonObject
        {
            ["requests"] = new JsonObject { ["cpu"] = _options.CpuRequest, ["memory"] = _options.MemoryRequest },
            ["limits"] = new JsonObject { ["memory"] = _options.MemoryLimit },
        },
        ["readinessProbe"] = Probe("/readyz", period: 5, failures: 3),
        ["livenessProbe"] = Probe("/healthz", period: 10, failures: 3),
        ["securityContext"] = SecurityContext(podRunsAsRoot),
    };

    private JsonObject SecurityContext(bool podRunsAsRoot)
    {
        var context = new JsonObject
        {
            ["runAsNonRoot"] = true,
            ["allowPrivilegeEscalation"] = false,
            ["readOnlyRootFilesystem"] = true,
            ["capabilities"] = new JsonObject { ["drop"] = new JsonArray("ALL") },

            // With the three above, what Pod Security "restricted" asks of every container whose pod does not set it.
            ["seccompProfile"] = new JsonObject { ["type"] = "RuntimeDefault" },
        };
        if (podRunsAsRoot)
        {
            context["runAsUser"] = _options.RunAsUser;
        }

        return context;
    }

    private JsonObject Probe(string path, int period, int failures) => new()
    {
        ["httpGet"] = new JsonObject { ["path"] = path, ["port"] = _options.AdminPort },
        ["periodSeconds"] = period,
        ["failureThreshold"] = failures,
    };

    private static JsonObject Env(string name, string value) => new() { ["name"] = name, ["value"] = value };

    private static JsonObject SecretEnv(string name, string secret, string key) =>
        new() { ["name"] = name, ["valueFrom"] = new JsonObject { ["secretKeyRef"] = new JsonObject { ["name"] = secret, ["key"] = key } } };

    private static JsonObject FieldEnv(string name, string fieldPath) =>
        new() { ["name"] = name, ["valueFrom"] = new JsonObject { ["fieldRef"] = new JsonObject { ["fieldPath"] = fieldPath } } };

    /// <summary>The string a node holds; null for a missing node, null, a number, a boolean, an object or an array.</summary>
    private static string? Text(JsonNode? node) => node is JsonValue value && value.TryGetValue<string>(out var text) ? text : null;

    private static JsonObject Op(string op, string path, JsonNode? value) => new() { ["op"] = op, ["path"] = path, ["value"] = value };

    // RFC 6901: "~" becomes "~0" and "/" becomes "~1" inside a JSON Pointer segment.
    internal static string Escape(string segment) => segment.Replace("~", "~0", StringComparison.Ordinal).Replace("/", "~1", StringComparison.Ordinal);

    private static AdmissionResponse Allow(string uid) => new() { Uid = uid, Allowed = true };

    private static AdmissionResponse Deny(string uid, string message) => new()
    {
        Uid = uid,
        Allowed = false,
        Status = new Status { Kind = null, ApiVersion = null, Code = 400, Reason = "BadRequest", Message = message },
    };
}

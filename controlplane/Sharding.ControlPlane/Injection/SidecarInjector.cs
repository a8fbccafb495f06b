using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Options;
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
/// HTTP 200 with <c>allowed: false</c> and a Status (code 400) saying what to fix. Pods that do not opt in, operations
/// other than CREATE, and pods that already have the sidecar container are allowed without a patch.
/// </remarks>
internal sealed class SidecarInjector(IOptions<SidecarInjectionOptions> options)
{
    internal const string InjectKey = "sharding.dev/inject";
    internal const string ServiceKey = "sharding.dev/service";
    internal const string AppPortAnnotation = "sharding.dev/app-port";
    private readonly SidecarInjectionOptions _options = options.Value;

    public InjectionResult Review(ReadOnlySpan<byte> body)
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(body);
        }
        catch (JsonException ex)
        {
            return new InjectionResult(400, null, $"the body is not JSON ({ex.Message}); expected an admission.k8s.io/v1 AdmissionReview");
        }

        if (root is not JsonObject review || (string?)review["kind"] != "AdmissionReview")
        {
            return new InjectionResult(400, null, "the body is not an AdmissionReview (kind must be AdmissionReview)");
        }

        if ((string?)review["apiVersion"] != AdmissionReview.V1)
        {
            return new InjectionResult(400, null, $"AdmissionReview apiVersion '{(string?)review["apiVersion"]}' is not supported; set admissionReviewVersions: [v1]");
        }

        if (review["request"] is not JsonObject request || (string?)request["uid"] is not { Length: > 0 } uid)
        {
            return new InjectionResult(400, null, "the AdmissionReview has no request.uid");
        }

        var response = Decide(request, uid);
        return new InjectionResult(200, new AdmissionReview { ApiVersion = AdmissionReview.V1, Kind = "AdmissionReview", Response = response }, null);
    }

    private AdmissionResponse Decide(JsonObject request, string uid)
    {
        if ((string?)request["operation"] != "CREATE")
        {
            return Allow(uid);
        }

        if (request["object"] is not JsonObject pod || (string?)pod["kind"] is { } kind && kind != "Pod" || pod["spec"]?["containers"] is not JsonArray containers)
        {
            return Deny(uid, "sharding: request.object is not a Pod with spec.containers");
        }

        var metadata = pod["metadata"] as JsonObject;
        var labels = metadata?["labels"] as JsonObject;
        var annotations = metadata?["annotations"] as JsonObject;
        var label = (string?)labels?[InjectKey];
        var annotation = (string?)annotations?[InjectKey];

        // The label (selected by the webhook's objectSelector) or the annotation (namespaces labelled sharding.dev/injection: enabled).
        if (label != "true" && annotation != "true")
        {
            return Allow(uid);
        }

        if (containers.Any(c => (string?)c?["name"] == _options.ContainerName))
        {
            return Allow(uid);
        }

        var service = ServiceName(metadata, labels, annotations);
        if (service is null)
        {
            return Deny(uid, $"sharding: cannot tell which sharded service this pod belongs to; set the annotation {ServiceKey}");
        }

        var appPort = AppPort(annotations, containers, out var portError);
        if (portError is not null)
        {
            return Deny(uid, portError);
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

        if ((string?)labels?[ServiceKey] != service)
        {
            patch.Add(Op("add", "/metadata/labels/" + Escape(ServiceKey), service));
        }

        patch.Add(Op("add", "/spec/containers/-", Sidecar(service, appPort)));
        return new AdmissionResponse
        {
            Uid = uid,
            Allowed = true,
            PatchType = AdmissionResponse.JsonPatchType,
            Patch = Encoding.UTF8.GetBytes(patch.ToJsonString()),
        };
    }

    /// <summary>
    /// The service name: annotation <c>sharding.dev/service</c>; else the label; else the controller owner (a StatefulSet's
    /// name; a ReplicaSet's name without its pod-template-hash suffix, i.e. the Deployment); else <c>generateName</c>
    /// without its trailing dash; else the <c>app.kubernetes.io/name</c> or <c>app</c> label.
    /// </summary>
    internal static string? ServiceName(JsonObject? metadata, JsonObject? labels, JsonObject? annotations)
    {
        if ((string?)annotations?[ServiceKey] is { Length: > 0 } fromAnnotation)
        {
            return fromAnnotation;
        }

        if ((string?)labels?[ServiceKey] is { Length: > 0 } fromLabel)
        {
            return fromLabel;
        }

        if (metadata?["ownerReferences"] is JsonArray owners
            && owners.OfType<JsonObject>().FirstOrDefault(o => (bool?)o["controller"] == true) is { } owner
            && (string?)owner["name"] is { Length: > 0 } ownerName)
        {
            if ((string?)owner["kind"] == "ReplicaSet" && (string?)labels?["pod-template-hash"] is { Length: > 0 } hash
                && ownerName.EndsWith("-" + hash, StringComparison.Ordinal))
            {
                return ownerName[..^(hash.Length + 1)];
            }

            return ownerName;
        }

        if ((string?)metadata?["generateName"] is { Length: > 0 } generateName && generateName.TrimEnd('-') is { Length: > 0 } trimmed)
        {
            return trimmed;
        }

        return (string?)labels?["app.kubernetes.io/name"] is { Length: > 0 } appName ? appName
            : (string?)labels?["app"] is { Length: > 0 } app ? app
            : null;
    }

    private int AppPort(JsonObject? annotations, JsonArray containers, out string? error)
    {
        error = null;
        if ((string?)annotations?[AppPortAnnotation] is { } text)
        {
            if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var port) && port is > 0 and < 65536
                && port != _options.SidecarPort && port != _options.AdminPort)
            {
                return port;
            }

            error = $"sharding: annotation {AppPortAnnotation}='{text}' must be a port 1-65535 other than the sidecar's {_options.SidecarPort} and {_options.AdminPort}";
            return 0;
        }

        return (int?)containers[0]?["ports"]?[0]?["containerPort"] ?? _options.DefaultAppPort;
    }

    private JsonObject Sidecar(string service, int appPort) => new()
    {
        ["name"] = _options.ContainerName,
        ["image"] = _options.Image,
        ["imagePullPolicy"] = "IfNotPresent",
        ["ports"] = new JsonArray(
            new JsonObject { ["name"] = "sharding-proxy", ["containerPort"] = _options.SidecarPort, ["protocol"] = "TCP" },
            new JsonObject { ["name"] = "sharding-admin", ["containerPort"] = _options.AdminPort, ["protocol"] = "TCP" }),
        ["env"] = new JsonArray(
            FieldEnv("POD_NAME", "metadata.name"),
            FieldEnv("POD_NAMESPACE", "metadata.namespace"),
            FieldEnv("POD_IP", "status.podIP"),
            // The sidecar's own option keys (section Sidecar, docs/sidecar.md); it reads POD_NAME itself.
            Env("Sidecar__Service", service),
            Env("Sidecar__AppPort", appPort.ToString(CultureInfo.InvariantCulture)),
            Env("Sidecar__Port", _options.SidecarPort.ToString(CultureInfo.InvariantCulture)),
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
        ["securityContext"] = new JsonObject
        {
            ["runAsNonRoot"] = true,
            ["allowPrivilegeEscalation"] = false,
            ["readOnlyRootFilesystem"] = true,
            ["capabilities"] = new JsonObject { ["drop"] = new JsonArray("ALL") },
        },
    };

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

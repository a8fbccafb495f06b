using System.Text.Json.Serialization;

namespace Sharding.Kubernetes;

/// <summary>Source-generated JSON metadata for the Kubernetes models: camelCase, nulls left out on write.</summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    UseStringEnumConverter = true)]
[JsonSerializable(typeof(Pod))]
[JsonSerializable(typeof(PodList))]
[JsonSerializable(typeof(Lease))]
[JsonSerializable(typeof(Status))]
[JsonSerializable(typeof(MutatingWebhookConfiguration))]
[JsonSerializable(typeof(RawWatchEvent))]
[JsonSerializable(typeof(AdmissionReview))]
public sealed partial class KubernetesJsonContext : JsonSerializerContext;

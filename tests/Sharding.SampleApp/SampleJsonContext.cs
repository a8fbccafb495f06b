using System.Text.Json.Serialization;

namespace Sharding.SampleApp;

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(CounterReply))]
[JsonSerializable(typeof(OwnershipAnswer))]
[JsonSerializable(typeof(OwnershipStats))]
[JsonSerializable(typeof(IReadOnlyCollection<ServedRecord>))]
internal sealed partial class SampleJsonContext : JsonSerializerContext;

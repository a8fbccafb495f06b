using System.Collections.Immutable;
using System.Globalization;
using System.Text.Json;
using Sharding.Hashing;
using Sharding.Keys;
using Sharding.Mapping;
using YamlDotNet.Core;
using YamlDotNet.Serialization;

namespace Sharding.ControlPlane.Membership;

/// <summary>Parses the local-mode membership file (JSON or YAML, see docs/local-mode.md); errors name the offending path.</summary>
internal static class MembershipFileParser
{
    public static MembershipSnapshot Parse(string text, string fileName)
    {
        ArgumentNullException.ThrowIfNull(text);
        var json = IsYaml(fileName, text) ? YamlToJson(text) : text;
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip, AllowDuplicateProperties = false });
        }
        catch (JsonException ex)
        {
            throw new FormatException($"not valid JSON: {ex.Message}", ex);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("services", out var services) || services.ValueKind != JsonValueKind.Object)
            {
                throw new FormatException("the file needs a top-level 'services' mapping: services: { <service name>: { members: [...] } }");
            }

            var builder = ImmutableDictionary.CreateBuilder<string, ServiceMembership>(StringComparer.Ordinal);
            foreach (var service in services.EnumerateObject())
            {
                builder[service.Name] = ParseService(service.Name, service.Value);
            }

            return new MembershipSnapshot(builder.ToImmutable());
        }
    }

    private static ServiceMembership ParseService(string name, JsonElement element)
    {
        var at = $"services.{name}";
        if (string.IsNullOrWhiteSpace(name))
        {
            throw new FormatException("a service name must not be empty");
        }

        if (element.ValueKind != JsonValueKind.Object)
        {
            throw new FormatException($"{at} must be a mapping with 'members' and optional settings");
        }

        var algorithm = ShardAlgorithm.Maglev;
        if (String(element, "algorithm", at) is { } algorithmText && !ShardAlgorithmNames.TryParse(algorithmText, out algorithm))
        {
            throw new FormatException($"{at}.algorithm: unknown algorithm '{algorithmText}' (use maglev, ring or modulo)");
        }

        var tableOptions = new ShardTableOptions
        {
            MaglevTableSize = (int)Integer(element, "tableSize", at, ShardTableOptions.DefaultMaglevTableSize, 2, ShardTableOptions.MaxMaglevTableSize),
            MinimumRingSize = Integer(element, "minRingSize", at, ShardTableOptions.DefaultMinimumRingSize, 1, 1L << 26),
            MaximumRingSize = Integer(element, "maxRingSize", at, ShardTableOptions.DefaultMaximumRingSize, 1, 1L << 26),
        };
        var hashKeyText = String(element, "hashKey", at) ?? "name";
        if (!HashKeySourceNames.TryParse(hashKeyText, out var hashKey))
        {
            throw new FormatException($"{at}.hashKey: '{hashKeyText.ToLowerInvariant()}' is not name or address");
        }

        var rules = ImmutableArray.CreateBuilder<ShardKeyRule>();
        if (element.TryGetProperty("keyRules", out var rulesElement))
        {
            if (rulesElement.ValueKind != JsonValueKind.Array)
            {
                throw new FormatException($"{at}.keyRules must be a list such as [\"header:x-shard-key\", \"path:/docs/{{key}}\"]");
            }

            var i = 0;
            foreach (var rule in rulesElement.EnumerateArray())
            {
                if (rule.ValueKind != JsonValueKind.String)
                {
                    throw new FormatException($"{at}.keyRules[{i}]: must be a string");
                }

                if (!ShardKeyRule.TryParse(rule.GetString()!, out var parsed, out var error))
                {
                    throw new FormatException($"{at}.keyRules[{i}]: {error}");
                }

                rules.Add(parsed);
                i++;
            }
        }

        var noKeyText = String(element, "noKey", at) ?? "reject";
        if (!NoKeyActionNames.TryParse(noKeyText, out var noKey))
        {
            throw new FormatException($"{at}.noKey: '{noKeyText}' is not reject, serve-locally or fixed-member");
        }

        var fallback = String(element, "fallbackMember", at);
        if (noKey == NoKeyAction.FixedMember && string.IsNullOrEmpty(fallback))
        {
            throw new FormatException($"{at}.fallbackMember is required when noKey is fixed-member");
        }

        var policy = new ShardKeyPolicy
        {
            Rules = rules.Count == 0 ? ShardKeyPolicy.Default.Rules : rules.ToImmutable(),
            NoKey = noKey,
            FallbackMember = fallback,
            MaxBodyBytes = (int)Integer(element, "maxBodyBytes", at, ShardKeyPolicy.DefaultMaxBodyBytes, 1, ShardKeyPolicy.MaxBodyBytesLimit),
        };

        var members = ImmutableArray.CreateBuilder<ShardMember>();
        if (element.TryGetProperty("members", out var membersElement) && membersElement.ValueKind != JsonValueKind.Null)
        {
            if (membersElement.ValueKind != JsonValueKind.Array)
            {
                throw new FormatException($"{at}.members must be a list of {{name, address, weight}}");
            }

            var names = new HashSet<string>(StringComparer.Ordinal);
            var i = 0;
            foreach (var member in membersElement.EnumerateArray())
            {
                var memberAt = $"{at}.members[{i}]";
                if (member.ValueKind != JsonValueKind.Object)
                {
                    throw new FormatException($"{memberAt} must be a mapping with name, address and optional weight");
                }

                var memberName = String(member, "name", memberAt) ?? throw new FormatException($"{memberAt}.name is required (the stable member name, e.g. the pod name)");
                var address = String(member, "address", memberAt) ?? throw new FormatException($"{memberAt}.address is required (the member's sidecar host:port)");
                if (!MemberAddress.IsHostPort(address))
                {
                    throw new FormatException($"{memberAt}.address: '{address}' is not host:port of the member's sidecar (an IPv6 host in brackets, e.g. [fd00::1]:15100)");
                }

                if (!names.Add(memberName))
                {
                    throw new FormatException($"{memberAt}.name: '{memberName}' is listed twice");
                }

                members.Add(new ShardMember(memberName, address, (uint)Integer(member, "weight", memberAt, 1, 0, 1_000_000)));
                i++;
            }
        }

        var result = new ServiceMembership(name, members.ToImmutable(), algorithm, tableOptions, policy, hashKey);
        try
        {
            // Validates prime sizes, duplicate hash keys and weights exactly as the leader will.
            _ = ShardMap.Create(name, 0, result.Members, algorithm, tableOptions, policy, hashKey);
        }
        catch (ArgumentException ex)
        {
            throw new FormatException($"{at}: {ex.Message}", ex);
        }

        return result;
    }

    private static string? String(JsonElement element, string property, string at)
    {
        if (!element.TryGetProperty(property, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        return value.ValueKind switch
        {
            JsonValueKind.String => value.GetString(),
            JsonValueKind.Number => value.GetRawText(),
            _ => throw new FormatException($"{at}.{property} must be a string"),
        };
    }

    private static long Integer(JsonElement element, string property, string at, long defaultValue, long min, long max)
    {
        if (!element.TryGetProperty(property, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return defaultValue;
        }

        long result;
        var ok = value.ValueKind switch
        {
            JsonValueKind.Number => value.TryGetInt64(out result),
            JsonValueKind.String => long.TryParse(value.GetString(), NumberStyles.Integer, CultureInfo.InvariantCulture, out result),
            _ => (result = 0) == 1,
        };
        if (!ok || result < min || result > max)
        {
            throw new FormatException($"{at}.{property} must be an integer between {min} and {max} (got {value.GetRawText()})");
        }

        return result;
    }

    private static bool IsYaml(string fileName, string text) =>
        fileName.EndsWith(".yaml", StringComparison.OrdinalIgnoreCase) || fileName.EndsWith(".yml", StringComparison.OrdinalIgnoreCase)
        || (!fileName.EndsWith(".json", StringComparison.OrdinalIgnoreCase) && !text.TrimStart().StartsWith('{'));

    private static string YamlToJson(string yaml)
    {
        try
        {
            // A second 'members:' (or 'services:', a service named twice...) must not silently replace the first.
            var graph = new DeserializerBuilder().WithDuplicateKeyChecking().Build().Deserialize<object?>(yaml);
            return new SerializerBuilder().JsonCompatible().Build().Serialize(graph ?? new Dictionary<string, object>());
        }
        catch (YamlException ex)
        {
            throw new FormatException($"not valid YAML at line {ex.Start.Line}, column {ex.Start.Column}: {ex.InnerException?.Message ?? ex.Message}", ex);
        }
    }
}

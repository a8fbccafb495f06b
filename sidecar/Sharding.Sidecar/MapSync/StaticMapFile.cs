using System.Collections.Immutable;
using Sharding.Hashing;
using Sharding.Keys;
using Sharding.Mapping;
using YamlDotNet.Serialization;
using YamlDotNet.Serialization.NamingConventions;

namespace Sharding.Sidecar.MapSync;

/// <summary>
/// The static shard-map file (YAML, or JSON which YAML reads too):
/// <code>
/// service: docs
/// algorithm: maglev          # maglev | ring | modulo
/// tableSize: 65537           # optional, prime
/// hashKey: name              # name | address
/// generation: 7              # optional, 0..2^53-1; a reload always gets a higher one than the map it replaces
/// members:
///   - { name: docs-0, address: 10.0.3.7:15100, weight: 1 }
/// keys:
///   rules: [ "header:x-shard-key", "path:/docs/{key}" ]
///   noKey: reject            # reject | serveLocally | fixedMember
///   fallbackMember: docs-0
///   maxBodyBytes: 65536
/// </code>
/// </summary>
internal static class StaticMapFile
{
    /// <summary>
    /// The highest generation a file may name: 2^53 − 1, the largest integer a double holds exactly (the generation gauge is
    /// one). It leaves room for the +1 every later reload needs; a file at <see cref="long.MaxValue"/> left none, and every
    /// later edit was refused as not newer.
    /// </summary>
    public const long MaxGeneration = (1L << 53) - 1;

    private static readonly IDeserializer Deserializer = new DeserializerBuilder()
        .WithNamingConvention(CamelCaseNamingConvention.Instance)
        .WithDuplicateKeyChecking() // a second 'members:' (or 'keys:', 'name:'...) must not silently replace the first
        .Build();

    /// <summary>Parses and checks the file text; every problem is named.</summary>
    /// <param name="text">The file's text.</param>
    /// <param name="generation">The generation to give the map when the file names none (or a lower one).</param>
    /// <param name="map">The map.</param>
    /// <param name="error">What is wrong.</param>
    /// <returns>Whether the file is good.</returns>
    public static bool TryParse(string text, long generation, out ShardMap? map, out string? error)
    {
        map = null;
        MapDocument? doc;
        try
        {
            doc = Deserializer.Deserialize<MapDocument>(text);
        }
        catch (YamlDotNet.Core.YamlException ex)
        {
            error = $"not valid YAML/JSON at line {ex.Start.Line}, column {ex.Start.Column}: {ex.InnerException?.Message ?? ex.Message}";
            return false;
        }

        if (doc is null)
        {
            error = "the file is empty";
            return false;
        }

        var problems = new List<string>();
        if (string.IsNullOrWhiteSpace(doc.Service))
        {
            problems.Add("'service' is missing");
        }

        var algorithm = ShardAlgorithm.Maglev;
        if (doc.Algorithm is { } algorithmText && !ShardAlgorithmNames.TryParse(algorithmText, out algorithm))
        {
            problems.Add($"'algorithm: {algorithmText}' is unknown: use maglev, ring or modulo");
        }

        var hashKey = HashKeySource.Name;
        if (doc.HashKey is { } hashKeyText && !HashKeySourceNames.TryParse(hashKeyText, out hashKey))
        {
            problems.Add($"'hashKey: {hashKeyText}' is unknown: use name or address");
        }

        if (doc.Generation is < 0 or > MaxGeneration)
        {
            problems.Add($"'generation: {doc.Generation}' is out of range: use 0..{MaxGeneration} (2^53 - 1), or leave it out");
        }

        var members = new List<ShardMember>();
        if (doc.Members is null || doc.Members.Count == 0)
        {
            problems.Add("'members' is empty: list at least one { name, address }");
        }
        else
        {
            for (var i = 0; i < doc.Members.Count; i++)
            {
                var m = doc.Members[i];
                if (m is null || string.IsNullOrWhiteSpace(m.Name) || string.IsNullOrWhiteSpace(m.Address))
                {
                    problems.Add($"members[{i}] needs a name and an address (host:port of its sidecar)");
                    continue;
                }

                if (!MemberAddress.IsHostPort(m.Address.Trim()))
                {
                    problems.Add($"members[{i}].address '{m.Address.Trim()}' is not host:port of its sidecar (an IPv6 host in brackets, e.g. [fd00::1]:15100)");
                    continue;
                }

                members.Add(new ShardMember(m.Name.Trim(), m.Address.Trim(), m.Weight ?? 1));
            }
        }

        var policy = ShardKeyPolicy.Default;
        if (doc.Keys is { } keys)
        {
            var rules = ImmutableArray.CreateBuilder<ShardKeyRule>();
            var ruleTexts = keys.Rules ?? [];
            for (var i = 0; i < ruleTexts.Count; i++)
            {
                var ruleText = ruleTexts[i];
                if (string.IsNullOrWhiteSpace(ruleText))
                {
                    problems.Add($"keys.rules[{i}] is empty: give a rule such as header:x-shard-key");
                }
                else if (ShardKeyRule.TryParse(ruleText, out var rule, out var ruleError))
                {
                    rules.Add(rule);
                }
                else
                {
                    problems.Add($"keys.rules: {ruleError}");
                }
            }

            var noKey = NoKeyAction.Reject;
            if (keys.NoKey is { } noKeyText && !NoKeyActionNames.TryParse(noKeyText, out noKey))
            {
                problems.Add($"'keys.noKey: {noKeyText}' is unknown: use reject, serveLocally or fixedMember");
            }

            if (noKey == NoKeyAction.FixedMember && (keys.FallbackMember is null || !members.Exists(m => m.Name == keys.FallbackMember)))
            {
                problems.Add($"'keys.noKey: fixedMember' needs 'keys.fallbackMember' naming one of the members (got '{keys.FallbackMember}')");
            }

            if (keys.MaxBodyBytes is < 1 or > ShardKeyPolicy.MaxBodyBytesLimit)
            {
                problems.Add($"'keys.maxBodyBytes: {keys.MaxBodyBytes}' must be 1..{ShardKeyPolicy.MaxBodyBytesLimit}");
            }

            policy = new ShardKeyPolicy
            {
                Rules = rules.Count > 0 ? rules.ToImmutable() : ShardKeyPolicy.Default.Rules,
                NoKey = noKey,
                FallbackMember = keys.FallbackMember,
                MaxBodyBytes = keys.MaxBodyBytes ?? ShardKeyPolicy.DefaultMaxBodyBytes,
            };
        }

        if (problems.Count > 0)
        {
            error = string.Join("; ", problems);
            return false;
        }

        try
        {
            var tableOptions = doc.TableSize is { } size ? new ShardTableOptions { MaglevTableSize = size } : null;
            map = ShardMap.Create(doc.Service!, Math.Max(generation, doc.Generation ?? 0), members, algorithm, tableOptions, policy, hashKey);
        }
        catch (ArgumentException ex)
        {
            error = ex.Message;
            return false;
        }

        error = null;
        return true;
    }

    private sealed class MapDocument
    {
        public string? Service { get; set; }

        public string? Algorithm { get; set; }

        public int? TableSize { get; set; }

        public string? HashKey { get; set; }

        public long? Generation { get; set; }

        public List<MemberDocument?>? Members { get; set; }

        public KeysDocument? Keys { get; set; }
    }

    private sealed class MemberDocument
    {
        public string? Name { get; set; }

        public string? Address { get; set; }

        public uint? Weight { get; set; }
    }

    private sealed class KeysDocument
    {
        public List<string?>? Rules { get; set; }

        public string? NoKey { get; set; }

        public string? FallbackMember { get; set; }

        public int? MaxBodyBytes { get; set; }
    }
}

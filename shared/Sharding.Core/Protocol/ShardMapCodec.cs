using System.Globalization;
using System.Text;
using Sharding.Hashing;
using Sharding.Keys;
using Sharding.Mapping;
using Sharding.Protocol.V1;
using ProtoAlgorithm = Sharding.Protocol.V1.Algorithm;
using ProtoHashKeySource = Sharding.Protocol.V1.HashKeySource;
using ProtoKeyPolicy = Sharding.Protocol.V1.KeyPolicy;
using ProtoNoKeyAction = Sharding.Protocol.V1.NoKeyAction;

namespace Sharding.Protocol;

/// <summary>Why an update could not be applied.</summary>
public enum ShardMapUpdateError
{
    /// <summary>A delta whose base generation is not the receiver's current generation.</summary>
    BaseMismatch = 0,

    /// <summary>The rebuilt table's checksum, or a listed entry, disagrees with the update: corrupted or computed differently.</summary>
    ChecksumMismatch = 1,

    /// <summary>Settings or members that do not make a valid map (bad table size, duplicate names, unknown rule...).</summary>
    Invalid = 2,
}

/// <summary>An update that cannot be applied; the subscriber should re-subscribe for a snapshot.</summary>
public sealed class ShardMapUpdateException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="error">What failed.</param>
    /// <param name="message">Details.</param>
    /// <param name="innerException">The cause.</param>
    public ShardMapUpdateException(ShardMapUpdateError error, string message, Exception? innerException = null)
        : base(message, innerException) => Error = error;

    /// <summary>Creates an <see cref="ShardMapUpdateError.Invalid"/> exception.</summary>
    public ShardMapUpdateException()
        : this(ShardMapUpdateError.Invalid, "invalid shard map update")
    {
    }

    /// <summary>Creates an <see cref="ShardMapUpdateError.Invalid"/> exception.</summary>
    /// <param name="message">Details.</param>
    public ShardMapUpdateException(string message)
        : this(ShardMapUpdateError.Invalid, message)
    {
    }

    /// <summary>Creates an <see cref="ShardMapUpdateError.Invalid"/> exception.</summary>
    /// <param name="message">Details.</param>
    /// <param name="innerException">The cause.</param>
    public ShardMapUpdateException(string message, Exception innerException)
        : this(ShardMapUpdateError.Invalid, message, innerException)
    {
    }

    /// <summary>What failed.</summary>
    public ShardMapUpdateError Error { get; }
}

/// <summary>
/// Converts <see cref="ShardMap"/>s to <c>sharding.v1.ShardMapUpdate</c> messages (snapshots and deltas) and applies received updates.
/// </summary>
/// <remarks>
/// <para>Members travel in table order (ordinal UTF-8 order of their hash keys), so entries are indices into the message's member list.
/// A Maglev snapshot carries all M entries; a Maglev delta carries the full member list and only the (slot, member) pairs whose owner
/// changed by name, which for one member joining 100 is about 1% of the slots.</para>
/// <para>Applying an update rebuilds the table from the members and settings with the same code the leader ran (Envoy-compatible
/// Maglev or ring hash), then proves it equals the leader's: every entry the update carries (all of them in a snapshot, the changed
/// ones in a delta) must match, and the xxHash64 <see cref="ShardMap.Checksum"/> must equal <c>checksum</c>. Any disagreement is a
/// <see cref="ShardMapUpdateError.ChecksumMismatch"/>. Built tables are cached process-wide by content, so many subscribers in one
/// process (tests, benchmarks, a client library with several handlers) build each table once.</para>
/// </remarks>
public static class ShardMapCodec
{
    private const int CacheCapacity = 16;
    private static readonly object CacheGate = new();
    private static readonly LinkedList<BuiltTable> Cache = new();

    /// <summary>A snapshot of <paramref name="map"/>.</summary>
    /// <param name="map">The map.</param>
    /// <param name="leaderEpoch">The publishing leader's epoch.</param>
    /// <param name="leaderId">The publishing leader's identity.</param>
    /// <param name="publishedUnixMs">When the generation was published.</param>
    /// <returns>The update.</returns>
    public static ShardMapUpdate ToSnapshot(ShardMap map, long leaderEpoch, string? leaderId, long publishedUnixMs)
    {
        ArgumentNullException.ThrowIfNull(map);
        var update = Header(map, UpdateKind.Snapshot, leaderEpoch, leaderId, publishedUnixMs);
        if (map.Table is MaglevTable maglev)
        {
            var entries = maglev.Entries;
            var values = new uint[entries.Length];
            for (var i = 0; i < values.Length; i++)
            {
                values[i] = (uint)entries[i];
            }

            update.Entries.Add(values);
        }

        return update;
    }

    /// <summary>A delta from <paramref name="previous"/> to <paramref name="map"/>, or null when only a snapshot can express the change
    /// (algorithm, table sizes or hash-key source changed).</summary>
    /// <param name="previous">The base map (what the subscriber holds).</param>
    /// <param name="map">The new map.</param>
    /// <param name="leaderEpoch">The publishing leader's epoch.</param>
    /// <param name="leaderId">The publishing leader's identity.</param>
    /// <param name="publishedUnixMs">When the generation was published.</param>
    /// <returns>The delta, or null.</returns>
    public static ShardMapUpdate? ToDelta(ShardMap previous, ShardMap map, long leaderEpoch, string? leaderId, long publishedUnixMs)
    {
        ArgumentNullException.ThrowIfNull(previous);
        ArgumentNullException.ThrowIfNull(map);
        if (previous.Algorithm != map.Algorithm || previous.TableOptions != map.TableOptions || previous.HashKeySource != map.HashKeySource
            || !string.Equals(previous.Service, map.Service, StringComparison.Ordinal))
        {
            return null;
        }

        var update = Header(map, UpdateKind.Delta, leaderEpoch, leaderId, publishedUnixMs);
        update.BaseGeneration = (ulong)previous.Generation;
        if (map.Table is MaglevTable next && previous.Table is MaglevTable before)
        {
            if (next.IsEmpty || before.IsEmpty)
            {
                return null;
            }

            // Old member index -> new member index, by hash key (-1 when the member left).
            var newIndex = new Dictionary<string, int>(next.Members.Length, StringComparer.Ordinal);
            for (var i = 0; i < next.Members.Length; i++)
            {
                newIndex[next.Members[i].Name] = i;
            }

            var remap = new int[before.Members.Length];
            for (var i = 0; i < remap.Length; i++)
            {
                remap[i] = newIndex.TryGetValue(before.Members[i].Name, out var j) ? j : -1;
            }

            var oldEntries = before.Entries;
            var newEntries = next.Entries;
            var changed = new List<uint>();
            for (var i = 0; i < newEntries.Length; i++)
            {
                if (remap[oldEntries[i]] != newEntries[i])
                {
                    changed.Add((uint)i);
                    changed.Add((uint)newEntries[i]);
                }
            }

            update.ChangedEntries.Add(changed);
        }

        return update;
    }

    /// <summary>Whether two maps have the same service, settings, members and key policy (generations aside).</summary>
    /// <param name="a">One map.</param>
    /// <param name="b">The other.</param>
    /// <returns>True when a new generation would change nothing.</returns>
    public static bool HasSameContent(ShardMap a, ShardMap b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        return string.Equals(a.Service, b.Service, StringComparison.Ordinal) && a.Algorithm == b.Algorithm && a.TableOptions == b.TableOptions
            && a.HashKeySource == b.HashKeySource && a.KeyPolicy.Equals(b.KeyPolicy) && a.Members.SequenceEqual(b.Members);
    }

    /// <summary>Applies a snapshot or delta to the receiver's current map and verifies the result (see the remarks).</summary>
    /// <param name="update">A SNAPSHOT or DELTA update.</param>
    /// <param name="current">The receiver's current map of that service (needed for a delta).</param>
    /// <returns>The new map, at the update's generation.</returns>
    /// <exception cref="ShardMapUpdateException">Base mismatch, checksum mismatch or invalid content.</exception>
    public static ShardMap Apply(ShardMapUpdate update, ShardMap? current)
    {
        ArgumentNullException.ThrowIfNull(update);
        if (update.Kind == UpdateKind.Delta)
        {
            if (current is null || (ulong)current.Generation != update.BaseGeneration)
            {
                throw new ShardMapUpdateException(
                    ShardMapUpdateError.BaseMismatch,
                    $"delta for '{update.Service}' applies to generation {update.BaseGeneration}, the receiver holds {current?.Generation.ToString(CultureInfo.InvariantCulture) ?? "none"}");
            }
        }
        else if (update.Kind != UpdateKind.Snapshot)
        {
            throw new ShardMapUpdateException(ShardMapUpdateError.Invalid, $"update kind {update.Kind} carries no map");
        }

        var map = Build(update);
        if (map.Table.Members.Length != update.Members.Count)
        {
            throw new ShardMapUpdateException(ShardMapUpdateError.Invalid, "members disagree with the table");
        }

        for (var i = 0; i < update.Members.Count; i++)
        {
            var member = update.Members[i];
            var hashKey = map.HashKeySource == Mapping.HashKeySource.Address ? member.Address : member.Name;
            if (!string.Equals(map.Table.Members[i].Name, hashKey, StringComparison.Ordinal))
            {
                throw new ShardMapUpdateException(ShardMapUpdateError.Invalid, $"member {i} ('{member.Name}') is not in table order");
            }
        }

        if (map.Table is MaglevTable maglev)
        {
            var entries = maglev.Entries;
            if (update.Kind == UpdateKind.Snapshot)
            {
                if (update.Entries.Count != 0 && !SameEntries(entries, update.Entries))
                {
                    throw new ShardMapUpdateException(ShardMapUpdateError.ChecksumMismatch, $"snapshot entries of '{update.Service}' generation {update.Generation} differ from the rebuilt table");
                }
            }
            else
            {
                var changed = update.ChangedEntries;
                if (changed.Count % 2 != 0)
                {
                    throw new ShardMapUpdateException(ShardMapUpdateError.Invalid, "changed_entries must hold (slot, member) pairs");
                }

                for (var i = 0; i < changed.Count; i += 2)
                {
                    if (changed[i] >= (uint)entries.Length || (uint)entries[(int)changed[i]] != changed[i + 1])
                    {
                        throw new ShardMapUpdateException(
                            ShardMapUpdateError.ChecksumMismatch,
                            $"delta entry for slot {changed[i]} of '{update.Service}' generation {update.Generation} disagrees with the rebuilt table");
                    }
                }
            }
        }

        if (map.Checksum != update.Checksum)
        {
            throw new ShardMapUpdateException(
                ShardMapUpdateError.ChecksumMismatch,
                $"checksum mismatch for '{update.Service}' generation {update.Generation}: received {XxHash64.ToHex(update.Checksum)}, rebuilt table has {XxHash64.ToHex(map.Checksum)}");
        }

        return map;
    }

    private static bool SameEntries(ReadOnlySpan<int> entries, Google.Protobuf.Collections.RepeatedField<uint> values)
    {
        if (entries.Length != values.Count)
        {
            return false;
        }

        for (var i = 0; i < entries.Length; i++)
        {
            if ((uint)entries[i] != values[i])
            {
                return false;
            }
        }

        return true;
    }

    private static ShardMapUpdate Header(ShardMap map, UpdateKind kind, long leaderEpoch, string? leaderId, long publishedUnixMs)
    {
        var update = new ShardMapUpdate
        {
            Kind = kind,
            Service = map.Service,
            Generation = (ulong)map.Generation,
            Algorithm = map.Algorithm switch
            {
                ShardAlgorithm.RingHash => ProtoAlgorithm.RingHash,
                ShardAlgorithm.Modulo => ProtoAlgorithm.Modulo,
                _ => ProtoAlgorithm.Maglev,
            },
            MaglevTableSize = (uint)map.TableOptions.MaglevTableSize,
            MinRingSize = (ulong)map.TableOptions.MinimumRingSize,
            MaxRingSize = (ulong)map.TableOptions.MaximumRingSize,
            HashKeySource = map.HashKeySource == Mapping.HashKeySource.Address ? ProtoHashKeySource.Address : ProtoHashKeySource.Name,
            KeyPolicy = new ProtoKeyPolicy
            {
                NoKey = map.KeyPolicy.NoKey switch
                {
                    Keys.NoKeyAction.ServeLocally => ProtoNoKeyAction.ServeLocally,
                    Keys.NoKeyAction.FixedMember => ProtoNoKeyAction.FixedMember,
                    _ => ProtoNoKeyAction.Reject,
                },
                FallbackMember = map.KeyPolicy.FallbackMember ?? string.Empty,
                MaxBodyBytes = (uint)map.KeyPolicy.MaxBodyBytes,
            },
            Checksum = map.Checksum,
            LeaderEpoch = (ulong)leaderEpoch,
            LeaderId = leaderId ?? string.Empty,
            PublishedUnixMs = publishedUnixMs,
        };
        foreach (var rule in map.KeyPolicy.Rules)
        {
            update.KeyPolicy.Rules.Add(rule.ToString());
        }

        // Table order: the member whose hash key is table.Members[i].Name.
        var byHashKey = new Dictionary<string, ShardMember>(map.Members.Length, StringComparer.Ordinal);
        foreach (var member in map.Members)
        {
            byHashKey[map.HashKeySource == Mapping.HashKeySource.Address ? member.Address : member.Name] = member;
        }

        foreach (var hashMember in map.Table.Members)
        {
            var member = byHashKey[hashMember.Name];
            update.Members.Add(new Member { Name = member.Name, Address = member.Address, Weight = member.Weight });
        }

        return update;
    }

    private static ShardMap Build(ShardMapUpdate update)
    {
        if (string.IsNullOrEmpty(update.Service))
        {
            throw new ShardMapUpdateException(ShardMapUpdateError.Invalid, "update without a service name");
        }

        if (update.Generation > long.MaxValue)
        {
            throw new ShardMapUpdateException(ShardMapUpdateError.Invalid, $"generation {update.Generation} out of range");
        }

        var algorithm = update.Algorithm switch
        {
            ProtoAlgorithm.Maglev => ShardAlgorithm.Maglev,
            ProtoAlgorithm.RingHash => ShardAlgorithm.RingHash,
            ProtoAlgorithm.Modulo => ShardAlgorithm.Modulo,
            _ => throw new ShardMapUpdateException(ShardMapUpdateError.Invalid, $"unknown algorithm {update.Algorithm}"),
        };
        var hashKeySource = update.HashKeySource == ProtoHashKeySource.Address ? Mapping.HashKeySource.Address : Mapping.HashKeySource.Name;
        // Every string goes in with its length in front: names, addresses and rules are not validated here, and separators alone
        // would let two different member lists (an address holding a tab and a newline) make the same key and share a map.
        var key = new StringBuilder(64 + (update.Members.Count * 40));
        AppendField(key, update.Service).Append((int)algorithm).Append('\n').Append(update.MaglevTableSize).Append('\n')
            .Append(update.MinRingSize).Append('\n').Append(update.MaxRingSize).Append('\n').Append((int)hashKeySource).Append('\n')
            .Append(update.Members.Count).Append('\n');
        foreach (var member in update.Members)
        {
            AppendField(AppendField(key, member.Name), member.Address).Append(member.Weight).Append('\n');
        }

        var policy = update.KeyPolicy ?? new ProtoKeyPolicy();
        AppendField(key.Append((int)policy.NoKey).Append('\t'), policy.FallbackMember).Append(policy.MaxBodyBytes).Append('\t').Append(policy.Rules.Count);
        foreach (var rule in policy.Rules)
        {
            AppendField(key.Append('\t'), rule);
        }

        var cacheKey = key.ToString();
        var generation = (long)update.Generation;

        // Single flight: subscribers that receive the same update at once wait for one build (and one WithGeneration, whose
        // checksum pass over the table is not free either) instead of each building its own copy.
        BuiltTable entry;
        Lazy<ShardMap> atGeneration;
        lock (CacheGate)
        {
            var node = Cache.First;
            while (node is not null && !string.Equals(node.Value.Key, cacheKey, StringComparison.Ordinal))
            {
                node = node.Next;
            }

            if (node is null)
            {
                entry = new BuiltTable(cacheKey, generation, new Lazy<ShardMap>(() => Create(update, policy, algorithm, hashKeySource, generation)));
                Cache.AddFirst(entry);
                while (Cache.Count > CacheCapacity)
                {
                    Cache.RemoveLast();
                }
            }
            else
            {
                entry = node.Value;
                Cache.Remove(node);
                Cache.AddFirst(node);
                if (entry.Generation != generation)
                {
                    var table = entry.AtGeneration;
                    entry.Generation = generation;
                    entry.AtGeneration = new Lazy<ShardMap>(() => table.Value.Generation == generation ? table.Value : table.Value.WithGeneration(generation));
                }
            }

            atGeneration = entry.AtGeneration;
        }

        try
        {
            return atGeneration.Value;
        }
        catch (ShardMapUpdateException)
        {
            lock (CacheGate)
            {
                Cache.Remove(entry);
            }

            throw;
        }
    }

    private static StringBuilder AppendField(StringBuilder key, string value) =>
        key.Append(value.Length).Append(':').Append(value).Append('\t');

    private static ShardMap Create(ShardMapUpdate update, ProtoKeyPolicy policy, ShardAlgorithm algorithm, Mapping.HashKeySource hashKeySource, long generation)
    {
        ShardMap map;
        try
        {
            var rules = new List<ShardKeyRule>(policy.Rules.Count);
            foreach (var text in policy.Rules)
            {
                rules.Add(ShardKeyRule.Parse(text));
            }

            var keyPolicy = new ShardKeyPolicy
            {
                Rules = rules.Count == 0 ? ShardKeyPolicy.Default.Rules : [.. rules],
                NoKey = policy.NoKey switch
                {
                    ProtoNoKeyAction.ServeLocally => Keys.NoKeyAction.ServeLocally,
                    ProtoNoKeyAction.FixedMember => Keys.NoKeyAction.FixedMember,
                    _ => Keys.NoKeyAction.Reject,
                },
                FallbackMember = string.IsNullOrEmpty(policy.FallbackMember) ? null : policy.FallbackMember,
                MaxBodyBytes = policy.MaxBodyBytes == 0 ? ShardKeyPolicy.DefaultMaxBodyBytes : (int)Math.Min(policy.MaxBodyBytes, int.MaxValue),
            };
            var options = new ShardTableOptions
            {
                MaglevTableSize = update.MaglevTableSize == 0 ? ShardTableOptions.DefaultMaglevTableSize : (int)Math.Min(update.MaglevTableSize, int.MaxValue),
                MinimumRingSize = update.MinRingSize == 0 ? ShardTableOptions.DefaultMinimumRingSize : (long)Math.Min(update.MinRingSize, long.MaxValue),
                MaximumRingSize = update.MaxRingSize == 0 ? ShardTableOptions.DefaultMaximumRingSize : (long)Math.Min(update.MaxRingSize, long.MaxValue),
            };
            map = ShardMap.Create(
                update.Service, generation, update.Members.Select(static m => new ShardMember(m.Name, m.Address, m.Weight)), algorithm, options, keyPolicy, hashKeySource);
        }
        catch (Exception ex) when (ex is ArgumentException or FormatException or OverflowException)
        {
            throw new ShardMapUpdateException(ShardMapUpdateError.Invalid, $"update for '{update.Service}' generation {update.Generation} is invalid: {ex.Message}", ex);
        }

        return map;
    }

    /// <summary>A cached table: its content key and the map at the generation last asked for (built once, shared by every caller).</summary>
    private sealed class BuiltTable(string key, long generation, Lazy<ShardMap> atGeneration)
    {
        public string Key { get; } = key;

        public long Generation { get; set; } = generation;

        public Lazy<ShardMap> AtGeneration { get; set; } = atGeneration;
    }
}

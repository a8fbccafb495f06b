using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Immutable;
using System.Text;
using Sharding.Hashing;
using Sharding.Keys;

namespace Sharding.Mapping;

/// <summary>
/// The immutable shard map of one sharded service at one generation: members, key policy and the hashing table built from them.
/// </summary>
/// <remarks>
/// Readers take the reference once per request and never see it change; a newer generation is a new object swapped in whole
/// (see <see cref="ShardMapStore"/>). <see cref="Checksum"/> is what the assignment protocol sends so a receiver can prove that the
/// table it rebuilt from a snapshot or a delta is the one the control plane computed.
/// </remarks>
public sealed class ShardMap
{
    private readonly ShardMember[] _byTableIndex;

    private ShardMap(
        string service, long generation, ShardAlgorithm algorithm, ShardTableOptions tableOptions, HashKeySource hashKeySource,
        ImmutableArray<ShardMember> members, ShardKeyPolicy keyPolicy, ShardTable table, ShardMember[] byTableIndex, ulong? checksum = null)
    {
        Service = service;
        Generation = generation;
        Algorithm = algorithm;
        TableOptions = tableOptions;
        HashKeySource = hashKeySource;
        Members = members;
        KeyPolicy = keyPolicy;
        Table = table;
        _byTableIndex = byTableIndex;
        Checksum = checksum ?? ComputeChecksum(table);
    }

    /// <summary>The sharded service's name.</summary>
    public string Service { get; }

    /// <summary>The generation: only grows, also across control-plane leader changes.</summary>
    public long Generation { get; }

    /// <summary>The hashing algorithm.</summary>
    public ShardAlgorithm Algorithm { get; }

    /// <summary>Table sizes.</summary>
    public ShardTableOptions TableOptions { get; }

    /// <summary>Whether members are placed by name (default) or by address.</summary>
    public HashKeySource HashKeySource { get; }

    /// <summary>The members, sorted by name (ordinal).</summary>
    public ImmutableArray<ShardMember> Members { get; }

    /// <summary>How requests' shard keys are found.</summary>
    public ShardKeyPolicy KeyPolicy { get; }

    /// <summary>The hashing table.</summary>
    public ShardTable Table { get; }

    /// <summary>xxHash64 of the table's canonical bytes (see <see cref="ComputeChecksum"/>).</summary>
    public ulong Checksum { get; }

    /// <summary>Whether no member can own keys.</summary>
    public bool IsEmpty => Table.IsEmpty;

    /// <summary>Builds a shard map.</summary>
    /// <param name="service">The service name.</param>
    /// <param name="generation">The generation (≥ 0).</param>
    /// <param name="members">The members, any order; names and hash keys unique.</param>
    /// <param name="algorithm">The hashing algorithm.</param>
    /// <param name="tableOptions">Table sizes (defaults when null).</param>
    /// <param name="keyPolicy">The key policy (default when null).</param>
    /// <param name="hashKeySource">Name (default) or address.</param>
    /// <returns>The map.</returns>
    /// <exception cref="ArgumentException">Invalid members or sizes.</exception>
    public static ShardMap Create(
        string service, long generation, IEnumerable<ShardMember> members, ShardAlgorithm algorithm = ShardAlgorithm.Maglev,
        ShardTableOptions? tableOptions = null, ShardKeyPolicy? keyPolicy = null, HashKeySource hashKeySource = HashKeySource.Name)
    {
        ArgumentException.ThrowIfNullOrEmpty(service);
        ArgumentOutOfRangeException.ThrowIfNegative(generation);
        ArgumentNullException.ThrowIfNull(members);
        tableOptions ??= ShardTableOptions.Default;
        keyPolicy ??= ShardKeyPolicy.Default;

        var sorted = members.OrderBy(static m => m.Name, StringComparer.Ordinal).ToImmutableArray();
        var byHashKey = new Dictionary<string, ShardMember>(sorted.Length, StringComparer.Ordinal);
        for (var i = 0; i < sorted.Length; i++)
        {
            var member = sorted[i];
            ArgumentException.ThrowIfNullOrEmpty(member.Name, nameof(members));

            // Names identify members (a sidecar finds itself by its pod name) whatever the hash key is; sorted, so equal ones are adjacent.
            if (i > 0 && string.Equals(sorted[i - 1].Name, member.Name, StringComparison.Ordinal))
            {
                throw new ArgumentException($"Member '{member.Name}' of service '{service}' is listed twice; member names must be unique.", nameof(members));
            }

            var hashKey = hashKeySource == HashKeySource.Address ? member.Address : member.Name;
            if (!byHashKey.TryAdd(hashKey, member))
            {
                throw new ArgumentException($"Two members of service '{service}' share the hash key '{hashKey}'.", nameof(members));
            }
        }

        var table = ShardTable.Create(algorithm, sorted.Select(m => new HashMember(hashKeySource == HashKeySource.Address ? m.Address : m.Name, m.Weight)), tableOptions);
        var byTableIndex = new ShardMember[table.Members.Length];
        for (var i = 0; i < byTableIndex.Length; i++)
        {
            byTableIndex[i] = byHashKey[table.Members[i].Name];
        }

        return new ShardMap(service, generation, algorithm, tableOptions, hashKeySource, sorted, keyPolicy, table, byTableIndex);
    }

    /// <summary>The same members, settings and table under another generation (nothing is rebuilt or rehashed).</summary>
    /// <param name="generation">The new generation.</param>
    /// <returns>The new map.</returns>
    public ShardMap WithGeneration(long generation) =>
        new(Service, generation, Algorithm, TableOptions, HashKeySource, Members, KeyPolicy, Table, _byTableIndex, Checksum);

    /// <summary>The owner of a request hash, or null when the map is empty.</summary>
    /// <param name="hash">xxHash64 of the key's UTF-8 bytes, seed 0.</param>
    /// <returns>The owner.</returns>
    public ShardMember? OwnerOf(ulong hash)
    {
        var index = Table.OwnerIndexOf(hash);
        return index < 0 ? null : _byTableIndex[index];
    }

    /// <summary>The owner of a key given as UTF-8 bytes, or null when the map is empty.</summary>
    /// <param name="key">The key bytes.</param>
    /// <returns>The owner.</returns>
    public ShardMember? OwnerOf(ReadOnlySpan<byte> key) => OwnerOf(XxHash64.Hash(key));

    /// <summary>The owner of a key, or null when the map is empty.</summary>
    /// <param name="key">The key.</param>
    /// <returns>The owner.</returns>
    public ShardMember? OwnerOf(ReadOnlySpan<char> key) => OwnerOf(XxHash64.HashUtf8(key));

    /// <summary>The member with this name, or null.</summary>
    /// <param name="name">The member name.</param>
    /// <returns>The member.</returns>
    public ShardMember? FindMember(string name)
    {
        foreach (var member in Members)
        {
            if (string.Equals(member.Name, name, StringComparison.Ordinal))
            {
                return member;
            }
        }

        return null;
    }

    /// <summary>
    /// xxHash64 (seed 0) over the table's canonical bytes: the table's member hash keys as UTF-8, each followed by a 0 byte,
    /// then one 0xFF byte, then for Maglev every entry's member index as a little-endian int32, for ring hash every point as
    /// its little-endian uint64 hash followed by its member index as a little-endian int32, for modulo nothing more.
    /// </summary>
    /// <param name="table">The table.</param>
    /// <returns>The checksum.</returns>
    public static ulong ComputeChecksum(ShardTable table)
    {
        ArgumentNullException.ThrowIfNull(table);
        var writer = new ArrayBufferWriter<byte>(4096);
        foreach (var member in table.Members)
        {
            var span = writer.GetSpan(Encoding.UTF8.GetMaxByteCount(member.Name.Length) + 1);
            var written = Encoding.UTF8.GetBytes(member.Name, span);
            span[written] = 0;
            writer.Advance(written + 1);
        }

        writer.GetSpan(1)[0] = 0xFF;
        writer.Advance(1);
        switch (table)
        {
            case MaglevTable maglev:
            {
                // An empty table (no member with weight) has no entries at all.
                var entries = maglev.Entries;
                var span = writer.GetSpan(Math.Max(1, entries.Length * 4));
                for (var i = 0; i < entries.Length; i++)
                {
                    BinaryPrimitives.WriteInt32LittleEndian(span.Slice(i * 4), entries[i]);
                }

                writer.Advance(entries.Length * 4);
                break;
            }

            case RingHashTable ring:
            {
                var span = writer.GetSpan(ring.Count * 12);
                for (var i = 0; i < ring.Count; i++)
                {
                    BinaryPrimitives.WriteUInt64LittleEndian(span.Slice(i * 12), ring.PointHashes[i]);
                    BinaryPrimitives.WriteInt32LittleEndian(span.Slice((i * 12) + 8), ring.PointOwners[i]);
                }

                writer.Advance(ring.Count * 12);
                break;
            }
        }

        return XxHash64.Hash(writer.WrittenSpan);
    }
}

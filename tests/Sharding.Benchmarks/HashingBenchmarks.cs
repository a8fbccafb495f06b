using System.Text;
using BenchmarkDotNet.Attributes;
using Sharding.Hashing;

namespace Sharding.Benchmarks;

/// <summary>XXH64 over keys of typical shard-key sizes.</summary>
[MemoryDiagnoser]
public class XxHash64Benchmarks
{
    private byte[] _data = [];

    [Params(16, 64, 256)]
    public int Length { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _data = new byte[Length];
        new Random(1).NextBytes(_data);
    }

    [Benchmark]
    public ulong Hash() => XxHash64.Hash(_data);
}

/// <summary>Maglev table build at the default M = 65537, and key lookup including hashing the key.</summary>
[MemoryDiagnoser]
public class MaglevBenchmarks
{
    private HashMember[] _members = [];
    private MaglevTable _table = null!;
    private byte[] _key = [];
    private string _keyText = string.Empty;

    [Params(10, 100, 1000)]
    public int Members { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _members = Enumerable.Range(0, Members).Select(i => new HashMember($"sharded-svc-{i}")).ToArray();
        _table = new MaglevTable(_members);
        _keyText = "account-0000000000000000000042:x"; // 32 ASCII characters = 32 UTF-8 bytes
        _key = Encoding.UTF8.GetBytes(_keyText);
    }

    [Benchmark]
    public MaglevTable Build() => new(_members);

    /// <summary>xxHash64 of a 32-byte key, then table[hash mod M].</summary>
    [Benchmark]
    public string? LookupBytes32() => _table.OwnerOf(_key);

    /// <summary>The same key as a string: UTF-8 encoded on the stack, hashed, looked up.</summary>
    [Benchmark]
    public string? LookupString32() => _table.OwnerOf(_keyText);
}

/// <summary>Ring hash (Envoy defaults: minimum ring 1024) for comparison with Maglev.</summary>
[MemoryDiagnoser]
public class RingHashBenchmarks
{
    private HashMember[] _members = [];
    private RingHashTable _ring = null!;
    private byte[] _key = [];

    [Params(10, 100, 1000)]
    public int Members { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _members = Enumerable.Range(0, Members).Select(i => new HashMember($"sharded-svc-{i}")).ToArray();
        _ring = new RingHashTable(_members);
        _key = Encoding.UTF8.GetBytes("account-0000000000000000000042:x");
    }

    [Benchmark]
    public RingHashTable Build() => new(_members);

    [Benchmark]
    public string? LookupBytes32() => _ring.OwnerOf(_key);
}

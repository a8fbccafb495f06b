using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Sharding.Hashing;
using Sharding.Keys;
using Sharding.Mapping;
using Sharding.Sidecar.Forwarding;
using Sharding.Sidecar.Hosting;
using Sharding.Sidecar.MapSync;

namespace Sharding.Sidecar.Tests.MapSync;

public sealed class FileShardMapSourceTests
{
    private const string Good = """
        service: docs
        algorithm: ring
        members:
          - { name: docs-1, address: "10.0.0.2:15100", weight: 2 }
          - { name: docs-0, address: "10.0.0.1:15100" }
        keys:
          rules: [ "path:/docs/{key}", "header:x-doc" ]
          noKey: fixedMember
          fallbackMember: docs-0
          maxBodyBytes: 1024
        """;

    [Fact]
    public void Parse_Yaml_BuildsTheMap()
    {
        Assert.True(StaticMapFile.TryParse(Good, 3, out var map, out var error), error);
        Assert.Equal("docs", map!.Service);
        Assert.Equal(3, map.Generation);
        Assert.Equal(ShardAlgorithm.RingHash, map.Algorithm);
        Assert.Equal(["docs-0", "docs-1"], map.Members.Select(m => m.Name));
        Assert.Equal(2u, map.FindMember("docs-1")!.Weight);
        Assert.Equal("path:/docs/{key}, header:x-doc", map.KeyPolicy.DescribeRules());
        Assert.Equal(NoKeyAction.FixedMember, map.KeyPolicy.NoKey);
        Assert.Equal(1024, map.KeyPolicy.MaxBodyBytes);
    }

    [Fact]
    public void Parse_Json_BuildsTheMap()
    {
        const string json = """{"service":"s","members":[{"name":"a","address":"127.0.0.1:1"}],"keys":{"rules":["query:t"]}}""";
        Assert.True(StaticMapFile.TryParse(json, 1, out var map, out var error), error);
        Assert.Equal(ShardAlgorithm.Maglev, map!.Algorithm);
        Assert.Equal("query:t", map.KeyPolicy.DescribeRules());
    }

    [Theory]
    [InlineData("members: []", "'service' is missing; 'members' is empty")]
    [InlineData("service: s\nalgorithm: fancy\nmembers: [{name: a, address: 'h:1'}]", "'algorithm: fancy' is unknown")]
    [InlineData("service: s\nmembers: [{name: a}]", "members[0] needs a name and an address")]
    [InlineData("service: s\nmembers: [{name: a, address: 'h:1'}]\nkeys: {rules: [\"body:$.a\"]}", "keys.rules: key rule 'body:$.a' has unknown kind 'body'")]
    [InlineData("service: s\nmembers: [{name: a, address: 'h:1'}]\nkeys: {noKey: fixedMember}", "needs 'keys.fallbackMember'")]
    [InlineData("service: [unclosed", "not valid YAML/JSON at line 1")]
    [InlineData("service: s\nmembers:\n  - { name: a, address: 'h:1' }\n  -\n", "members[1] needs a name and an address")]
    [InlineData("service: s\nmembers: [{name: a, address: 'h:1'}]\nkeys:\n  rules:\n    - header:x-a\n    -\n", "keys.rules[1] is empty")]
    [InlineData("service: s\nmembers: [{name: a, address: 'h:1'}, {name: b, address: 'h:2'}]\nkeys: {noKey: reject}\nmembers: [{name: a, address: 'h:1'}]", "line 4, column 1: Encountered duplicate key members")]
    [InlineData("{\"service\":\"s\",\"members\":[{\"name\":\"a\",\"address\":\"x\",\"name\":\"b\"}]}", "Encountered duplicate key name")]
    [InlineData("service: s\nmembers: [{name: a, address: 'h:1'}]\nkeys: {maxBodyBytes: 16777217}", "'keys.maxBodyBytes: 16777217' must be 1..16777216")]
    [InlineData("service: s\nmembers: [{name: a, address: '10.0.0.7:15100/admin'}]", "members[0].address '10.0.0.7:15100/admin' is not host:port of its sidecar")]
    [InlineData("service: s\nmembers: [{name: a, address: 'fd00::1:15100'}]", "members[0].address 'fd00::1:15100' is not host:port")]
    [InlineData("service: s\nmembers: [{name: a, address: '10.0.0.7'}]", "members[0].address '10.0.0.7' is not host:port")]
    [InlineData("service: s\nmembers: [{name: a, address: 'ops@10.0.0.7:15100'}]", "members[0].address 'ops@10.0.0.7:15100' is not host:port")]
    public void Parse_Bad_SaysWhat(string text, string expected)
    {
        Assert.False(StaticMapFile.TryParse(text, 1, out _, out var error));
        Assert.Contains(expected, error, StringComparison.Ordinal);
    }

    // Enum.TryParse took numbers (undefined values, or a defined one by its number) and comma lists: only names count.
    [Theory]
    [InlineData("hashKey: 7", "'hashKey: 7' is unknown: use name or address")]
    [InlineData("hashKey: 1", "'hashKey: 1' is unknown: use name or address")]
    [InlineData("hashKey: \"name, address\"", "'hashKey: name, address' is unknown: use name or address")]
    [InlineData("algorithm: 9", "'algorithm: 9' is unknown: use maglev, ring or modulo")]
    [InlineData("algorithm: 1", "'algorithm: 1' is unknown: use maglev, ring or modulo")]
    [InlineData("keys: {noKey: 9}", "'keys.noKey: 9' is unknown: use reject, serveLocally or fixedMember")]
    [InlineData("keys: {noKey: 1}", "'keys.noKey: 1' is unknown: use reject, serveLocally or fixedMember")]
    [InlineData("keys: {noKey: -1}", "'keys.noKey: -1' is unknown: use reject, serveLocally or fixedMember")]
    public void Parse_EnumSettingGivenANumber_IsRejected(string line, string expected)
    {
        var text = $"service: s\n{line}\nmembers: [{{name: a, address: 'h:1'}}]";
        Assert.False(StaticMapFile.TryParse(text, 1, out _, out var error));
        Assert.Equal(expected, error);
    }

    [Theory]
    [InlineData("hashKey: Address\nkeys: {noKey: ServeLocally}", HashKeySource.Address, NoKeyAction.ServeLocally)]
    [InlineData("hashKey: name\nkeys: {noKey: reject}", HashKeySource.Name, NoKeyAction.Reject)]
    [InlineData("keys: {noKey: FIXEDMEMBER, fallbackMember: a}", HashKeySource.Name, NoKeyAction.FixedMember)]
    [InlineData("keys: {noKey: serve-locally}", HashKeySource.Name, NoKeyAction.ServeLocally)] // the membership file's spelling
    [InlineData("keys: {noKey: fixed-member, fallbackMember: a}", HashKeySource.Name, NoKeyAction.FixedMember)]
    public void Parse_EnumSettingNames_AnyCase(string lines, HashKeySource hashKey, NoKeyAction noKey)
    {
        Assert.True(StaticMapFile.TryParse($"service: s\n{lines}\nmembers: [{{name: a, address: 'h:1'}}]", 1, out var map, out var error), error);
        Assert.Equal(hashKey, map!.HashKeySource);
        Assert.Equal(noKey, map.KeyPolicy.NoKey);
    }

    [Theory]
    [InlineData("9223372036854775807")]
    [InlineData("9007199254740992")]
    [InlineData("-1")]
    public void Parse_GenerationOutOfRange_IsRejected(string generation)
    {
        Assert.False(StaticMapFile.TryParse($"service: s\ngeneration: {generation}\nmembers: [{{name: a, address: 'h:1'}}]", 1, out _, out var error));
        Assert.Equal($"'generation: {generation}' is out of range: use 0..9007199254740991 (2^53 - 1), or leave it out", error);
    }

    [Fact]
    public void Parse_GenerationAtTheBound_IsTaken()
    {
        Assert.True(StaticMapFile.TryParse("service: s\ngeneration: 9007199254740991\nmembers: [{name: a, address: 'h:1'}]", 1, out var map, out var error), error);
        Assert.Equal(9_007_199_254_740_991L, map!.Generation);
    }

    [Fact]
    public void Load_GenerationNearLongMax_KeepsTheLastGoodMap_AndLaterEditsStillGetIn()
    {
        // A file at long.MaxValue used to be taken, and then no edit could ever be newer: every later one was ignored.
        var path = Path.Combine(Directory.CreateTempSubdirectory("sharding-map-").FullName, "map.yaml");
        File.WriteAllText(path, Good);
        var (source, store, services) = Create(path);
        using var disposeServices = services;
        Assert.True(source.Load(path, store));
        Assert.Equal(1, store.Generation);

        File.WriteAllText(path, "generation: 9223372036854775807\n" + Good.Replace("weight: 2", "weight: 3", StringComparison.Ordinal));
        Assert.False(source.Load(path, store));
        Assert.Equal(1, store.Generation);
        Assert.Equal(2u, store.Current!.FindMember("docs-1")!.Weight);

        File.WriteAllText(path, Good.Replace("weight: 2", "weight: 4", StringComparison.Ordinal));
        Assert.True(source.Load(path, store));
        Assert.Equal(2, store.Generation);
        Assert.Equal(4u, store.Current!.FindMember("docs-1")!.Weight);
    }

    [Fact]
    public void Load_BadEditKeepsTheLastGoodMap_GoodEditGetsAHigherGeneration()
    {
        var path = Path.Combine(Directory.CreateTempSubdirectory("sharding-map-").FullName, "map.yaml");
        File.WriteAllText(path, Good);
        var (source, store, services) = Create(path);
        using var disposeServices = services;

        Assert.True(source.Load(path, store));
        Assert.Equal(1, store.Generation);

        File.WriteAllText(path, "service: docs\nmembers: [");
        Assert.False(source.Load(path, store));
        Assert.Equal(1, store.Generation);
        Assert.Equal(2, store.Current!.Members.Length);

        File.WriteAllText(path, Good.Replace("weight: 2", "weight: 3", StringComparison.Ordinal));
        Assert.True(source.Load(path, store));
        Assert.Equal(2, store.Generation);
        Assert.Equal(3u, store.Current!.FindMember("docs-1")!.Weight);

        Assert.False(source.Load(path, store)); // unchanged text: no new generation
    }

    [Fact]
    public async Task Run_BadEditWithAnEmptyListItem_KeepsTheLastGoodMapAndTheLoop()
    {
        // A '-' left behind while deleting a member parses as a null list item: it must be a named error, not an exception
        // that ends the reload loop (and with it the sidecar: a faulted BackgroundService stops the host).
        var path = Path.Combine(Directory.CreateTempSubdirectory("sharding-map-").FullName, "map.yaml");
        File.WriteAllText(path, Good);
        await using var run = Start(path);
        await run.WaitForGeneration(1);

        var bad = Good.Replace("  - { name: docs-0, address: \"10.0.0.1:15100\" }", "  -", StringComparison.Ordinal);
        Assert.NotEqual(Good, bad);
        File.WriteAllText(path, bad);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (run.Source.Reads < 2 && clock.Elapsed < TimeSpan.FromSeconds(10))
        {
            await Task.Delay(20);
        }

        Assert.True(run.Source.Reads >= 2, "the bad edit was never read");
        await Task.Delay(100);
        Assert.False(run.Loop.IsCompleted, $"the reload loop ended: {run.Loop.Exception?.GetBaseException().Message}");
        Assert.Equal(1, run.Store.Generation);

        File.WriteAllText(path, Good.Replace("weight: 2", "weight: 4", StringComparison.Ordinal));
        await run.WaitForGeneration(2);
        Assert.Equal(4u, run.Store.Current!.FindMember("docs-1")!.Weight);
    }

    [Fact]
    public async Task Run_ReloadsAnEditInPlace()
    {
        var path = Path.Combine(Directory.CreateTempSubdirectory("sharding-map-").FullName, "map.yaml");
        File.WriteAllText(path, Good);
        await using var run = Start(path);
        await run.WaitForGeneration(1);

        File.WriteAllText(path, Good.Replace("weight: 2", "weight: 5", StringComparison.Ordinal));
        await run.WaitForGeneration(2);
        Assert.Equal(5u, run.Store.Current!.FindMember("docs-1")!.Weight);
    }

    [Fact]
    public async Task Run_ReloadsAConfigMapSymlinkSwap()
    {
        // The kubelet's atomic writer: map.yaml -> ..data/map.yaml, ..data -> ..<timestamp>; an update writes a new
        // timestamped directory and renames a fresh ..data_tmp symlink over ..data.
        var dir = Directory.CreateTempSubdirectory("sharding-cm-").FullName;
        Directory.CreateDirectory(Path.Combine(dir, "..2026_01"));
        File.WriteAllText(Path.Combine(dir, "..2026_01", "map.yaml"), Good);
        File.CreateSymbolicLink(Path.Combine(dir, "..data"), "..2026_01");
        File.CreateSymbolicLink(Path.Combine(dir, "map.yaml"), Path.Combine("..data", "map.yaml"));
        await using var run = Start(Path.Combine(dir, "map.yaml"));
        await run.WaitForGeneration(1);

        Directory.CreateDirectory(Path.Combine(dir, "..2026_02"));
        File.WriteAllText(Path.Combine(dir, "..2026_02", "map.yaml"), Good.Replace("weight: 2", "weight: 7", StringComparison.Ordinal));
        File.CreateSymbolicLink(Path.Combine(dir, "..data_tmp"), "..2026_02");
        Assert.Equal(0, Rename(Path.Combine(dir, "..data_tmp"), Path.Combine(dir, "..data"))); // rename(2), as the kubelet does

        await run.WaitForGeneration(2);
        Assert.Equal(7u, run.Store.Current!.FindMember("docs-1")!.Weight);
    }

    [Fact]
    public async Task Run_SymlinkedMapFile_ThePollSeesTheTargetChange()
    {
        // The write-time poll is the backstop for changes the directory watcher does not report (inotify out of instances,
        // volumes that raise no events, a target outside the watched directory). Here the map path is a symlink to a file in
        // another directory, edited in place: only the poll can notice, and it must look at the target, not the link.
        var targetDir = Directory.CreateTempSubdirectory("sharding-map-target-").FullName;
        var target = Path.Combine(targetDir, "map.yaml");
        File.WriteAllText(target, Good);
        var path = Path.Combine(Directory.CreateTempSubdirectory("sharding-map-link-").FullName, "map.yaml");
        File.CreateSymbolicLink(path, target);
        await using var run = Start(path);
        await run.WaitForGeneration(1);

        await Task.Delay(50); // a later write time than the first one, even on coarse clocks
        File.WriteAllText(target, Good.Replace("weight: 2", "weight: 6", StringComparison.Ordinal));
        await run.WaitForGeneration(2);
        Assert.Equal(6u, run.Store.Current!.FindMember("docs-1")!.Weight);
    }

    [Fact]
    public async Task Run_OtherFilesInTheDirectory_DoNotMakeItReadTheMapAgain()
    {
        var dir = Directory.CreateTempSubdirectory("sharding-map-").FullName;
        var path = Path.Combine(dir, "map.yaml");
        File.WriteAllText(path, Good);
        await using var run = Start(path);
        await run.WaitForGeneration(1);
        Assert.Equal(1, run.Source.Reads);

        // A busy neighbour (a log, say): many writes over more than one poll interval.
        var log = Path.Combine(dir, "requests.log");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var writes = 0;
        while (clock.Elapsed < FileShardMapSource.PollInterval * 1.5)
        {
            File.AppendAllText(log, "a line\n");
            writes++;
            await Task.Delay(2);
        }

        Assert.True(writes > 50, $"only {writes} writes");
        Assert.Equal(1, run.Source.Reads);
        Assert.Equal(1, run.Store.Generation);
    }

    [Theory]
    [InlineData("map.yaml", true)]
    [InlineData("..data", true)]
    [InlineData("..data_tmp", true)]
    [InlineData("..2026_11_22_05_00_00.123", true)]
    [InlineData("map.yaml.swp", false)]
    [InlineData("requests.log", false)]
    [InlineData(null, false)]
    public void IsAbout_TheFileOrTheAtomicWritersEntries(string? name, bool expected) =>
        Assert.Equal(expected, FileShardMapSource.IsAbout(name, "map.yaml"));

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "rename", SetLastError = true, CharSet = System.Runtime.InteropServices.CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    private static extern int Rename(string from, string to);

    private static Running Start(string path)
    {
        var (source, store, services) = Create(path);
        var stop = new CancellationTokenSource();
        return new Running(source, store, services, stop, source.RunAsync(store, stop.Token));
    }

    // A source for docs-0's map file and its store; the caller disposes the services (the metrics' meter factory).
    private static (FileShardMapSource Source, ShardMapStore Store, ServiceProvider Services) Create(string path)
    {
        var options = Options.Create(new SidecarOptions { PodName = "docs-0", MapFile = path });
        var store = new ShardMapStore();
        var services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        var metrics = new SidecarMetrics(services.GetRequiredService<IMeterFactory>(), store, new OwnerCircuitStates());
        return (new FileShardMapSource(options, metrics, TimeProvider.System, NullLogger<FileShardMapSource>.Instance), store, services);
    }

    private sealed record Running(FileShardMapSource Source, ShardMapStore Store, ServiceProvider Services, CancellationTokenSource Stop, Task Loop)
        : IAsyncDisposable
    {
        public async Task WaitForGeneration(long generation)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (Store.Generation < generation)
            {
                Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"generation {Store.Generation}, waiting for {generation}");
                await Task.Delay(20);
            }
        }

        public async ValueTask DisposeAsync()
        {
            await Stop.CancelAsync();
            await Loop;
            Stop.Dispose();
            await Services.DisposeAsync();
        }
    }
}

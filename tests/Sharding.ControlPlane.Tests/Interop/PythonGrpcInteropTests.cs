using System.Diagnostics;
using Sharding.ControlPlane.Tests.Hosting;
using Sharding.Protocol;
using Sharding.Protocol.V1;
using Sharding.Testing;

namespace Sharding.ControlPlane.Tests.Interop;

/// <summary>Debian's python3-grpcio talks to our framing both ways (message classes built from our descriptor at test time).</summary>
public sealed class PythonGrpcInteropTests
{
    private const string Prelude = """
        import sys, grpc
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
        fdp = descriptor_pb2.FileDescriptorProto.FromString(open(sys.argv[1], 'rb').read())
        messages = message_factory.GetMessages([fdp])
        WatchRequest = messages['sharding.v1.WatchRequest']
        ShardMapUpdate = messages['sharding.v1.ShardMapUpdate']
        kinds = {1: 'SNAPSHOT', 2: 'DELTA', 3: 'PING'}

        """;

    private const string Client = Prelude + """
        channel = grpc.insecure_channel(sys.argv[2])
        watch = channel.unary_stream('/sharding.v1.Assignments/Watch', request_serializer=WatchRequest.SerializeToString, response_deserializer=ShardMapUpdate.FromString)
        seen = 0
        for update in watch(WatchRequest(pod='python', service='sharded-svc', ping_interval_ms=200), timeout=30):
            if update.kind == 3:
                continue
            print(kinds[update.kind], update.generation, len(update.members), len(update.entries), len(update.changed_entries) // 2, flush=True)
            seen += 1
            if seen == 2:
                break
        channel.close()
        """;

    private const string Server = Prelude + """
        from concurrent import futures
        import threading
        canned = [ShardMapUpdate.FromString(open(p, 'rb').read()) for p in sys.argv[3:]]
        def watch(request, context):
            for update in canned:
                yield update
            threading.Event().wait(30)
        handler = grpc.method_handlers_generic_handler('sharding.v1.Assignments', {
            'Watch': grpc.unary_stream_rpc_method_handler(watch, request_deserializer=WatchRequest.FromString, response_serializer=ShardMapUpdate.SerializeToString)})
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port(sys.argv[2])
        server.start()
        print('PORT', port, flush=True)
        server.wait_for_termination(30)
        """;

    [RequiresPythonFact("python3-grpcio python3-protobuf", "grpc", "google.protobuf")]
    public async Task PythonClient_Watch_ReceivesSnapshotThenDelta()
    {
        using var cluster = new TempCluster();
        cluster.Write(TempCluster.Yaml(3, tableSize: 251));
        await using var replica = await ControlPlaneReplica.StartAsync(cluster.Directory, "a");
        Assert.True(await replica.WaitAsync(r => r.Registry.IsSynced, TimeSpan.FromSeconds(10)));
        var (descriptor, script) = WriteScript(cluster.Directory, "client.py", Client);
        using var python = Start(script, descriptor, $"127.0.0.1:{replica.GrpcUrl.Port}");

        var first = await ReadLineAsync(python);
        Assert.StartsWith("SNAPSHOT", first, StringComparison.Ordinal);
        Assert.EndsWith(" 3 251 0", first, StringComparison.Ordinal);
        cluster.Write(TempCluster.Yaml(4, tableSize: 251));
        var second = await ReadLineAsync(python);
        Assert.StartsWith("DELTA", second, StringComparison.Ordinal);
        Assert.Contains(" 4 0 ", second, StringComparison.Ordinal);
        Assert.Equal(replica.Registry.All.Single().Map.Generation.ToString(System.Globalization.CultureInfo.InvariantCulture), second.Split(' ')[1]);
        Assert.True(python.WaitForExit(10_000));
        Assert.Equal(0, python.ExitCode);
    }

    [RequiresPythonFact("python3-grpcio python3-protobuf", "grpc", "google.protobuf")]
    public async Task AssignmentsWatcher_PythonServerCannedStream_AppliesSnapshotAndDelta()
    {
        using var cluster = new TempCluster();
        var before = Sharding.Mapping.ShardMap.Create("sharded-svc", 10, Enumerable.Range(0, 3).Select(i => new Sharding.Mapping.ShardMember($"m-{i}", $"127.0.0.1:{15100 + i}")), tableOptions: new() { MaglevTableSize = 251 });
        var after = Sharding.Mapping.ShardMap.Create("sharded-svc", 11, Enumerable.Range(0, 4).Select(i => new Sharding.Mapping.ShardMember($"m-{i}", $"127.0.0.1:{15100 + i}")), tableOptions: new() { MaglevTableSize = 251 });
        var snapshotPath = Path.Combine(cluster.Directory, "snapshot.bin");
        var deltaPath = Path.Combine(cluster.Directory, "delta.bin");
        await File.WriteAllBytesAsync(snapshotPath, Google.Protobuf.MessageExtensions.ToByteArray(ShardMapCodec.ToSnapshot(before, 1, "py", 0)));
        await File.WriteAllBytesAsync(deltaPath, Google.Protobuf.MessageExtensions.ToByteArray(ShardMapCodec.ToDelta(before, after, 1, "py", 0)!));
        var (descriptor, script) = WriteScript(cluster.Directory, "server.py", Server);
        using var python = Start(script, descriptor, "127.0.0.1:0", snapshotPath, deltaPath);
        try
        {
            var port = (await ReadLineAsync(python)).Split(' ')[1];
            await using var watcher = new AssignmentsWatcher(new AssignmentsWatcherOptions
            {
                ControlPlaneUrls = [new Uri($"http://127.0.0.1:{port}")],
                Service = "sharded-svc",
                PingInterval = TimeSpan.FromSeconds(5),
                IdleTimeout = TimeSpan.FromSeconds(20),
            });
            var kinds = new List<UpdateKind>();
            watcher.MapApplied += a => { lock (kinds) { kinds.Add(a.Kind); } };
            watcher.Start();
            Assert.True(await watcher.Store.WaitForGenerationAsync(11, TimeSpan.FromSeconds(15), CancellationToken.None));
            Assert.Equal(after.Checksum, watcher.Store.Current!.Checksum);
            lock (kinds)
            {
                Assert.Equal([UpdateKind.Snapshot, UpdateKind.Delta], kinds);
            }
        }
        finally
        {
            python.Kill(entireProcessTree: true);
        }
    }

    private static readonly System.Text.StringBuilder Errors = new();

    private static (string Descriptor, string Script) WriteScript(string directory, string name, string text)
    {
        var descriptor = Path.Combine(directory, "assignments.desc");
        File.WriteAllBytes(descriptor, AssignmentsReflection.Descriptor.SerializedData.ToByteArray());
        var script = Path.Combine(directory, name);
        File.WriteAllText(script, text);
        return (descriptor, script);
    }

    private static Process Start(string script, params string[] args)
    {
        var info = new ProcessStartInfo(ExternalTool.Python) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(script);
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        var process = Process.Start(info)!;
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (Errors)
                {
                    Errors.AppendLine(e.Data);
                }
            }
        };
        process.BeginErrorReadLine();
        return process;
    }

    private static async Task<string> ReadLineAsync(Process process)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        return await process.StandardOutput.ReadLineAsync(timeout.Token) ?? throw new InvalidOperationException("python ended without output: " + Errors);
    }
}

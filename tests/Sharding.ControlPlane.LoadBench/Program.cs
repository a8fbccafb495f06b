// Control-plane fan-out benchmark (not a test): one control plane process, N subscribed AssignmentsWatchers in this process,
// a membership change of a 100-member service at M = 65537 → time until every subscriber applied the new generation.
// usage: dotnet run -c Release --project tests/Sharding.ControlPlane.LoadBench -- [subscribers=1000] [rounds=5]
using System.Diagnostics;
using System.Globalization;
using System.Text;
using Sharding.Protocol;
using Sharding.Protocol.V1;

var subscribers = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 1000;
var rounds = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 5;
const int Members = 100;
var directory = Path.Combine(Path.GetTempPath(), "sharding-loadbench-" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
Directory.CreateDirectory(directory);
var membership = Path.Combine(directory, "membership.yaml");
void WriteMembers(int count)
{
    var text = new StringBuilder("services:\n  bench:\n    tableSize: 65537\n    members:\n");
    for (var i = 0; i < count; i++)
    {
        text.Append(CultureInfo.InvariantCulture, $"      - {{ name: bench-{i}, address: 127.0.0.1:{20000 + i} }}\n");
    }

    File.WriteAllText(membership + ".tmp", text.ToString());
    File.Move(membership + ".tmp", membership, overwrite: true);
}

WriteMembers(Members);
var controlPlaneDll = Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "controlplane", "Sharding.ControlPlane", "bin",
    AppContext.BaseDirectory.Contains("Release", StringComparison.Ordinal) ? "Release" : "Debug", "net10.0", "Sharding.ControlPlane.dll");
var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
foreach (var arg in new[]
{
    Path.GetFullPath(controlPlaneDll), "--ControlPlane:HttpUrl=http://127.0.0.1:17100", "--ControlPlane:GrpcUrl=http://127.0.0.1:17101",
    $"--ControlPlane:MembershipFile={membership}", $"--ControlPlane:LeaseFile={Path.Combine(directory, "leader.lock")}",
    "--ControlPlane:Debounce=00:00:00", "--ControlPlane:MembershipPollInterval=00:00:00.050", "--Logging:LogLevel:Default=Warning",
})
{
    info.ArgumentList.Add(arg);
}

using var controlPlane = Process.Start(info)!;
controlPlane.OutputDataReceived += (_, _) => { };
controlPlane.ErrorDataReceived += (_, e) => { if (e.Data is not null) { Console.Error.WriteLine("cp: " + e.Data); } };
controlPlane.BeginOutputReadLine();
controlPlane.BeginErrorReadLine();
try
{
    // A few shared handlers, each multiplexing many HTTP/2 streams, as 1000 sidecars would use 1000 connections.
    var invokers = Enumerable.Range(0, 10).Select(_ => new HttpMessageInvoker(new SocketsHttpHandler { EnableMultipleHttp2Connections = true, UseProxy = false })).ToArray();
    var applied = new long[subscribers];
    var appliedAt = new long[subscribers];
    var sincePublish = new double[subscribers];
    long snapshotBytes = 0, deltaBytes = 0;
    var watchers = new List<AssignmentsWatcher>(subscribers);
    for (var i = 0; i < subscribers; i++)
    {
        var index = i;
        var watcher = new AssignmentsWatcher(
            new AssignmentsWatcherOptions
            {
                ControlPlaneUrls = [new Uri("http://127.0.0.1:17101")],
                Service = "bench",
                SubscriberName = "bench-" + i.ToString(CultureInfo.InvariantCulture),
                PingInterval = TimeSpan.FromSeconds(5),
                IdleTimeout = TimeSpan.FromSeconds(30),
                ConnectTimeout = TimeSpan.FromSeconds(20),
            },
            invokers[i % invokers.Length]);
        watcher.MapApplied += a =>
        {
            Volatile.Write(ref appliedAt[index], Stopwatch.GetTimestamp());
            sincePublish[index] = TimeProvider.System.GetUtcNow().ToUnixTimeMilliseconds() - a.Update.PublishedUnixMs;
            Volatile.Write(ref applied[index], a.Map.Generation);
            if (index == 0)
            {
                Interlocked.Exchange(ref a.Kind == UpdateKind.Delta ? ref deltaBytes : ref snapshotBytes, a.Update.CalculateSize() + GrpcProtocol.FrameHeaderLength);
            }
        };
        watchers.Add(watcher);
        watcher.Start();
    }

    async Task<bool> AllAt(long generation, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            if (applied.All(g => g >= generation))
            {
                return true;
            }

            await Task.Delay(5);
        }

        return false;
    }

    var connectClock = Stopwatch.StartNew();
    if (!await AllAt(1, TimeSpan.FromSeconds(120)))
    {
        Console.WriteLine($"only {applied.Count(g => g > 0)} of {subscribers} subscribers got the first snapshot");
        return 1;
    }

    Console.WriteLine($"{subscribers} subscribers connected and applied the first snapshot in {connectClock.ElapsedMilliseconds} ms");
    var lastAll = new List<double>();
    var p50s = new List<double>();
    var p99s = new List<double>();
    for (var round = 0; round < rounds; round++)
    {
        await Task.Delay(300);
        var generation = applied.Max();
        controlPlane.Refresh();
        var cpuBefore = (Server: controlPlane.TotalProcessorTime, Bench: Process.GetCurrentProcess().TotalProcessorTime);
        var edited = Stopwatch.GetTimestamp();
        WriteMembers(Members + ((round % 2) == 0 ? 1 : 0));
        if (!await AllAt(generation + 1, TimeSpan.FromSeconds(30)))
        {
            Console.WriteLine($"round {round}: not every subscriber got generation {generation + 1}");
            return 1;
        }

        controlPlane.Refresh();
        var serverCpu = (controlPlane.TotalProcessorTime - cpuBefore.Server).TotalMilliseconds;
        var benchCpu = (Process.GetCurrentProcess().TotalProcessorTime - cpuBefore.Bench).TotalMilliseconds;
        var latencies = appliedAt.Select(t => Stopwatch.GetElapsedTime(edited, t).TotalMilliseconds).Order().ToArray();
        var p50 = latencies[latencies.Length / 2];
        var p99 = latencies[(int)Math.Ceiling(latencies.Length * 0.99) - 1];
        lastAll.Add(latencies[^1]);
        var fanOut = sincePublish.Order().ToArray();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"round {round}: leader publish → applied (fan-out only): p50 {fanOut[fanOut.Length / 2]:0} ms, p99 {fanOut[(int)Math.Ceiling(fanOut.Length * 0.99) - 1]:0} ms"));
        p50s.Add(p50);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"round {round}: file edit → applied by subscriber: p50 {p50:0.0} ms, p99 {p99:0.0} ms, last {latencies[^1]:0.0} ms"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"round {round}: CPU during the round: control plane {serverCpu:0} ms, subscribers (this process) {benchCpu:0} ms"));
        p99s.Add(p99);
    }

    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"summary: {subscribers} subscribers, 100↔101 members, M=65537: median p50 {p50s.Order().ElementAt(p50s.Count / 2):0.0} ms, worst 'last subscriber' {lastAll.Max():0.0} ms (includes file-change detection, poll 50 ms, debounce 0)"));
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"p99 per round (ms): {string.Join(", ", p99s.Select(p => p.ToString("0.0", CultureInfo.InvariantCulture)))}; min {p99s.Min():0.0}, median {p99s.Order().ElementAt(p99s.Count / 2):0.0}"));
    Console.WriteLine($"bytes per update: snapshot {Interlocked.Read(ref snapshotBytes)} B, delta {Interlocked.Read(ref deltaBytes)} B");
    foreach (var watcher in watchers)
    {
        await watcher.DisposeAsync();
    }

    return 0;
}
finally
{
    controlPlane.Kill(entireProcessTree: true);
    try
    {
        Directory.Delete(directory, recursive: true);
    }
    catch (IOException)
    {
    }
}

using Sharding.Cli.Commands;
using Sharding.Cli.Demo;

namespace Sharding.Cli;

/// <summary>Entry point of <c>shardctl</c>: dispatches a command; exit 0 on success, 1 on failure, 2 on bad arguments.</summary>
internal static class ShardCtl
{
    public const int ExitOk = 0;
    public const int ExitFailure = 1;
    public const int ExitUsage = 2;

    private const string Usage = """
        shardctl: inspect Sharding tables, query the control plane, run the local demo.

        usage: shardctl <command> [options]

          hash    --key K [--seed S]                        xxHash64 of K's UTF-8 bytes (16 hex digits)
          table   --members a,b,c [--weights a=2,b=1] [--size M] [--algorithm maglev|ring|modulo] [--format text|json]
          owner   --members a,b,c [--weights ...] [--size M] [--algorithm ...] --key K [--key K2 ...]
          compare --from a,b,c --to a,b,c,d [--keys N] [--algorithm ...] [--size M]

          lookup  --control-plane URL --service S --key K       owner of K from the control plane's directory (HTTP port)
          map     --control-plane URL --service S               the service's shard map (members, generation, checksum)
          watch   --control-plane URL[,URL2] --service S [--count N] [--timeout 30s]
                                                            subscribe like a sidecar (gRPC port) and print each generation

          demo    [--pods 3] [--duration 60s] [--workers 4] [--streams 30] [--keep] [--work-dir DIR]
                  a local cluster on 127.0.0.1 under load: scale out, leader failover, scale in, summary

        Ring hash also takes --min-ring and --max-ring (Envoy's minimum_ring_size and maximum_ring_size).
        """;

    private static readonly Dictionary<string, (string[] Options, string[] Flags, Func<CommandLine, TextWriter, int> Run)> Commands =
        new(StringComparer.Ordinal)
        {
            ["hash"] = (["key", "seed"], [], HashingCommands.Hash),
            ["table"] = ([.. TableArguments.OptionNames, "format"], [], HashingCommands.Table),
            ["owner"] = ([.. TableArguments.OptionNames, "key"], [], HashingCommands.Owner),
            ["lookup"] = (ControlPlaneCommands.LookupOptions, [], ControlPlaneCommands.Lookup),
            ["map"] = (ControlPlaneCommands.MapOptions, [], ControlPlaneCommands.Map),
            ["watch"] = (ControlPlaneCommands.WatchOptions, [], ControlPlaneCommands.Watch),
            ["demo"] = (["pods", "duration", "workers", "streams", "work-dir"], ["keep"], DemoCommand.Run),
            ["compare"] = (["from", "to", "weights", "keys", "size", "algorithm", "min-ring", "max-ring"], [], HashingCommands.Compare),
        };

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
        {
            (args.Length == 0 ? stderr : stdout).WriteLine(Usage);
            return args.Length == 0 ? ExitUsage : ExitOk;
        }

        if (!Commands.TryGetValue(args[0], out var command))
        {
            stderr.WriteLine($"shardctl: unknown command '{args[0]}' (try: {string.Join(", ", Commands.Keys)})");
            return ExitUsage;
        }

        if (args.Skip(1).Any(static a => a is "--help" or "-h"))
        {
            // "shardctl demo --help" is how most tools are asked about a command: answer it rather than call --help unknown.
            stdout.WriteLine(Usage);
            return ExitOk;
        }

        try
        {
            var line = CommandLine.Parse(args, command.Options.ToHashSet(StringComparer.Ordinal), command.Flags.ToHashSet(StringComparer.Ordinal));
            return command.Run(line, stdout);
        }
        catch (UsageException ex)
        {
            stderr.WriteLine($"shardctl {args[0]}: {ex.Message}");
            return ExitUsage;
        }
    }
}

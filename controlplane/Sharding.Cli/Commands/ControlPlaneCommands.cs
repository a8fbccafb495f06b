using System.Globalization;
using System.Net;
using System.Text.Json;
using Sharding.Hashing;
using Sharding.Protocol;

namespace Sharding.Cli.Commands;

/// <summary><c>shardctl lookup</c>, <c>map</c> and <c>watch</c>: ask a control plane (directory endpoints, the Watch stream).</summary>
internal static class ControlPlaneCommands
{
    public static readonly string[] LookupOptions = ["control-plane", "service", "key"];
    public static readonly string[] MapOptions = ["control-plane", "service"];
    public static readonly string[] WatchOptions = ["control-plane", "service", "count", "timeout"];

    /// <summary><c>lookup --control-plane URL --service S --key K</c>: prints the owner's JSON from <c>/v1/lookup</c>.</summary>
    public static int Lookup(CommandLine line, TextWriter stdout)
    {
        var baseUri = ControlPlane(line);
        var service = line.Required("service");
        var key = line.Required("key");
        return Get(new Uri(baseUri, $"/v1/lookup?service={Uri.EscapeDataString(service)}&key={Uri.EscapeDataString(key)}"), stdout);
    }

    /// <summary><c>map --control-plane URL --service S</c>: prints the map's JSON (without the table) from <c>/v1/services/S/map</c>.</summary>
    public static int Map(CommandLine line, TextWriter stdout)
    {
        var baseUri = ControlPlane(line);
        var service = line.Required("service");
        return Get(new Uri(baseUri, $"/v1/services/{Uri.EscapeDataString(service)}/map?table=false"), stdout);
    }

    /// <summary>
    /// <c>watch --control-plane URL --service S [--count N] [--timeout 30s]</c>: subscribes like a sidecar (gRPC URL) and prints one
    /// line per generation applied; exits after N generations (default: until the timeout, default 1 hour).
    /// </summary>
    public static int Watch(CommandLine line, TextWriter stdout)
    {
        var urls = line.Required("control-plane").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(u => Uri.TryCreate(u, UriKind.Absolute, out var uri) && (uri.Scheme == Uri.UriSchemeHttp || uri.Scheme == Uri.UriSchemeHttps)
                ? uri
                : throw new UsageException($"option '--control-plane': '{u}' is not an http:// URL such as http://127.0.0.1:15001"))
            .ToArray();
        if (urls.Length == 0)
        {
            throw new UsageException("option '--control-plane' needs at least one URL, e.g. http://127.0.0.1:15001");
        }

        var service = line.Required("service");
        var count = line.Int64("count", long.MaxValue, 1, long.MaxValue);
        var timeout = line.Duration("timeout", TimeSpan.FromHours(1));
        return WatchAsync(urls, service, count, timeout, stdout).GetAwaiter().GetResult();
    }

    private static async Task<int> WatchAsync(Uri[] urls, string service, long count, TimeSpan timeout, TextWriter stdout)
    {
        var watcher = new AssignmentsWatcher(new AssignmentsWatcherOptions { ControlPlaneUrls = urls, Service = service, SubscriberName = "shardctl-watch" });
        await using (watcher.ConfigureAwait(false))
        {
            var received = 0L;
            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var gate = new object();
            watcher.MapApplied += applied =>
            {
                lock (gate)
                {
                    var map = applied.Map;
                    stdout.WriteLine(string.Create(
                        CultureInfo.InvariantCulture,
                        $"generation={map.Generation} epoch={map.Generation >> 32} kind={(applied.Kind == Protocol.V1.UpdateKind.Delta ? "delta" : "snapshot")} members={map.Members.Length} algorithm={map.Algorithm.ToName()} checksum={XxHash64.ToHex(map.Checksum)} changed_entries={applied.Update.ChangedEntries.Count / 2}"));
                    stdout.Flush();
                    if (++received >= count)
                    {
                        done.TrySetResult();
                    }
                }
            };
            watcher.Start();
            try
            {
                await done.Task.WaitAsync(timeout).ConfigureAwait(false);
                return ShardCtl.ExitOk;
            }
            catch (TimeoutException)
            {
                var status = watcher.Status;
                if (received == 0)
                {
                    await Console.Error.WriteLineAsync($"shardctl watch: no map within {timeout.TotalSeconds:0.#} s (last error: {status.LastError ?? "none"})").ConfigureAwait(false);
                    return ShardCtl.ExitFailure;
                }

                return count == long.MaxValue ? ShardCtl.ExitOk : ShardCtl.ExitFailure;
            }
        }
    }

    private static Uri ControlPlane(CommandLine line)
    {
        var text = line.Required("control-plane");
        return Uri.TryCreate(text, UriKind.Absolute, out var uri) && (uri.Scheme == Uri.UriSchemeHttp || uri.Scheme == Uri.UriSchemeHttps)
            ? uri
            : throw new UsageException($"option '--control-plane' must be an http:// URL such as http://127.0.0.1:15000 (got '{text}')");
    }

    private static int Get(Uri uri, TextWriter stdout)
    {
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        try
        {
            using var response = client.GetAsync(uri).GetAwaiter().GetResult();
            var body = response.Content.ReadAsStringAsync().GetAwaiter().GetResult();
            if (response.StatusCode != HttpStatusCode.OK)
            {
                var error = TryError(body) ?? body;
                Console.Error.WriteLine($"shardctl: {(int)response.StatusCode} from {uri.GetLeftPart(UriPartial.Path)}: {error}");
                return ShardCtl.ExitFailure;
            }

            JsonDocument document;
            try
            {
                document = JsonDocument.Parse(body);
            }
            catch (JsonException)
            {
                // Something other than a control plane's HTTP port answered (a web page, a proxy).
                Console.Error.WriteLine($"shardctl: the answer from {uri.GetLeftPart(UriPartial.Path)} is not JSON ({response.Content.Headers.ContentType?.MediaType ?? "no content type"}); is --control-plane the control plane's HTTP port?");
                return ShardCtl.ExitFailure;
            }

            using (document)
            {
                stdout.WriteLine(JsonSerializer.Serialize(document.RootElement, IndentedOptions));
            }

            return ShardCtl.ExitOk;
        }
        catch (HttpRequestException ex)
        {
            Console.Error.WriteLine($"shardctl: cannot reach {uri.GetLeftPart(UriPartial.Authority)}: {ex.Message}");
            return ShardCtl.ExitFailure;
        }
        catch (TaskCanceledException)
        {
            // HttpClient.Timeout: connected, but no answer.
            Console.Error.WriteLine($"shardctl: no answer from {uri.GetLeftPart(UriPartial.Authority)} within {client.Timeout.TotalSeconds:0} s");
            return ShardCtl.ExitFailure;
        }
    }

    private static readonly JsonSerializerOptions IndentedOptions = new() { WriteIndented = true };

    private static string? TryError(string body)
    {
        try
        {
            using var document = JsonDocument.Parse(body);
            return document.RootElement.TryGetProperty("error", out var error) ? error.GetString() : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }
}

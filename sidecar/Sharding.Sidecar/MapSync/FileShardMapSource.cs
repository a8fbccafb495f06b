using Microsoft.Extensions.Options;
using Sharding.Mapping;
using Sharding.Sidecar.Hosting;

namespace Sharding.Sidecar.MapSync;

/// <summary>
/// Reads the static map file at start and again whenever it changes (a file watcher, plus a poll of its write time as a
/// backstop: watchers miss events on some volumes, e.g. a ConfigMap's symlink swap). A bad edit keeps the last good map.
/// </summary>
/// <remarks>The watcher sees every file of the directory (inotify watches directories), so events for other files are
/// dropped before they wake the reload loop: a busy log beside the map file would otherwise make it re-read the map
/// thousands of times a second.</remarks>
internal sealed partial class FileShardMapSource(
    IOptions<SidecarOptions> options, SidecarMetrics metrics, TimeProvider timeProvider, ILogger<FileShardMapSource> logger) : IShardMapSource
{
    /// <summary>How often the write time is polled.</summary>
    internal static readonly TimeSpan PollInterval = TimeSpan.FromSeconds(1);

    private string? _lastText;
    private int _reads;

    /// <summary>How many times the file has been read (tests: unrelated files must not cause reads).</summary>
    internal int Reads => Volatile.Read(ref _reads);

    public async Task RunAsync(ShardMapStore store, CancellationToken cancellationToken)
    {
        var path = Path.GetFullPath(options.Value.MapFile!);
        var changed = new SemaphoreSlim(0, 1);
        using var watcher = TryWatch(path, changed);
        Load(path, store);
        using var timer = new PeriodicTimer(PollInterval, timeProvider);
        var lastWrite = SafeWriteTime(path);
        Task? tick = null;
        Task? signal = null;
        while (!cancellationToken.IsCancellationRequested)
        {
            // At most one outstanding wait of each kind (PeriodicTimer allows only one).
            tick ??= timer.WaitForNextTickAsync(cancellationToken).AsTask();
            signal ??= changed.WaitAsync(cancellationToken);
            await Task.WhenAny(tick, signal).ConfigureAwait(false);
            if (cancellationToken.IsCancellationRequested)
            {
                return;
            }

            var signalled = signal.IsCompleted;
            signal = signalled ? null : signal;
            tick = tick.IsCompleted ? null : tick;
            var write = SafeWriteTime(path);
            if (signalled || write != lastWrite)
            {
                lastWrite = write;
                Load(path, store);
            }
        }
    }

    /// <summary>Reads, parses and publishes the file; returns whether a new map got in.</summary>
    internal bool Load(string path, ShardMapStore store)
    {
        string text;
        Interlocked.Increment(ref _reads);
        try
        {
            text = File.ReadAllText(path);
        }
        catch (IOException ex)
        {
            metrics.MapLoaded(ok: false);
            Log.MapFileUnreadable(logger, path, ex.Message);
            return false;
        }
        catch (UnauthorizedAccessException ex)
        {
            metrics.MapLoaded(ok: false);
            Log.MapFileUnreadable(logger, path, ex.Message);
            return false;
        }

        if (string.Equals(text, _lastText, StringComparison.Ordinal))
        {
            return false; // touched, not changed
        }

        // Each load gets a higher generation than the map it replaces.
        if (!StaticMapFile.TryParse(text, Math.Max(store.Generation + 1, 1), out var map, out var error))
        {
            metrics.MapLoaded(ok: false);
            Log.MapFileInvalid(logger, path, error!, store.Generation);
            return false;
        }

        if (options.Value.Service.Length > 0 && !string.Equals(options.Value.Service, map!.Service, StringComparison.Ordinal))
        {
            metrics.MapLoaded(ok: false);
            Log.MapFileInvalid(logger, path, $"the file is for service '{map.Service}', this sidecar serves '{options.Value.Service}'", store.Generation);
            return false;
        }

        _lastText = text;
        metrics.MapLoaded(ok: true);
        return store.TryPublish(map!);
    }

    private static DateTime SafeWriteTime(string path)
    {
        try
        {
            // The target's write time: File.GetLastWriteTimeUtc reads a symlink's own (lstat), and a ConfigMap volume's
            // map.yaml is a symlink that never changes while ..data is swapped beneath it.
            var file = new FileInfo(path);
            return (file.LinkTarget is null ? file : file.ResolveLinkTarget(returnFinalTarget: true) ?? file).LastWriteTimeUtc;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return default;
        }
    }

    private FileSystemWatcher? TryWatch(string path, SemaphoreSlim changed)
    {
        try
        {
            var watcher = new FileSystemWatcher(Path.GetDirectoryName(path)!)
            {
                NotifyFilter = NotifyFilters.LastWrite | NotifyFilters.FileName | NotifyFilters.Size | NotifyFilters.CreationTime,
                IncludeSubdirectories = false,
            };
            var fileName = Path.GetFileName(path);
            void Signal(string? name, string? oldName = null)
            {
                if ((IsAbout(name, fileName) || IsAbout(oldName, fileName)) && changed.CurrentCount == 0)
                {
                    try
                    {
                        changed.Release();
                    }
                    catch (SemaphoreFullException)
                    {
                        // already signalled
                    }
                }
            }

            watcher.Changed += (_, e) => Signal(e.Name);
            watcher.Created += (_, e) => Signal(e.Name);
            watcher.Renamed += (_, e) => Signal(e.Name, e.OldName);
            watcher.EnableRaisingEvents = true;
            return watcher;
        }
        catch (Exception ex) when (ex is IOException or ArgumentException or PlatformNotSupportedException)
        {
            Log.WatchFailed(logger, path, ex.Message);
            return null;
        }
    }

    /// <summary>
    /// Whether a directory event can change the map file: the file itself, or the kubelet's atomic writer swapping a
    /// ConfigMap volume's <c>..data</c> symlink (its entries all start with <c>..</c>).
    /// </summary>
    internal static bool IsAbout(string? name, string fileName) =>
        name is not null && (string.Equals(name, fileName, StringComparison.Ordinal) || name.StartsWith("..", StringComparison.Ordinal));

    private static partial class Log
    {
        [LoggerMessage(EventId = 710, EventName = "MapFileUnreadable", Level = LogLevel.Error,
            Message = "Cannot read the shard-map file {Path}: {Reason}; keeping the current map")]
        public static partial void MapFileUnreadable(ILogger logger, string path, string reason);

        [LoggerMessage(EventId = 711, EventName = "MapFileInvalid", Level = LogLevel.Error,
            Message = "The shard-map file {Path} is invalid: {Reason}; keeping the current map (generation {Generation})")]
        public static partial void MapFileInvalid(ILogger logger, string path, string reason, long generation);

        [LoggerMessage(EventId = 712, EventName = "MapFileWatchFailed", Level = LogLevel.Warning,
            Message = "Cannot watch {Path} ({Reason}); polling its write time instead")]
        public static partial void WatchFailed(ILogger logger, string path, string reason);
    }
}

using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.Extensions.Options;
using Sharding.ControlPlane.Hosting;

namespace Sharding.ControlPlane.Membership;

/// <summary>
/// Local-mode membership: a JSON or YAML file watched with <see cref="FileSystemWatcher"/> plus polling (events can be lost).
/// A bad edit is logged with the offending path and the last good membership stays in force.
/// </summary>
internal sealed partial class FileMembershipSource(
    IOptions<ControlPlaneOptions> options, ControlPlaneMetrics metrics, TimeProvider timeProvider, ILogger<FileMembershipSource> logger)
    : IMembershipSource
{
    private readonly ControlPlaneOptions _options = options.Value;

    public async IAsyncEnumerable<MembershipSnapshot> WatchAsync([EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var path = Path.GetFullPath(_options.MembershipFile!);
        var signal = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite });
        using var watcher = TryWatch(path, signal.Writer);
        string? lastText = null;
        for (long round = 0; round < long.MaxValue && !cancellationToken.IsCancellationRequested; round++)
        {
            var text = await ReadAsync(path, cancellationToken).ConfigureAwait(false);
            if (text is not null && !string.Equals(text, lastText, StringComparison.Ordinal))
            {
                lastText = text;
                MembershipSnapshot? snapshot = null;
                try
                {
                    snapshot = MembershipFileParser.Parse(text, path);
                }
                catch (FormatException ex)
                {
                    metrics.MembershipError();
                    Log.BadFile(logger, path, ex.Message);
                }

                if (snapshot is not null)
                {
                    Log.Loaded(logger, path, snapshot.Services.Count);
                    yield return snapshot;
                }
            }

            // Wake on a file-system event or at the next poll, whichever comes first.
            using var poll = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            poll.CancelAfter(Timeout.InfiniteTimeSpan);
            var wait = signal.Reader.WaitToReadAsync(poll.Token).AsTask();
            var delay = Task.Delay(_options.MembershipPollInterval, timeProvider, poll.Token);
            await Task.WhenAny(wait, delay).ConfigureAwait(false);
            await poll.CancelAsync().ConfigureAwait(false);
            signal.Reader.TryRead(out _);
            cancellationToken.ThrowIfCancellationRequested();
        }
    }

    private FileSystemWatcher? TryWatch(string path, ChannelWriter<bool> signal)
    {
        try
        {
            var watcher = new FileSystemWatcher(Path.GetDirectoryName(path)!, Path.GetFileName(path))
            {
                NotifyFilter = NotifyFilters.LastWrite | NotifyFilters.FileName | NotifyFilters.Size | NotifyFilters.CreationTime,
            };
            FileSystemEventHandler onChange = (_, _) => signal.TryWrite(true);
            watcher.Changed += onChange;
            watcher.Created += onChange;
            watcher.Renamed += (_, _) => signal.TryWrite(true);
            watcher.EnableRaisingEvents = true;
            return watcher;
        }
        catch (Exception ex) when (ex is IOException or ArgumentException or PlatformNotSupportedException)
        {
            Log.WatchUnavailable(logger, path, ex.Message);
            return null;
        }
    }

    private async Task<string?> ReadAsync(string path, CancellationToken cancellationToken)
    {
        // A writer may hold the file for a moment: a few quick retries, then wait for the next round.
        for (var attempt = 0; attempt < 3; attempt++)
        {
            try
            {
                return await File.ReadAllTextAsync(path, cancellationToken).ConfigureAwait(false);
            }
            catch (FileNotFoundException)
            {
                Log.Missing(logger, path);
                return null;
            }
            catch (DirectoryNotFoundException)
            {
                Log.Missing(logger, path);
                return null;
            }
            catch (IOException) when (attempt < 2)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(20), timeProvider, cancellationToken).ConfigureAwait(false);
            }
            catch (IOException ex)
            {
                Log.BadFile(logger, path, ex.Message);
                return null;
            }
        }

        return null;
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 201, EventName = "MembershipLoaded", Level = LogLevel.Information, Message = "Membership file {Path} loaded: {ServiceCount} services")]
        public static partial void Loaded(ILogger logger, string path, int serviceCount);

        [LoggerMessage(EventId = 202, EventName = "MembershipFileInvalid", Level = LogLevel.Error, Message = "Membership file {Path} is invalid, keeping the last good membership: {Reason}")]
        public static partial void BadFile(ILogger logger, string path, string reason);

        [LoggerMessage(EventId = 203, EventName = "MembershipFileMissing", Level = LogLevel.Warning, Message = "Membership file {Path} does not exist; keeping the last good membership")]
        public static partial void Missing(ILogger logger, string path);

        [LoggerMessage(EventId = 204, EventName = "MembershipWatchUnavailable", Level = LogLevel.Warning, Message = "Cannot watch {Path} for changes ({Reason}); polling only")]
        public static partial void WatchUnavailable(ILogger logger, string path, string reason);
    }
}

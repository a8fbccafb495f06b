using System.Buffers;

namespace Sharding.Sidecar.Forwarding;

/// <summary>The outcome of one body copy.</summary>
internal enum StreamCopyResult
{
    Success,
    InputError,
    OutputError,
    Canceled,
}

/// <summary>Copies a body between streams with one rented buffer, optionally flushing each write (streams, SSE, gRPC).</summary>
internal static class StreamCopier
{
    /// <summary>64 KiB: large enough that a 100 MB body needs ~1,600 turns, small enough to keep memory flat per stream
    /// (YARP measured the same size as its sweet spot, see its StreamCopier).</summary>
    public const int BufferSize = 64 * 1024;

    /// <summary>Copies until the source ends.</summary>
    /// <param name="source">Read side.</param>
    /// <param name="destination">Write side.</param>
    /// <param name="autoFlush">Flush after each write (unknown-length and streaming bodies).</param>
    /// <param name="activity">Reset on every read and write when an activity timeout is set; else null.</param>
    /// <param name="cancellationToken">Cancels the copy.</param>
    /// <returns>The result and the byte count.</returns>
    public static async ValueTask<(StreamCopyResult Result, long Bytes, Exception? Error)> CopyAsync(
        Stream source, Stream destination, bool autoFlush, ActivityTimeout? activity, CancellationToken cancellationToken)
    {
        long total = 0;
        byte[]? buffer = null;
        var reading = true;
        try
        {
            // A zero-byte read waits for data without holding a buffer (idle streams keep no 64 KiB each).
            // With autoFlush, if no data is there yet, flush first: a response's headers (a long poll, a stream that sent
            // headers early) reach the client now instead of with the first body bytes.
            var first = source.ReadAsync(Memory<byte>.Empty, cancellationToken);
            if (autoFlush && !first.IsCompleted)
            {
                reading = false;
                await destination.FlushAsync(cancellationToken).ConfigureAwait(false);
                reading = true;
            }

            await first.ConfigureAwait(false);
            buffer = ArrayPool<byte>.Shared.Rent(BufferSize);

            // Bounded by the body: each turn consumes at least one byte or ends. With autoFlush, data is flushed whenever
            // the next read would wait (so a stream's events go out at once) but not between reads that complete at once
            // (so a body that arrives in a burst, and its end, go out in as few writes as possible).
            var unflushed = false;
            while (true)
            {
                reading = true;
                var pending = source.ReadAsync(buffer.AsMemory(), cancellationToken);
                if (unflushed && !pending.IsCompleted)
                {
                    reading = false;
                    await destination.FlushAsync(cancellationToken).ConfigureAwait(false);
                    unflushed = false;
                    reading = true;
                }

                var read = await pending.ConfigureAwait(false);
                activity?.Touch();
                if (read == 0)
                {
                    return (StreamCopyResult.Success, total, null);
                }

                reading = false;
                await destination.WriteAsync(buffer.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
                unflushed = autoFlush;
                activity?.Touch();
                total += read;
            }
        }
        catch (OperationCanceledException ex)
        {
            return (StreamCopyResult.Canceled, total, ex);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or InvalidOperationException or System.Net.Http.HttpRequestException
                                       or Microsoft.AspNetCore.Http.BadHttpRequestException or System.Net.Sockets.SocketException)
        {
            return (reading ? StreamCopyResult.InputError : StreamCopyResult.OutputError, total, ex);
        }
        finally
        {
            if (buffer is not null)
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }
}

/// <summary>Cancels a forward whose bodies stay idle longer than the activity timeout (reset on every read and write).</summary>
internal sealed class ActivityTimeout(CancellationTokenSource source, TimeSpan timeout)
{
    // A response-headers deadline: Touch pushes it back only until Stop (the response came).
    private bool _untilResponse;
    private bool _stopped;

    /// <summary>
    /// The response-headers deadline when no activity timeout is set: the request body's reads and writes push it back, so it
    /// counts from the last body bytes sent (an upload still flowing is not cut with a 504) until <see cref="Stop"/>.
    /// </summary>
    public static ActivityTimeout UntilResponse(CancellationTokenSource source, TimeSpan timeout) => new(source, timeout) { _untilResponse = true };

    public void Touch()
    {
        if (!_untilResponse)
        {
            source.CancelAfter(timeout);
            return;
        }

        lock (this)
        {
            if (!_stopped)
            {
                source.CancelAfter(timeout);
            }
        }
    }

    /// <summary>The response headers came: no deadline any more, whatever the body does next (a duplex call goes on).</summary>
    public void Stop()
    {
        lock (this)
        {
            _stopped = true;
            source.CancelAfter(Timeout.InfiniteTimeSpan);
        }
    }
}

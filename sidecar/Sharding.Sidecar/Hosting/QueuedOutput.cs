using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;

namespace Sharding.Sidecar.Hosting;

/// <summary>
/// An HTTP/2 connection's output, sent from the thread pool instead of inline by whichever thread flushed it.
/// </summary>
/// <remarks>
/// With inline scheduling (<c>Sidecar:InlineSocketCompletions</c>, which makes the HTTP/1.1 fast path cheap),
/// every flush of Kestrel's HTTP/2 frame writer runs its own socket send at once: one syscall per frame batch of one stream.
/// Kestrel's default scheduling sends from a queue instead, so frames that several streams flush meanwhile leave in one
/// send. This puts that queue back for HTTP/2 connections only: Kestrel writes into a pipe whose reader runs on the thread
/// pool and copies what has gathered to the socket's output. Measured with h2load -c4 -m8 on 2 cores: about a fifth more
/// requests per second and a fifth less CPU per request than inline sends (docs/benchmarks.md). Backpressure passes
/// through: Kestrel's flush waits while this pipe holds <see cref="PauseBytes"/>, and the copy waits on the socket's own.
/// </remarks>
internal sealed class QueuedOutput : IDuplexPipe
{
    /// <summary>Kestrel's default for a connection's output buffer (SocketTransportOptions.MaxWriteBufferSize).</summary>
    internal const int PauseBytes = 64 * 1024;

    private readonly Pipe _pipe;
    private readonly PipeWriter _destination;

    private QueuedOutput(IDuplexPipe transport, MemoryPool<byte>? pool)
    {
        Input = transport.Input;
        _destination = transport.Output;
        _pipe = new Pipe(new PipeOptions(
            pool,
            readerScheduler: PipeScheduler.ThreadPool,
            writerScheduler: PipeScheduler.Inline,
            pauseWriterThreshold: PauseBytes,
            resumeWriterThreshold: PauseBytes / 2,
            useSynchronizationContext: false));
        Sending = SendAsync();
    }

    public PipeReader Input { get; }

    public PipeWriter Output => _pipe.Writer;

    /// <summary>The copy to the socket's output; ends when the writer completes (or the socket's output does).</summary>
    internal Task Sending { get; }

    /// <summary>How long the last queued bytes may take to leave once Kestrel is done with the connection (at most two
    /// 64 KiB buffers) before the connection is aborted: a client that stops reading must not hold it forever.</summary>
    internal static readonly TimeSpan LastBytesTimeout = TimeSpan.FromSeconds(5);

    /// <summary>Runs <paramref name="next"/> with the connection's output queued, and waits for the last bytes to be sent.</summary>
    public static Task RunAsync(ConnectionContext connection, ConnectionDelegate next) => RunAsync(connection, next, LastBytesTimeout);

    internal static async Task RunAsync(ConnectionContext connection, ConnectionDelegate next, TimeSpan lastBytesTimeout)
    {
        var output = Wrap(connection.Transport, connection.Features.Get<IMemoryPoolFeature>()?.MemoryPool);
        connection.Transport = output;
        try
        {
            await next(connection).ConfigureAwait(false);
        }
        finally
        {
            await output.Output.CompleteAsync().ConfigureAwait(false); // Kestrel has completed it already; this is for a throw
            if (await Task.WhenAny(output.Sending, Task.Delay(lastBytesTimeout)).ConfigureAwait(false) != output.Sending)
            {
                // Aborting the socket ends its output, and with it the copy.
                connection.Abort(new ConnectionAbortedException("the client did not read the connection's last bytes in time"));
                await output.Sending.ConfigureAwait(false);
            }
        }
    }

    internal static QueuedOutput Wrap(IDuplexPipe transport, MemoryPool<byte>? pool) => new(transport, pool);

    private async Task SendAsync()
    {
        var source = _pipe.Reader;
        Exception? error = null;
        try
        {
            // Bounded by the connection: ends when Kestrel completes its output or the socket's output stops taking bytes.
            while (true)
            {
                var read = await source.ReadAsync().ConfigureAwait(false);
                var buffer = read.Buffer;
                foreach (var segment in buffer)
                {
                    _destination.Write(segment.Span);
                }

                source.AdvanceTo(buffer.End);
                var flushed = buffer.IsEmpty ? default : await _destination.FlushAsync().ConfigureAwait(false);
                if (read.IsCompleted || read.IsCanceled || flushed.IsCompleted || flushed.IsCanceled)
                {
                    break;
                }
            }
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            // The socket failed (reset, aborted): Kestrel's next flush sees it and ends the connection.
            error = ex;
        }

        await source.CompleteAsync(error).ConfigureAwait(false);
        await _destination.CompleteAsync(error).ConfigureAwait(false);
    }
}

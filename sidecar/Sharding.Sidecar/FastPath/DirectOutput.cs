using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;
using Sharding.Sidecar.Transport;

namespace Sharding.Sidecar.FastPath;

/// <summary>
/// A fast-path session's writer to its client over the epoll transport: it gathers a flush's bytes in a buffer of its own
/// and sends them to the socket itself when the connection's send loop is idle (<see cref="EpollConnection.TrySendDirect"/>),
/// so a response does not pass through the output pipe, its memory blocks and its send loop. What the socket does not take
/// at once, and every flush while the pipe still has bytes to send, goes through the pipe after them, in order, with the
/// pipe's backpressure. (The session flushes each response head and each app read it passes on, so the buffer stays small.)
/// </summary>
internal sealed class DirectOutput(EpollConnection connection, PipeWriter pipe) : BufferedPipeWriter(4096)
{
    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
    {
        var data = TakeWritten().Span;
        try
        {
            if (connection.TrySendDirect(pipe, data, out var sent))
            {
                if (sent == data.Length)
                {
                    return new ValueTask<FlushResult>(new FlushResult(isCanceled: false, isCompleted: false));
                }

                data = data[sent..];
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // The client is gone: as the pipe says once its send loop ended.
            return new ValueTask<FlushResult>(new FlushResult(isCanceled: false, isCompleted: true));
        }

        pipe.Write(data);
        return pipe.FlushAsync(cancellationToken);
    }

    public override void CancelPendingFlush() => pipe.CancelPendingFlush();

    /// <summary>Completes the pipe (unflushed bytes are dropped, as a pipe's are) and gives the buffer back.</summary>
    public override void Complete(Exception? exception = null)
    {
        Release();
        pipe.Complete(exception);
    }

    /// <summary>Gives the buffer back; the pipe stays open (the session hands the connection over, or it is disposed).</summary>
    public void Release() => ReleaseBuffer();
}

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
/// pipe's backpressure.
/// </summary>
internal sealed class DirectOutput : PipeWriter
{
    private const int InitialSize = 4096;

    private readonly EpollConnection _connection;
    private readonly PipeWriter _pipe;
    private byte[] _buffer = ArrayPool<byte>.Shared.Rent(InitialSize);
    private int _length;

    public DirectOutput(EpollConnection connection, PipeWriter pipe)
    {
        _connection = connection;
        _pipe = pipe;
    }

    public override bool CanGetUnflushedBytes => true;

    public override long UnflushedBytes => _length;

    public override void Advance(int bytes) => _length += bytes;

    public override Memory<byte> GetMemory(int sizeHint = 0)
    {
        Reserve(sizeHint);
        return _buffer.AsMemory(_length);
    }

    public override Span<byte> GetSpan(int sizeHint = 0)
    {
        Reserve(sizeHint);
        return _buffer.AsSpan(_length);
    }

    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
    {
        var data = _buffer.AsSpan(0, _length);
        _length = 0;
        try
        {
            if (_connection.TrySendDirect(_pipe, data, out var sent))
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

        _pipe.Write(data);
        return _pipe.FlushAsync(cancellationToken);
    }

    public override void CancelPendingFlush() => _pipe.CancelPendingFlush();

    /// <summary>Completes the pipe (unflushed bytes are dropped, as a pipe's are) and gives the buffer back.</summary>
    public override void Complete(Exception? exception = null)
    {
        Release();
        _pipe.Complete(exception);
    }

    /// <summary>Gives the buffer back; the pipe stays open (the session hands the connection over, or it is disposed).</summary>
    public void Release()
    {
        _length = 0;
        var buffer = _buffer;
        _buffer = [];
        if (buffer.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private void Reserve(int sizeHint)
    {
        var needed = _length + Math.Max(sizeHint, 1);
        if (needed <= _buffer.Length)
        {
            return;
        }

        // Bounded by the session: it flushes each response head and each app read it passes on (at most 64 KiB each).
        var larger = ArrayPool<byte>.Shared.Rent(Math.Max(needed, _buffer.Length * 2));
        _buffer.AsSpan(0, _length).CopyTo(larger);
        if (_buffer.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(_buffer);
        }

        _buffer = larger;
    }
}

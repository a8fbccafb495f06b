using System.Buffers;
using System.IO.Pipelines;

namespace Sharding.Sidecar.Transport;

/// <summary>
/// A pipe writer that gathers what is written until a flush in one pooled buffer of its own (grown as needed), for writers
/// whose flush sends the bytes itself: a peer link's stream output, the fast path's direct output.
/// </summary>
internal abstract class BufferedPipeWriter(int initialSize) : PipeWriter
{
    private byte[] _buffer = ArrayPool<byte>.Shared.Rent(initialSize);
    private int _written;

    public override bool CanGetUnflushedBytes => true;

    public override long UnflushedBytes => _written;

    public override void Advance(int bytes) => _written += bytes;

    public override Memory<byte> GetMemory(int sizeHint = 0)
    {
        Reserve(sizeHint);
        return _buffer.AsMemory(_written);
    }

    public override Span<byte> GetSpan(int sizeHint = 0)
    {
        Reserve(sizeHint);
        return _buffer.AsSpan(_written);
    }

    /// <summary>What was written since the last <see cref="TakeWritten"/>.</summary>
    protected Memory<byte> Written => _buffer.AsMemory(0, _written);

    /// <summary>What was written, as the flush takes it: the writer starts over (the bytes stay valid until the next write).</summary>
    protected Memory<byte> TakeWritten()
    {
        var written = Written;
        _written = 0;
        return written;
    }

    /// <summary>Drops what was written.</summary>
    protected void ClearWritten() => _written = 0;

    /// <summary>Gives the buffer back to the pool (unflushed bytes are dropped); the writer must not be written to after.</summary>
    protected void ReleaseBuffer()
    {
        _written = 0;
        var buffer = Interlocked.Exchange(ref _buffer, []);
        if (buffer.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private void Reserve(int sizeHint)
    {
        var needed = _written + Math.Max(sizeHint, 256);
        if (needed <= _buffer.Length)
        {
            return;
        }

        var larger = ArrayPool<byte>.Shared.Rent(Math.Max(needed, _buffer.Length * 2));
        _buffer.AsSpan(0, _written).CopyTo(larger);
        if (_buffer.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(_buffer);
        }

        _buffer = larger;
    }
}

using Sharding.Keys;

namespace Sharding.Sidecar.Forwarding;

/// <summary>
/// The client's request body, read through a <see cref="JsonKeyPathGuard"/>: a read that completes a duplicate member on a
/// key path fails (before its bytes go on), so the upstream request is cut and never looks whole.
/// </summary>
internal sealed class GuardedBodyStream(Stream inner, JsonKeyPathGuard guard) : Stream
{
    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var read = await inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
        return Check(buffer.Span[..read]);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override int Read(byte[] buffer, int offset, int count) => Check(buffer.AsSpan(offset, inner.Read(buffer, offset, count)));

    private int Check(ReadOnlySpan<byte> bytes) => guard.Feed(bytes) ? bytes.Length : throw new IOException(guard.Message);

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}

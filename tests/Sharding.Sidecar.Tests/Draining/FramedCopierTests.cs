using Sharding.Sidecar.Draining;
using Sharding.Sidecar.Forwarding;

namespace Sharding.Sidecar.Tests.Draining;

/// <summary>
/// The WebSocket copy's <see cref="FramedCopyResult.SawClose"/> decides whether a drain adds its own close frame 1012: it must
/// mean "a close frame went to the client", not "one was read from upstream".
/// </summary>
public sealed class FramedCopierTests
{
    /// <summary>
    /// The race behind the rare DrainTests failure ("1 moved streams still open ... ws"): a WebSocket entered at one sidecar
    /// and served through the old owner's; both drain it. The owner's close frame 1012 arrives at the edge just as the edge's
    /// own grace ends: the read completes, the drain cancels, and the write of that close frame throws before writing anything
    /// (Kestrel checks the token first). The edge must still send its own close, or the client hears nothing until the
    /// connection is cut a second later.
    /// </summary>
    [Fact]
    public async Task CloseFrameRead_ThenDrainCancelsItsWrite_IsNotReportedAsSent()
    {
        using var drain = new CancellationTokenSource();
        var close = FramedCopier.CloseFrame(StreamEnder.WebSocketServiceRestart, "shard moved to pod-3 at generation 20");
        using var upstream = new OneReadStream(close, afterRead: drain.Cancel);
        using var client = new KestrelLikeStream();

        var result = await FramedCopier.CopyAsync(upstream, client, FrameFormat.WebSocket, activity: null, drain.Token);

        Assert.Equal(StreamCopyResult.Canceled, result.Result);
        Assert.Equal(0, client.Length);
        Assert.True(result.AtBoundary);
        Assert.False(result.SawClose, "the close frame was read but never reached the client; the drain must send its own");
    }

    [Fact]
    public async Task CloseFrameWritten_IsReportedAsSent()
    {
        using var drain = new CancellationTokenSource();
        var text = new byte[] { 0x81, 0x02, (byte)'h', (byte)'i' };
        var close = FramedCopier.CloseFrame(StreamEnder.WebSocketServiceRestart, "bye");
        using var upstream = new OneReadStream([.. text, .. close], afterRead: null);
        using var client = new KestrelLikeStream();

        var result = await FramedCopier.CopyAsync(upstream, client, FrameFormat.WebSocket, activity: null, drain.Token);

        Assert.Equal(StreamCopyResult.Success, result.Result);
        Assert.Equal(text.Length + close.Length, client.Length);
        Assert.True(result.SawClose);
    }

    /// <summary>
    /// An idle gRPC stream or WebSocket (a watch waiting for its next event) holds no 64 KiB copy buffer: the copy waits with a
    /// zero-byte read, as <see cref="StreamCopier"/> does, so ten thousand quiet watch streams do not pin 640 MB.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task IdleBetweenFrames_WaitsWithoutAReadBuffer(bool grpc)
    {
        var format = grpc ? FrameFormat.Grpc : FrameFormat.WebSocket;
        byte[] frame = format == FrameFormat.Grpc ? [0, 0, 0, 0, 2, (byte)'h', (byte)'i'] : [0x81, 0x02, (byte)'h', (byte)'i'];
        using var upstream = new TrickleStream([frame, frame, frame]);
        using var client = new MemoryStream();

        var result = await FramedCopier.CopyAsync(upstream, client, format, activity: null, CancellationToken.None);

        Assert.Equal(StreamCopyResult.Success, result.Result);
        Assert.Equal(3 * frame.Length, client.Length);
        Assert.True(upstream.WaitingReads > 0);
        Assert.Equal([], upstream.WaitingReadSizes.Where(size => size > 0));
    }

    /// <summary>Hands out one piece per read, each only after a pause (so the read waits); records the buffer size of every
    /// read that had to wait.</summary>
    private sealed class TrickleStream(byte[][] pieces) : Stream
    {
        private int _next;
        private bool _ready;

        public List<int> WaitingReadSizes { get; } = [];

        public int WaitingReads => WaitingReadSizes.Count;

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (!_ready && _next < pieces.Length)
            {
                WaitingReadSizes.Add(buffer.Length);
                await Task.Delay(20, cancellationToken);
                _ready = true;
            }

            if (buffer.IsEmpty || _next == pieces.Length)
            {
                return 0;
            }

            _ready = false;
            var piece = pieces[_next++];
            piece.CopyTo(buffer);
            return piece.Length;
        }

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    /// <summary>Returns <paramref name="data"/> on the first read (then runs <paramref name="afterRead"/>), then the end.</summary>
    private sealed class OneReadStream(byte[] data, Action? afterRead) : MemoryStream(data)
    {
        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            var read = await base.ReadAsync(buffer, CancellationToken.None);
            if (read > 0)
            {
                afterRead?.Invoke();
            }

            return read;
        }
    }

    /// <summary>Like Kestrel's response stream: a cancelled token throws before anything is written.</summary>
    private sealed class KestrelLikeStream : MemoryStream
    {
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            cancellationToken.ThrowIfCancellationRequested();
            return base.WriteAsync(buffer, CancellationToken.None);
        }

        public override Task FlushAsync(CancellationToken cancellationToken)
        {
            cancellationToken.ThrowIfCancellationRequested();
            return Task.CompletedTask;
        }
    }
}

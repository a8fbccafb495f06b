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

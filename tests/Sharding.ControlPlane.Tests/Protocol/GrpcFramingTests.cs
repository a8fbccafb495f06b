using System.Buffers;
using Sharding.Protocol;
using Sharding.Protocol.V1;

namespace Sharding.ControlPlane.Tests.Protocol;

public sealed class GrpcFramingTests
{
    [Fact]
    public async Task ReadMessageAsync_FramesWrittenByWriter_RoundTrip()
    {
        var stream = new MemoryStream();
        var first = new WatchRequest { Pod = "p-0", Service = "svc", KnownGeneration = 42, KnownChecksum = ulong.MaxValue };
        await GrpcFrameWriter.WriteAsync(stream, first, CancellationToken.None);
        await GrpcFrameWriter.WriteAsync(stream, new WatchRequest(), CancellationToken.None);
        stream.Position = 0;
        Assert.Equal(0, stream.GetBuffer()[0]);
        Assert.Equal(first.CalculateSize(), (stream.GetBuffer()[3] << 8) | stream.GetBuffer()[4]);

        var reader = new GrpcFrameReader(stream);
        Assert.Equal(first, WatchRequest.Parser.ParseFrom(await reader.ReadMessageAsync(CancellationToken.None)));
        Assert.Empty((await reader.ReadMessageAsync(CancellationToken.None))!);
        Assert.Null(await reader.ReadMessageAsync(CancellationToken.None));
    }

    [Fact]
    public async Task ReadMessageAsync_AboveLimit_ResourceExhaustedBeforeBuffering()
    {
        var frame = GrpcFrameWriter.Encode(new byte[2000]);
        var ex = await Assert.ThrowsAsync<GrpcCallException>(() => new GrpcFrameReader(new MemoryStream(frame), 1024).ReadMessageAsync(CancellationToken.None).AsTask());
        Assert.Equal(GrpcStatusCode.ResourceExhausted, ex.StatusCode);
        Assert.Contains("2000 vs. 1024", ex.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ReadMessageAsync_CompressedOrTruncated_ClearStatus()
    {
        var compressed = GrpcFrameWriter.Encode(new byte[3]);
        compressed[0] = 1;
        Assert.Equal(GrpcStatusCode.Unimplemented, (await Assert.ThrowsAsync<GrpcCallException>(() => new GrpcFrameReader(new MemoryStream(compressed)).ReadMessageAsync(CancellationToken.None).AsTask())).StatusCode);
        var truncated = GrpcFrameWriter.Encode(new byte[10])[..8];
        Assert.Equal(GrpcStatusCode.Internal, (await Assert.ThrowsAsync<GrpcCallException>(() => new GrpcFrameReader(new MemoryStream(truncated)).ReadMessageAsync(CancellationToken.None).AsTask())).StatusCode);
    }

    [Fact]
    public void TryReadFrame_PartialThenWhole_TakesOneFrame()
    {
        var frame = GrpcFrameWriter.Encode(new byte[] { 1, 2, 3 });
        var partial = new ReadOnlySequence<byte>(frame[..6]);
        Assert.False(GrpcFrameReader.TryReadFrame(ref partial, 100, out _));
        var whole = new ReadOnlySequence<byte>([.. frame, .. frame]);
        Assert.True(GrpcFrameReader.TryReadFrame(ref whole, 100, out var message));
        Assert.Equal(new byte[] { 1, 2, 3 }, message.ToArray());
        Assert.Equal(frame.Length, whole.Length);
    }

    [Theory]
    [InlineData("1H", 3600_000)]
    [InlineData("2M", 120_000)]
    [InlineData("30S", 30_000)]
    [InlineData("1500m", 1500)]
    [InlineData("2000u", 2)]
    [InlineData("3000000n", 3)]
    public void TryParseTimeout_Units_Parsed(string text, int milliseconds)
    {
        Assert.True(GrpcProtocol.TryParseTimeout(text, out var timeout));
        Assert.Equal(TimeSpan.FromMilliseconds(milliseconds), timeout);
    }

    [Theory]
    [InlineData("")]
    [InlineData("S")]
    [InlineData("123456789S")]
    [InlineData("10x")]
    [InlineData("-1S")]
    public void TryParseTimeout_Invalid_False(string text) => Assert.False(GrpcProtocol.TryParseTimeout(text, out _));

    [Fact]
    public void EncodeMessage_NonAsciiAndPercent_RoundTrip()
    {
        const string message = "shard moved: 100% → pod-2\n";
        var encoded = GrpcProtocol.EncodeMessage(message);
        Assert.DoesNotContain('→', encoded);
        Assert.Contains("%25", encoded, StringComparison.Ordinal);
        Assert.Equal(message, GrpcProtocol.DecodeMessage(encoded));
    }
}

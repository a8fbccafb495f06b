using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using Microsoft.AspNetCore.Connections;
using Sharding.Sidecar.Hosting;

namespace Sharding.Sidecar.Tests.Hosting;

/// <summary>The queue between Kestrel's HTTP/2 frame writer and the socket: order, completion, backpressure, failure.</summary>
public sealed class QueuedOutputTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task Flushes_ArriveInOrder_AndCompletingTheWriterCompletesTheSocketOutputAfterTheLastByte()
    {
        var socket = new Pipe();
        var output = QueuedOutput.Wrap(new Transport(new Pipe().Reader, socket.Writer), pool: null);
        var expected = new StringBuilder();
        for (var i = 0; i < 200; i++)
        {
            var frame = $"frame-{i};";
            expected.Append(frame);
            await output.Output.WriteAsync(Encoding.ASCII.GetBytes(frame));
        }

        await output.Output.CompleteAsync();
        var received = await ReadToEndAsync(socket.Reader);
        await output.Sending.WaitAsync(Timeout);

        Assert.Equal(expected.ToString(), Encoding.ASCII.GetString(received));
    }

    [Fact]
    public async Task InputIsTheTransportsOwn()
    {
        var input = new Pipe();
        var output = QueuedOutput.Wrap(new Transport(input.Reader, new Pipe().Writer), pool: null);
        Assert.Same(input.Reader, output.Input);
        await output.Output.CompleteAsync();
        await output.Sending.WaitAsync(Timeout);
    }

    [Fact]
    public async Task ASocketThatTakesNothing_HoldsTheWriterBack_UntilItReadsAgain()
    {
        // The socket's own output pauses at 64 KiB, as Kestrel's does.
        var socket = new Pipe(new PipeOptions(pauseWriterThreshold: 64 * 1024, resumeWriterThreshold: 32 * 1024, useSynchronizationContext: false));
        var output = QueuedOutput.Wrap(new Transport(new Pipe().Reader, socket.Writer), pool: null);
        var chunk = new byte[16 * 1024];
        long written = 0;
        ValueTask<FlushResult> flush;

        // Bounded: the two 64 KiB thresholds stop the writer well before 1 MiB.
        while (true)
        {
            flush = output.Output.WriteAsync(chunk);
            written += chunk.Length;
            if (!flush.IsCompleted)
            {
                await Task.Delay(50);
                if (!flush.IsCompleted)
                {
                    break;
                }
            }

            Assert.True(written < 1024 * 1024, "the writer was never held back");
        }

        Assert.InRange(written, QueuedOutput.PauseBytes, 4 * QueuedOutput.PauseBytes);
        var drain = ReadToEndAsync(socket.Reader);
        var result = await flush.AsTask().WaitAsync(Timeout);
        Assert.False(result.IsCompleted);
        await output.Output.CompleteAsync();
        Assert.Equal(written, (await drain.WaitAsync(Timeout)).Length);
    }

    [Fact]
    public async Task WhenTheSocketIsGone_TheWritersNextFlushSaysCompleted()
    {
        var socket = new Pipe();
        var output = QueuedOutput.Wrap(new Transport(new Pipe().Reader, socket.Writer), pool: null);
        await socket.Reader.CompleteAsync(); // the transport stopped sending (connection closed)

        await output.Output.WriteAsync(new byte[100]);
        await output.Sending.WaitAsync(Timeout);
        var next = await output.Output.WriteAsync(new byte[100]).AsTask().WaitAsync(Timeout);

        Assert.True(next.IsCompleted);
    }

    [Fact]
    public async Task WhenTheSocketFails_TheErrorReachesTheWriterAndTheSocketOutputIsCompleted()
    {
        var failing = new FailingWriter();
        var output = QueuedOutput.Wrap(new Transport(new Pipe().Reader, failing), pool: null);

        await output.Output.WriteAsync(new byte[10]);
        await output.Sending.WaitAsync(Timeout);

        Assert.True(failing.Completed);
        Assert.IsType<IOException>(failing.CompletedWith);

        // As with Kestrel's own socket output: the writer's next write fails with the socket's error.
        await Assert.ThrowsAsync<IOException>(() => output.Output.WriteAsync(new byte[10]).AsTask().WaitAsync(Timeout));
    }

    [Fact]
    public async Task AClientThatStopsReading_DoesNotHoldTheConnectionOnceKestrelIsDone()
    {
        // The socket's output is full and nobody reads it; aborting the connection ends it, as Kestrel's socket abort does.
        var socket = new Pipe(new PipeOptions(pauseWriterThreshold: 1024, resumeWriterThreshold: 512, useSynchronizationContext: false));
        await using var connection = new DefaultConnectionContext("stuck") { Transport = new Transport(new Pipe().Reader, socket.Writer) };
        connection.ConnectionClosed.Register(() => socket.Reader.Complete());
        var kestrelDone = new TaskCompletionSource();

        var run = QueuedOutput.RunAsync(connection, async c =>
        {
            await c.Transport.Output.WriteAsync(new byte[32 * 1024]); // held in the queue: under its 64 KiB threshold
            await c.Transport.Output.CompleteAsync();
            kestrelDone.SetResult();
        }, lastBytesTimeout: TimeSpan.FromMilliseconds(200));

        await kestrelDone.Task.WaitAsync(Timeout);
        Assert.False(connection.ConnectionClosed.IsCancellationRequested);
        await run.WaitAsync(Timeout);
        Assert.True(connection.ConnectionClosed.IsCancellationRequested);
    }

    [Fact]
    public async Task AClientThatReads_GetsTheLastBytes_AndTheConnectionIsNotAborted()
    {
        var socket = new Pipe();
        await using var connection = new DefaultConnectionContext("reads") { Transport = new Transport(new Pipe().Reader, socket.Writer) };
        var received = ReadToEndAsync(socket.Reader);

        await QueuedOutput.RunAsync(connection, async c =>
        {
            await c.Transport.Output.WriteAsync(new byte[200 * 1024]);
            await c.Transport.Output.CompleteAsync();
        }).WaitAsync(Timeout);

        Assert.Equal(200 * 1024, (await received).Length);
        Assert.False(connection.ConnectionClosed.IsCancellationRequested);
    }

    private static async Task<byte[]> ReadToEndAsync(PipeReader reader)
    {
        using var all = new MemoryStream();

        // Bounded by the writer completing (the tests complete it).
        while (true)
        {
            var read = await reader.ReadAsync().AsTask().WaitAsync(Timeout);
            foreach (var segment in read.Buffer)
            {
                all.Write(segment.Span);
            }

            reader.AdvanceTo(read.Buffer.End);
            if (read.IsCompleted)
            {
                return all.ToArray();
            }
        }
    }

    private sealed class Transport(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }

    /// <summary>A socket output whose flush fails as a reset connection's does.</summary>
    private sealed class FailingWriter : PipeWriter
    {
        private readonly ArrayBufferWriter<byte> _buffer = new();

        public bool Completed { get; private set; }

        public Exception? CompletedWith { get; private set; }

        public override void Advance(int bytes) => _buffer.Advance(bytes);

        public override Memory<byte> GetMemory(int sizeHint = 0) => _buffer.GetMemory(sizeHint);

        public override Span<byte> GetSpan(int sizeHint = 0) => _buffer.GetSpan(sizeHint);

        public override void CancelPendingFlush()
        {
        }

        public override void Complete(Exception? exception = null)
        {
            Completed = true;
            CompletedWith = exception;
        }

        public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default) =>
            ValueTask.FromException<FlushResult>(new IOException("connection reset by peer"));
    }
}

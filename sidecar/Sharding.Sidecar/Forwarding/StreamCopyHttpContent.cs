using System.Net;

namespace Sharding.Sidecar.Forwarding;

/// <summary>
/// The outgoing request body: bytes already read for key extraction (the prefix) followed by the rest of the client's body,
/// streamed without buffering it whole. Records whether sending started (a retry is only safe before) and which side failed.
/// </summary>
internal sealed class StreamCopyHttpContent : HttpContent
{
    private readonly Stream _source;
    private readonly ReadOnlyMemory<byte> _prefix;
    private readonly bool _autoFlush;
    private readonly ActivityTimeout? _activity;
    private readonly CancellationToken _cancellationToken;
    private int _started;

    public StreamCopyHttpContent(Stream source, ReadOnlyMemory<byte> prefix, bool autoFlush, ActivityTimeout? activity, CancellationToken cancellationToken)
    {
        _source = source;
        _prefix = prefix;
        _autoFlush = autoFlush;
        _activity = activity;
        _cancellationToken = cancellationToken;
    }

    /// <summary>Whether the handler began sending the body (a connect retry is no longer safe).</summary>
    public bool Started => Volatile.Read(ref _started) != 0;

    /// <summary>The copy's result once it ended.</summary>
    public StreamCopyResult Result { get; private set; } = StreamCopyResult.Success;

    /// <summary>Body bytes sent.</summary>
    public long BytesSent { get; private set; }

    /// <summary>Completes when the copy ended (or never started).</summary>
    public Task Completion => _completion.Task;

    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);

    protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
        SerializeToStreamAsync(stream, context, CancellationToken.None);

    protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _started, 1) != 0)
        {
            throw new InvalidOperationException("The request body can be sent once only.");
        }

        // The handler's token ends with the request; ours with the client. Either stops the copy.
        using var linked = cancellationToken.CanBeCanceled
            ? CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _cancellationToken)
            : null;
        var token = linked?.Token ?? _cancellationToken;
        try
        {
            if (!_prefix.IsEmpty)
            {
                await stream.WriteAsync(_prefix, token).ConfigureAwait(false);
                BytesSent += _prefix.Length;
            }

            var (result, bytes, error) = await StreamCopier.CopyAsync(_source, stream, _autoFlush, _activity, token).ConfigureAwait(false);
            BytesSent += bytes;
            Result = result;
            if (result != StreamCopyResult.Success)
            {
                // Tell the handler the body is incomplete so it does not end the upstream request as if whole.
                throw new IOException($"request body copy ended with {result}", error);
            }
        }
        finally
        {
            _completion.TrySetResult();
        }
    }

    protected override bool TryComputeLength(out long length)
    {
        length = -1;
        return false;
    }
}

using System.Net;

namespace Sharding.Client;

/// <summary>A request body whose first bytes were read to find the shard key: sends them, then the rest of the original stream.</summary>
/// <remarks>
/// With a rest it can be sent once, as the non-seekable <see cref="StreamContent"/> it replaces: a second send (a retry) throws
/// instead of sending the first bytes alone, a truncated body. Without one (the whole body was read) it replays any number of times.
/// </remarks>
internal sealed class ReplayContent : HttpContent
{
    private readonly byte[] _prefix;
    private readonly Stream? _rest;
    private readonly HttpContent _original;
    private int _sent;

    public ReplayContent(byte[] prefix, Stream? rest, HttpContent original)
    {
        _prefix = prefix;
        _rest = rest;
        _original = original;
        foreach (var header in original.Headers.NonValidated)
        {
            foreach (var value in header.Value)
            {
                Headers.TryAddWithoutValidation(header.Key, value);
            }
        }
    }

    protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
    {
        if (_rest is not null && Interlocked.Exchange(ref _sent, 1) != 0)
        {
            throw new InvalidOperationException("The stream was already consumed. It cannot be read again.");
        }

        await stream.WriteAsync(_prefix, cancellationToken).ConfigureAwait(false);
        if (_rest is not null)
        {
            await _rest.CopyToAsync(stream, cancellationToken).ConfigureAwait(false);
        }
    }

    protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
        SerializeToStreamAsync(stream, context, CancellationToken.None);

    protected override bool TryComputeLength(out long length)
    {
        if (_rest is null)
        {
            length = _prefix.Length;
            return true;
        }

        length = 0;
        return false;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _original.Dispose();
        }

        base.Dispose(disposing);
    }
}

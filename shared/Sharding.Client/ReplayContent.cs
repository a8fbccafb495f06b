using System.Net;

namespace Sharding.Client;

/// <summary>A request body whose first bytes were read to find the shard key: sends them, then the rest of the original stream.</summary>
internal sealed class ReplayContent : HttpContent
{
    private readonly byte[] _prefix;
    private readonly Stream? _rest;
    private readonly HttpContent _original;

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

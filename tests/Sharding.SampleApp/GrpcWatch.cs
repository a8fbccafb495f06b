using Google.Protobuf;
using Microsoft.Extensions.Options;
using Sharding.Protocol;

namespace Sharding.SampleApp;

/// <summary>
/// <c>sample.v1.Counter/Watch</c>: gRPC server streaming, hand-encoded protobuf (no .proto needed by clients of this test app):
/// <code>
/// message WatchRequest { string key = 1; }
/// message WatchEvent { string pod = 1; string key = 2; int64 value = 3; int64 generation = 4; }
/// </code>
/// The key comes from the request message, else the <c>x-shard-key</c> metadata (which the sidecar routes on). One event now,
/// then on every change of the key's counter or every heartbeat, until the client or the sidecar ends the call.
/// </summary>
internal static class GrpcWatch
{
    public const string Path = "/sample.v1.Counter/Watch";

    public static async Task HandleAsync(HttpContext context, CounterStore store, OwnershipChecker checker, IOptions<SampleAppOptions> options, TimeProvider time)
    {
        var response = context.Response;
        if (!GrpcProtocol.IsGrpcContentType(context.Request.ContentType))
        {
            response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
            return;
        }

        response.ContentType = "application/grpc";
        var token = context.RequestAborted;
        var key = await ReadKeyAsync(context.Request.Body, token).ConfigureAwait(false) ?? SampleEndpoints.KeyFromHeader(context);
        if (string.IsNullOrEmpty(key))
        {
            response.AppendTrailer("grpc-status", "3");
            response.AppendTrailer("grpc-message", "missing key");
            return;
        }

        var generation = SampleEndpoints.RoutedGeneration(context);
        await checker.CheckAsync(key, generation, token).ConfigureAwait(false);
        var pod = options.Value.PodName;
        try
        {
            // Bounded by the call: it ends when the client cancels or the sidecar drains it.
            while (!token.IsCancellationRequested)
            {
                var changed = store.NextChangeAsync(key);
                checker.RecordServed(key, generation);
                var frame = GrpcFrameWriter.Encode(Event(pod, key, store.Get(key), generation));
                await response.Body.WriteAsync(frame, token).ConfigureAwait(false);
                await response.Body.FlushAsync(token).ConfigureAwait(false);
                await Task.WhenAny(changed, Task.Delay(options.Value.WatchHeartbeat, time, token)).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            return;
        }

        response.AppendTrailer("grpc-status", "0");
    }

    private static async Task<string?> ReadKeyAsync(Stream body, CancellationToken cancellationToken)
    {
        using var buffer = new MemoryStream();
        await body.CopyToAsync(buffer, cancellationToken).ConfigureAwait(false);
        var bytes = buffer.ToArray();
        if (bytes.Length < 5)
        {
            return null;
        }

        var input = new CodedInputStream(bytes, 5, bytes.Length - 5);
        string? key = null;

        // Bounded by the message.
        uint tag;
        while ((tag = input.ReadTag()) != 0)
        {
            if (tag == 10)
            {
                key = input.ReadString();
            }
            else
            {
                input.SkipLastField();
            }
        }

        return key;
    }

    private static byte[] Event(string pod, string key, long value, long generation)
    {
        using var buffer = new MemoryStream();
        var output = new CodedOutputStream(buffer);
        output.WriteTag(1, WireFormat.WireType.LengthDelimited);
        output.WriteString(pod);
        output.WriteTag(2, WireFormat.WireType.LengthDelimited);
        output.WriteString(key);
        output.WriteTag(3, WireFormat.WireType.Varint);
        output.WriteInt64(value);
        output.WriteTag(4, WireFormat.WireType.Varint);
        output.WriteInt64(generation);
        output.Flush();
        return buffer.ToArray();
    }
}

using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http.Features;

namespace Sharding.Sidecar.Forwarding;

/// <summary>
/// A WebSocket over HTTP/2 (RFC 8441: extended CONNECT with <c>:protocol websocket</c>), which Kestrel announces with
/// SETTINGS_ENABLE_CONNECT_PROTOCOL. Upstream it becomes an RFC 6455 upgrade over HTTP/1.1, which needs a key of its own.
/// </summary>
internal static class Http2WebSocket
{
    public const string AcceptHeader = "sec-websocket-accept";

    /// <summary>RFC 6455 §1.3: the GUID appended to the key before hashing.</summary>
    private const string KeyGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

    /// <summary>The request's extended CONNECT feature when it is one (any protocol), else null.</summary>
    public static IHttpExtendedConnectFeature? Of(HttpContext context) =>
        context.Features.Get<IHttpExtendedConnectFeature>() is { IsExtendedConnect: true } feature ? feature : null;

    /// <summary>Whether an extended CONNECT asks for a protocol the sidecar can carry (only <c>websocket</c>).</summary>
    public static bool IsWebSocket(IHttpExtendedConnectFeature feature) =>
        string.Equals(feature.Protocol, "websocket", StringComparison.OrdinalIgnoreCase);

    /// <summary>Adds the HTTP/1.1 upgrade headers to the upstream request; returns the key it sent.</summary>
    public static string AddUpgradeHeaders(HttpRequestMessage message)
    {
        Span<byte> nonce = stackalloc byte[16];
        RandomNumberGenerator.Fill(nonce);
        var key = Convert.ToBase64String(nonce);
        message.Headers.Remove("sec-websocket-key");
        message.Headers.TryAddWithoutValidation("connection", "Upgrade");
        message.Headers.TryAddWithoutValidation("upgrade", "websocket");
        message.Headers.TryAddWithoutValidation("sec-websocket-key", key);
        if (!message.Headers.Contains("sec-websocket-version"))
        {
            message.Headers.TryAddWithoutValidation("sec-websocket-version", "13");
        }

        return key;
    }

    /// <summary>Whether the upstream's 101 carries the accept value for <paramref name="key"/> (RFC 6455 §4.2.2).</summary>
    public static bool IsAccepted(HttpResponseMessage response, string key)
    {
        if (!response.Headers.NonValidated.TryGetValues(AcceptHeader, out var values) || values.Count != 1)
        {
            return false;
        }

        return string.Equals(values.ToString(), ExpectedAccept(key), StringComparison.Ordinal);
    }

    /// <remarks>SHA-1 is what RFC 6455 prescribes here: a handshake check, not a security property.</remarks>
#pragma warning disable CA5350
    public static string ExpectedAccept(string key) => Convert.ToBase64String(SHA1.HashData(Encoding.ASCII.GetBytes(key + KeyGuid)));
#pragma warning restore CA5350
}

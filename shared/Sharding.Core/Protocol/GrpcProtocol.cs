using System.Globalization;
using System.Text;

namespace Sharding.Protocol;

/// <summary>Constants and small codecs of gRPC over HTTP/2 (grpc/doc/PROTOCOL-HTTP2.md) shared by our clients and servers.</summary>
public static class GrpcProtocol
{
    /// <summary>The request and response content type.</summary>
    public const string ContentType = "application/grpc";

    /// <summary>Whether a content type is gRPC's: <c>application/grpc</c> and its variants (<c>+proto</c>, <c>+json</c>, …), any case.</summary>
    /// <param name="contentType">The Content-Type value.</param>
    /// <returns>Whether it is a gRPC call or answer.</returns>
    public static bool IsGrpc(ReadOnlySpan<char> contentType) => contentType.StartsWith(ContentType, StringComparison.OrdinalIgnoreCase);

    /// <summary>Status trailer (or header, in a trailers-only response).</summary>
    public const string StatusHeader = "grpc-status";

    /// <summary>Percent-encoded status message trailer.</summary>
    public const string MessageHeader = "grpc-message";

    /// <summary>Deadline header, e.g. <c>30S</c>.</summary>
    public const string TimeoutHeader = "grpc-timeout";

    /// <summary>Message encoding header; we send and accept only <c>identity</c>.</summary>
    public const string EncodingHeader = "grpc-encoding";

    /// <summary>The 5-byte prefix: compressed flag + big-endian uint32 length.</summary>
    public const int FrameHeaderLength = 5;

    /// <summary>Default largest message accepted: 4 MiB, gRPC's default receive limit.</summary>
    public const int DefaultMaxMessageBytes = 4 * 1024 * 1024;

    /// <summary>The path of <c>sharding.v1.Assignments/Watch</c>.</summary>
    public const string WatchPath = "/sharding.v1.Assignments/Watch";

    /// <summary>Whether a content type is gRPC (<c>application/grpc</c> or <c>application/grpc+proto</c>).</summary>
    /// <param name="contentType">The header value.</param>
    /// <returns>True for gRPC.</returns>
    public static bool IsGrpcContentType(string? contentType) =>
        contentType is not null
        && contentType.StartsWith(ContentType, StringComparison.OrdinalIgnoreCase)
        && (contentType.Length == ContentType.Length || contentType[ContentType.Length] is '+' or ';');

    /// <summary>Parses a <c>grpc-timeout</c> value: 1–8 ASCII digits and a unit H, M, S, m (ms), u (µs) or n (ns).</summary>
    /// <param name="value">The header value.</param>
    /// <param name="timeout">The timeout on success.</param>
    /// <returns>Whether the value is valid.</returns>
    public static bool TryParseTimeout(ReadOnlySpan<char> value, out TimeSpan timeout)
    {
        timeout = default;
        if (value.Length < 2 || value.Length > 9)
        {
            return false;
        }

        var digits = value[..^1];
        foreach (var c in digits)
        {
            if (c is < '0' or > '9')
            {
                return false;
            }
        }

        var amount = long.Parse(digits, NumberStyles.None, CultureInfo.InvariantCulture);
        timeout = value[^1] switch
        {
            'H' => TimeSpan.FromHours(amount),
            'M' => TimeSpan.FromMinutes(amount),
            'S' => TimeSpan.FromSeconds(amount),
            'm' => TimeSpan.FromMilliseconds(amount),
            'u' => TimeSpan.FromTicks(amount * 10),
            'n' => TimeSpan.FromTicks(amount / 100),
            _ => TimeSpan.MinValue,
        };
        return timeout != TimeSpan.MinValue;
    }

    /// <summary>Formats a timeout for <c>grpc-timeout</c> (milliseconds, or seconds when too large for 8 digits).</summary>
    /// <param name="timeout">The timeout (positive).</param>
    /// <returns>E.g. <c>1500m</c>.</returns>
    public static string FormatTimeout(TimeSpan timeout)
    {
        var ms = Math.Max(1, (long)Math.Ceiling(timeout.TotalMilliseconds));
        return ms < 100_000_000
            ? ms.ToString(CultureInfo.InvariantCulture) + "m"
            : Math.Min(99_999_999, (long)Math.Ceiling(timeout.TotalSeconds)).ToString(CultureInfo.InvariantCulture) + "S";
    }

    /// <summary>Percent-encodes a status message as <c>grpc-message</c> requires: UTF-8, every byte outside 0x20–0x7E and '%' as %XX.</summary>
    /// <param name="message">The message.</param>
    /// <returns>The header value.</returns>
    public static string EncodeMessage(string message)
    {
        ArgumentNullException.ThrowIfNull(message);
        if (!message.AsSpan().ContainsAnyExceptInRange(' ', '~') && !message.Contains('%', StringComparison.Ordinal))
        {
            return message; // nothing to escape: no copy (the sidecar's error path)
        }

        var bytes = Encoding.UTF8.GetBytes(message);
        var text = new StringBuilder(bytes.Length);
        foreach (var b in bytes)
        {
            if (b is >= 0x20 and <= 0x7E and not (byte)'%')
            {
                text.Append((char)b);
            }
            else
            {
                text.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
            }
        }

        return text.ToString();
    }

    /// <summary>Decodes a percent-encoded <c>grpc-message</c>; malformed escapes are kept as they are.</summary>
    /// <param name="value">The header value.</param>
    /// <returns>The message.</returns>
    public static string DecodeMessage(string? value)
    {
        if (string.IsNullOrEmpty(value) || !value.Contains('%', StringComparison.Ordinal))
        {
            return value ?? string.Empty;
        }

        var bytes = new List<byte>(value.Length);
        for (var i = 0; i < value.Length; i++)
        {
            if (value[i] == '%' && i + 2 < value.Length
                && byte.TryParse(value.AsSpan(i + 1, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var b))
            {
                bytes.Add(b);
                i += 2;
            }
            else
            {
                bytes.AddRange(Encoding.UTF8.GetBytes(value[i].ToString()));
            }
        }

        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    /// <summary>Parses a <c>grpc-status</c> value.</summary>
    /// <param name="value">The header value.</param>
    /// <param name="status">The status (Unknown when unparsable).</param>
    /// <returns>Whether a value was present.</returns>
    public static bool TryParseStatus(string? value, out GrpcStatusCode status)
    {
        status = GrpcStatusCode.Unknown;
        if (value is null)
        {
            return false;
        }

        if (int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var code) && code is >= 0 and <= 16)
        {
            status = (GrpcStatusCode)code;
        }

        return true;
    }
}

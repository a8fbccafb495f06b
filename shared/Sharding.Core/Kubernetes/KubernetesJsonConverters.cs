using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Sharding.Kubernetes;

/// <summary>A Kubernetes timestamp: RFC 3339 in UTC, written in one fixed format; reading accepts any RFC 3339 form.</summary>
/// <param name="format">The write format.</param>
public abstract class KubernetesTimestampConverter(string format) : JsonConverter<DateTimeOffset?>
{
    /// <inheritdoc />
    public override bool HandleNull => true;

    /// <inheritdoc />
    public override DateTimeOffset? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        reader.TokenType == JsonTokenType.Null ? null : DateTimeOffset.Parse(reader.GetString()!, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);

    /// <inheritdoc />
    public override void Write(Utf8JsonWriter writer, DateTimeOffset? value, JsonSerializerOptions options)
    {
        ArgumentNullException.ThrowIfNull(writer);
        if (value is { } time)
        {
            writer.WriteStringValue(time.UtcDateTime.ToString(format, CultureInfo.InvariantCulture));
        }
        else
        {
            writer.WriteNullValue();
        }
    }
}

/// <summary>
/// <c>metav1.MicroTime</c>: RFC 3339 in UTC with exactly six fractional digits (<c>2026-11-21T23:23:54.816248Z</c>).
/// </summary>
/// <remarks>
/// The apiserver rejects any other precision with 400 while decoding: seven digits (what .NET's <c>"o"</c> writes) and no
/// fraction both fail (fixtures <c>leases/09</c>, <c>leases/10</c>).
/// </remarks>
public sealed class MicroTimeConverter() : KubernetesTimestampConverter(Format)
{
    /// <summary>The write format.</summary>
    public const string Format = "yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'";

    /// <summary>Formats a time as MicroTime.</summary>
    /// <param name="value">The time.</param>
    /// <returns>The text.</returns>
    public static string ToText(DateTimeOffset value) => value.UtcDateTime.ToString(Format, CultureInfo.InvariantCulture);
}

/// <summary><c>metav1.Time</c>: RFC 3339 in UTC, whole seconds (<c>2026-11-21T23:23:54Z</c>).</summary>
public sealed class KubernetesTimeConverter() : KubernetesTimestampConverter(Format)
{
    /// <summary>The write format.</summary>
    public const string Format = "yyyy-MM-dd'T'HH:mm:ss'Z'";

    /// <summary>Formats a time as <c>metav1.Time</c>.</summary>
    /// <param name="value">The time.</param>
    /// <returns>The text.</returns>
    public static string ToText(DateTimeOffset value) => value.UtcDateTime.ToString(Format, CultureInfo.InvariantCulture);
}

/// <summary>Bytes as a base64 string (the AdmissionResponse <c>patch</c>).</summary>
public sealed class Base64BytesConverter : JsonConverter<byte[]?>
{
    /// <inheritdoc />
    public override bool HandleNull => true;

    /// <inheritdoc />
    public override byte[]? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        reader.TokenType == JsonTokenType.Null ? null : reader.GetBytesFromBase64();

    /// <inheritdoc />
    public override void Write(Utf8JsonWriter writer, byte[]? value, JsonSerializerOptions options)
    {
        ArgumentNullException.ThrowIfNull(writer);
        if (value is null)
        {
            writer.WriteNullValue();
        }
        else
        {
            writer.WriteBase64StringValue(value);
        }
    }
}

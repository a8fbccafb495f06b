using System.Text.Json;
using Sharding.Kubernetes;

namespace Sharding.ControlPlane.Injection;

/// <summary>Maps <c>POST /mutate</c>, the sidecar-injection webhook.</summary>
internal static partial class SidecarInjectionEndpoints
{
    /// <summary>Bodies above this are refused: a Pod AdmissionReview is a few KiB; the apiserver's own limit is 3 MiB.</summary>
    private const int MaxBodyBytes = 3 * 1024 * 1024;

    /// <summary>Maps the webhook; with <paramref name="localPort"/>, only connections accepted on that port reach it (others get 404).</summary>
    /// <remarks>
    /// The restriction is on the socket's local port, not the Host header: the API server calls
    /// <c>https://&lt;service&gt;.&lt;namespace&gt;.svc:&lt;service port&gt;/mutate</c>, so its Host names the Service port (443 in
    /// manifests/base), which the Service maps to the webhook's container port (8443). A Host-based match (<c>RequireHost("*:8443")</c>)
    /// would turn every real admission request away.
    /// </remarks>
    public static IEndpointConventionBuilder MapSidecarInjection(this IEndpointRouteBuilder endpoints, int? localPort = null) =>
        endpoints.MapPost("/mutate", (HttpContext context, SidecarInjector injector, ILoggerFactory loggers) =>
        {
            if (localPort is { } port && context.Connection.LocalPort != port)
            {
                context.Response.StatusCode = StatusCodes.Status404NotFound;
                return Task.CompletedTask;
            }

            return HandleAsync(context, injector, loggers);
        });

    private static async Task HandleAsync(HttpContext context, SidecarInjector injector, ILoggerFactory loggers)
    {
        var logger = loggers.CreateLogger(typeof(SidecarInjectionEndpoints).FullName!);
        using var buffer = new MemoryStream();
        if (context.Request.ContentLength > MaxBodyBytes || !await TryReadAsync(context.Request.Body, buffer, context.RequestAborted).ConfigureAwait(false))
        {
            // Refused once the limit is passed, not after reading the rest (Kestrel alone would buffer up to 30 MB).
            context.Response.StatusCode = StatusCodes.Status413PayloadTooLarge;
            context.Response.ContentType = "text/plain; charset=utf-8";
            await context.Response.WriteAsync($"the AdmissionReview is larger than {MaxBodyBytes} bytes", context.RequestAborted).ConfigureAwait(false);
            return;
        }

        var result = injector.Review(buffer.GetBuffer().AsSpan(0, (int)buffer.Length));
        if (result.StatusCode != StatusCodes.Status200OK)
        {
            LogMalformed(logger, result.Error!);
            context.Response.StatusCode = result.StatusCode;
            context.Response.ContentType = "text/plain; charset=utf-8";
            await context.Response.WriteAsync(result.Error!, context.RequestAborted).ConfigureAwait(false);
            return;
        }

        var response = result.Review!.Response!;
        LogReviewed(logger, response.Uid, response.Allowed, response.Patch is not null);
        context.Response.ContentType = "application/json";
        await JsonSerializer.SerializeAsync(context.Response.Body, result.Review, KubernetesJsonContext.Default.AdmissionReview, context.RequestAborted).ConfigureAwait(false);
    }

    /// <summary>Copies the body, at most <see cref="MaxBodyBytes"/>; false when there is more.</summary>
    private static async Task<bool> TryReadAsync(Stream body, MemoryStream buffer, CancellationToken cancellationToken)
    {
        var chunk = new byte[16 * 1024];
        int read;
        while ((read = await body.ReadAsync(chunk, cancellationToken).ConfigureAwait(false)) > 0)
        {
            if (buffer.Length + read > MaxBodyBytes)
            {
                return false;
            }

            buffer.Write(chunk, 0, read);
        }

        return true;
    }

    [LoggerMessage(EventId = 911, EventName = "AdmissionReviewed", Level = LogLevel.Debug, Message = "Admission {Uid}: allowed {Allowed}, patched {Patched}")]
    private static partial void LogReviewed(ILogger logger, string uid, bool allowed, bool patched);

    [LoggerMessage(EventId = 912, EventName = "AdmissionMalformed", Level = LogLevel.Warning, Message = "Malformed admission request: {Error}")]
    private static partial void LogMalformed(ILogger logger, string error);
}

using System.Text.Json;
using Sharding.Kubernetes;

namespace Sharding.ControlPlane.Injection;

/// <summary>Maps <c>POST /mutate</c>, the sidecar-injection webhook.</summary>
internal static partial class SidecarInjectionEndpoints
{
    /// <summary>Bodies above this are refused: a Pod AdmissionReview is a few KiB; the apiserver's own limit is 3 MiB.</summary>
    private const int MaxBodyBytes = 3 * 1024 * 1024;

    public static IEndpointConventionBuilder MapSidecarInjection(this IEndpointRouteBuilder endpoints, string? requireHost = null)
    {
        var builder = endpoints.MapPost("/mutate", HandleAsync);
        return requireHost is null ? builder : builder.RequireHost(requireHost);
    }

    private static async Task HandleAsync(HttpContext context, SidecarInjector injector, ILoggerFactory loggers)
    {
        var logger = loggers.CreateLogger(typeof(SidecarInjectionEndpoints).FullName!);
        using var buffer = new MemoryStream();
        await context.Request.Body.CopyToAsync(buffer, context.RequestAborted).ConfigureAwait(false);
        if (buffer.Length > MaxBodyBytes)
        {
            context.Response.StatusCode = StatusCodes.Status413PayloadTooLarge;
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

    [LoggerMessage(EventId = 911, EventName = "AdmissionReviewed", Level = LogLevel.Debug, Message = "Admission {Uid}: allowed {Allowed}, patched {Patched}")]
    private static partial void LogReviewed(ILogger logger, string uid, bool allowed, bool patched);

    [LoggerMessage(EventId = 912, EventName = "AdmissionMalformed", Level = LogLevel.Warning, Message = "Malformed admission request: {Error}")]
    private static partial void LogMalformed(ILogger logger, string error);
}

namespace Sharding.Sidecar.Forwarding;

/// <summary>The words of the sidecar's own answers to a failed forward, one text for the full path and the fast path.</summary>
internal static class ForwardFailureText
{
    public static string Who(Sharding.Mapping.ShardMember owner, bool isLocal) =>
        isLocal ? "this pod's app" : $"owner {owner.Name} ({owner.Address})";

    public static string Unavailable(string who) => $"{who} is unavailable; the key is not moved to another pod, retry later";

    public static string TimedOut(string who, TimeSpan timeout) => $"{who} did not answer within {timeout}";

    public static string Failed(string who, string what) => $"forwarding to {who} failed: {what}";
}

/// <summary>What went wrong while forwarding, and so who is to blame; <see cref="None"/> when it went well.</summary>
internal enum ForwarderError
{
    /// <summary>No error.</summary>
    None = 0,

    /// <summary>The upstream could not be reached or failed before answering (502).</summary>
    Request,

    /// <summary>The upstream did not send response headers in time (504).</summary>
    RequestTimedOut,

    /// <summary>The client went away before the response started.</summary>
    RequestCanceled,

    /// <summary>Reading the client's request body failed (400 if the response has not started).</summary>
    RequestBodyClient,

    /// <summary>Sending the request body upstream failed (502).</summary>
    RequestBodyDestination,

    /// <summary>Reading the upstream's response body failed: the response is cut, so the client's stream is reset.</summary>
    ResponseBodyDestination,

    /// <summary>Writing the response to the client failed (the client went away).</summary>
    ResponseBodyClient,

    /// <summary>The body was idle longer than the activity timeout.</summary>
    ActivityTimedOut,

    /// <summary>The owner is down: connects failed after retries, or its circuit is open (503 + Retry-After).</summary>
    OwnerUnavailable,

    /// <summary>A protocol upgrade (WebSocket) failed after the 101.</summary>
    Upgrade,

    /// <summary>The upstream's response headers or trailers hold a value the client's server will not send (502 before the
    /// response started; a reset after).</summary>
    ResponseHeaders,
}

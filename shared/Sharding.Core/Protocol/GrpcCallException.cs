namespace Sharding.Protocol;

/// <summary>A gRPC call that ended with a non-OK status, or a framing error mapped to one.</summary>
public sealed class GrpcCallException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="statusCode">The status.</param>
    /// <param name="detail">The status message (<c>grpc-message</c>, decoded).</param>
    /// <param name="innerException">The cause, if any.</param>
    public GrpcCallException(GrpcStatusCode statusCode, string detail, Exception? innerException = null)
        : base($"gRPC status {statusCode} ({(int)statusCode}): {detail}", innerException)
    {
        StatusCode = statusCode;
        Detail = detail;
    }

    /// <summary>Creates an <see cref="GrpcStatusCode.Unknown"/> exception.</summary>
    public GrpcCallException()
        : this(GrpcStatusCode.Unknown, "unknown error")
    {
    }

    /// <summary>Creates an <see cref="GrpcStatusCode.Unknown"/> exception.</summary>
    /// <param name="message">The detail.</param>
    public GrpcCallException(string message)
        : this(GrpcStatusCode.Unknown, message)
    {
    }

    /// <summary>Creates an <see cref="GrpcStatusCode.Unknown"/> exception.</summary>
    /// <param name="message">The detail.</param>
    /// <param name="innerException">The cause.</param>
    public GrpcCallException(string message, Exception innerException)
        : this(GrpcStatusCode.Unknown, message, innerException)
    {
    }

    /// <summary>The status code.</summary>
    public GrpcStatusCode StatusCode { get; }

    /// <summary>The status message.</summary>
    public string Detail { get; }
}

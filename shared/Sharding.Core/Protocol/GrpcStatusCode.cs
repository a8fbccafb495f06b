namespace Sharding.Protocol;

/// <summary>gRPC status codes (<c>grpc-status</c> trailer), as in grpc/doc/statuscodes.md.</summary>
public enum GrpcStatusCode
{
    /// <summary>Success.</summary>
    OK = 0,

    /// <summary>The operation was cancelled, typically by the caller.</summary>
    Cancelled = 1,

    /// <summary>Unknown error.</summary>
    Unknown = 2,

    /// <summary>The client specified an invalid argument.</summary>
    InvalidArgument = 3,

    /// <summary>The deadline (<c>grpc-timeout</c>) expired.</summary>
    DeadlineExceeded = 4,

    /// <summary>Something requested was not found (e.g. an unknown sharded service).</summary>
    NotFound = 5,

    /// <summary>Already exists.</summary>
    AlreadyExists = 6,

    /// <summary>Permission denied.</summary>
    PermissionDenied = 7,

    /// <summary>A resource ran out, e.g. a message above the size limit.</summary>
    ResourceExhausted = 8,

    /// <summary>The system is not in a state required for the operation.</summary>
    FailedPrecondition = 9,

    /// <summary>Aborted.</summary>
    Aborted = 10,

    /// <summary>Out of range.</summary>
    OutOfRange = 11,

    /// <summary>Not implemented or not supported (e.g. message compression).</summary>
    Unimplemented = 12,

    /// <summary>Internal error: the protocol's invariants are broken.</summary>
    Internal = 13,

    /// <summary>The service is currently unavailable (shutting down, not reachable); retry, maybe elsewhere.</summary>
    Unavailable = 14,

    /// <summary>Unrecoverable data loss or corruption.</summary>
    DataLoss = 15,

    /// <summary>No valid authentication credentials.</summary>
    Unauthenticated = 16,
}

using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Runtime.CompilerServices;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace Sharding.Kubernetes;

/// <summary>The outcome of a write that may lose an optimistic-concurrency race.</summary>
/// <typeparam name="T">The object kind.</typeparam>
public sealed class KubernetesWriteResult<T>
    where T : class
{
    internal KubernetesWriteResult(T? value, Status? conflict)
    {
        Value = value;
        Conflict = conflict;
    }

    /// <summary>The object as stored, when the write succeeded.</summary>
    public T? Value { get; }

    /// <summary>The 409 Status (Conflict on a stale resourceVersion, AlreadyExists on create), when the race was lost.</summary>
    public Status? Conflict { get; }

    /// <summary>Whether the write lost the race (409).</summary>
    public bool IsConflict => Conflict is not null;
}

/// <summary>
/// A small typed Kubernetes REST client over <see cref="HttpClient"/> and source-generated JSON: Leases, Pods (list and
/// watch), MutatingWebhookConfigurations (get, caBundle patch). Errors arrive as <see cref="KubernetesApiException"/>
/// carrying the server's <see cref="Status"/>; 404 on get and 409 on writes are values, not exceptions. A 429 or 5xx with
/// <c>Retry-After</c> is sent again after that delay, up to 10 times and within <see cref="RequestTimeout"/>, as client-go does.
/// </summary>
public sealed class KubernetesClient : IDisposable
{
    private const string CoordinationGroup = "coordination.k8s.io";
    private const string AdmissionRegistrationGroup = "admissionregistration.k8s.io";

    /// <summary>How many times a request answered 429 or 5xx with <c>Retry-After</c> is sent again: 10, as client-go.</summary>
    private const int MaxRetries = 10;
    private static readonly MediaTypeHeaderValue JsonMediaType = new("application/json");
    private readonly HttpClient _http;
    private readonly KubernetesClientConfiguration _configuration;
    private readonly bool _disposeHttp;

    /// <summary>Creates a client with its own TLS-configured handler.</summary>
    /// <param name="configuration">Where the server is and how to authenticate.</param>
    public KubernetesClient(KubernetesClientConfiguration configuration)
        : this(configuration, CreateHandler(configuration), disposeHandler: true)
    {
    }

    /// <summary>Creates a client over a given handler (tests).</summary>
    /// <param name="configuration">Where the server is and how to authenticate.</param>
    /// <param name="handler">The handler.</param>
    /// <param name="disposeHandler">Whether disposing the client disposes the handler.</param>
    public KubernetesClient(KubernetesClientConfiguration configuration, HttpMessageHandler handler, bool disposeHandler)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        _configuration = configuration;
        _http = new HttpClient(handler, disposeHandler)
        {
            BaseAddress = configuration.Server,

            // Watches stay open for minutes; each non-watch call gets its own RequestTimeout instead.
            Timeout = Timeout.InfiniteTimeSpan,
        };
        _http.DefaultRequestHeaders.Accept.Add(new MediaTypeWithQualityHeaderValue("application/json"));
        _http.DefaultRequestHeaders.UserAgent.Add(new ProductInfoHeaderValue("sharding", "1.0"));
        _disposeHttp = true;
    }

    /// <summary>The configuration in use.</summary>
    public KubernetesClientConfiguration Configuration => _configuration;

    /// <summary>Timeout for one non-watch request.</summary>
    /// <value>30 seconds: an apiserver answers a get or update in milliseconds; longer means it is unreachable.</value>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Builds the handler: CA bundle validation, client certificate, no proxy.</summary>
    /// <param name="configuration">The configuration.</param>
    /// <returns>The handler.</returns>
    public static SocketsHttpHandler CreateHandler(KubernetesClientConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        var handler = new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            UseCookies = false,
            ConnectTimeout = TimeSpan.FromSeconds(10),
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
        };
        if (configuration.ClientCertificate is { } clientCertificate)
        {
            handler.SslOptions.ClientCertificates = [clientCertificate];
        }

        if (configuration.SkipTlsVerify)
        {
#pragma warning disable CA5359 // The user asked for it in the kubeconfig (insecure-skip-tls-verify: true), as kubectl honours it.
            handler.SslOptions.RemoteCertificateValidationCallback = static (_, _, _, _) => true;
#pragma warning restore CA5359
        }
        else if (configuration.CertificateAuthorities is { Count: > 0 } authorities)
        {
            handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
                ValidateAgainst(authorities, certificate, errors);
        }

        return handler;
    }

    /// <summary>
    /// Validates a server certificate against a private CA bundle only (the cluster CA), ignoring the system store, and still
    /// requiring the host name to match.
    /// </summary>
    /// <param name="authorities">Trusted roots.</param>
    /// <param name="certificate">The server's certificate.</param>
    /// <param name="errors">What the default validation found.</param>
    /// <returns>Whether to trust the server.</returns>
    public static bool ValidateAgainst(X509Certificate2Collection authorities, X509Certificate? certificate, SslPolicyErrors errors)
    {
        ArgumentNullException.ThrowIfNull(authorities);
        if (certificate is null || (errors & (SslPolicyErrors.RemoteCertificateNotAvailable | SslPolicyErrors.RemoteCertificateNameMismatch)) != 0)
        {
            return false;
        }

        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(authorities);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        using var serverCertificate = new X509Certificate2(certificate);
        return chain.Build(serverCertificate);
    }

    // ---- Leases ----

    /// <summary>GET a Lease; null when it does not exist (404).</summary>
    /// <param name="namespaceName">Namespace.</param>
    /// <param name="name">Lease name.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The Lease or null.</returns>
    public async Task<Lease?> GetLeaseAsync(string namespaceName, string name, CancellationToken cancellationToken)
    {
        var path = $"/apis/{CoordinationGroup}/v1/namespaces/{Escape(namespaceName)}/leases/{Escape(name)}";
        return await SendAsync(HttpMethod.Get, path, null, null, KubernetesJsonContext.Default.Lease,
            new CallContext("get", "leases", CoordinationGroup, namespaceName), notFoundIsNull: true, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>POST a Lease; 409 AlreadyExists comes back as a lost race.</summary>
    /// <param name="lease">The Lease (its namespace in metadata).</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The stored Lease or the conflict.</returns>
    public Task<KubernetesWriteResult<Lease>> CreateLeaseAsync(Lease lease, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(lease);
        var ns = lease.Metadata.Namespace ?? throw new ArgumentException("lease.metadata.namespace is required", nameof(lease));
        var body = JsonSerializer.SerializeToUtf8Bytes(lease, KubernetesJsonContext.Default.Lease);
        return WriteAsync(HttpMethod.Post, $"/apis/{CoordinationGroup}/v1/namespaces/{Escape(ns)}/leases", body, JsonMediaType,
            KubernetesJsonContext.Default.Lease, new CallContext("create", "leases", CoordinationGroup, ns), cancellationToken);
    }

    /// <summary>PUT a Lease with the resourceVersion it was read at; 409 Conflict (stale) comes back as a lost race.</summary>
    /// <param name="lease">The Lease, with <c>metadata.resourceVersion</c> set (leases refuse unconditional updates: 422).</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The stored Lease or the conflict.</returns>
    public Task<KubernetesWriteResult<Lease>> ReplaceLeaseAsync(Lease lease, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(lease);
        var ns = lease.Metadata.Namespace ?? throw new ArgumentException("lease.metadata.namespace is required", nameof(lease));
        var name = lease.Metadata.Name ?? throw new ArgumentException("lease.metadata.name is required", nameof(lease));
        var body = JsonSerializer.SerializeToUtf8Bytes(lease, KubernetesJsonContext.Default.Lease);
        return WriteAsync(HttpMethod.Put, $"/apis/{CoordinationGroup}/v1/namespaces/{Escape(ns)}/leases/{Escape(name)}", body, JsonMediaType,
            KubernetesJsonContext.Default.Lease, new CallContext("update", "leases", CoordinationGroup, ns), cancellationToken);
    }

    // ---- Pods ----

    /// <summary>Lists pods (all pages), in one namespace or cluster-wide.</summary>
    /// <param name="namespaceName">Namespace, or null for all namespaces.</param>
    /// <param name="labelSelector">Label selector, e.g. <c>sharding.dev/service</c> or <c>app=x,tier!=db</c>.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The pods and the list's resourceVersion (start a watch from it).</returns>
    public async Task<PodList> ListPodsAsync(string? namespaceName, string? labelSelector, CancellationToken cancellationToken)
    {
        var items = new List<Pod>();
        string? continueToken = null;
        PodList page;
        do
        {
            var query = new QueryBuilder().Add("labelSelector", labelSelector).Add("limit", "500").Add("continue", continueToken);
            page = (await SendAsync(HttpMethod.Get, PodsPath(namespaceName) + query, null, null, KubernetesJsonContext.Default.PodList,
                new CallContext("list", "pods", string.Empty, namespaceName), notFoundIsNull: false, cancellationToken).ConfigureAwait(false))!;
            items.AddRange(page.Items);
            continueToken = page.Metadata.Continue;
        }
        while (!string.IsNullOrEmpty(continueToken));

        return page with { Items = items, Metadata = page.Metadata with { Continue = null } };
    }

    /// <summary>Watches pods: newline-delimited JSON events read as they arrive.</summary>
    /// <param name="namespaceName">Namespace, or null for all namespaces.</param>
    /// <param name="labelSelector">Label selector.</param>
    /// <param name="resourceVersion">Deliver changes after this version (from a list or the last event).</param>
    /// <param name="allowWatchBookmarks">Ask for BOOKMARK events.</param>
    /// <param name="timeoutSeconds">The server ends the stream after this long.</param>
    /// <param name="cancellationToken">Cancels the watch.</param>
    /// <returns>Events until the server ends the stream.</returns>
    public IAsyncEnumerable<WatchEvent<Pod>> WatchPodsAsync(
        string? namespaceName, string? labelSelector, string? resourceVersion, bool allowWatchBookmarks, int? timeoutSeconds,
        CancellationToken cancellationToken)
    {
        var query = new QueryBuilder()
            .Add("watch", "1")
            .Add("labelSelector", labelSelector)
            .Add("resourceVersion", resourceVersion)
            .Add("allowWatchBookmarks", allowWatchBookmarks ? "true" : null)
            .Add("timeoutSeconds", timeoutSeconds?.ToString(System.Globalization.CultureInfo.InvariantCulture));
        // The server ends the stream at timeoutSeconds; one still open well after that sits on a dead connection (no FIN or
        // RST ever came, and HTTP/1.1 has no pings), so it is given up then with the request timeout's cancellation.
        TimeSpan? deadline = timeoutSeconds is > 0 ? TimeSpan.FromSeconds(timeoutSeconds.Value) + RequestTimeout : null;
        return WatchAsync(PodsPath(namespaceName) + query, KubernetesJsonContext.Default.Pod,
            new CallContext("watch", "pods", string.Empty, namespaceName), deadline, cancellationToken);
    }

    // ---- MutatingWebhookConfigurations ----

    /// <summary>GET a MutatingWebhookConfiguration; null when missing.</summary>
    /// <param name="name">Its name.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The configuration or null.</returns>
    public Task<MutatingWebhookConfiguration?> GetMutatingWebhookConfigurationAsync(string name, CancellationToken cancellationToken) =>
        SendAsync(HttpMethod.Get, $"/apis/{AdmissionRegistrationGroup}/v1/mutatingwebhookconfigurations/{Escape(name)}", null, null,
            KubernetesJsonContext.Default.MutatingWebhookConfiguration,
            new CallContext("get", "mutatingwebhookconfigurations", AdmissionRegistrationGroup, null), notFoundIsNull: true, cancellationToken);

    /// <summary>
    /// Sets <c>clientConfig.caBundle</c> of every webhook in a configuration with one RFC 6902 patch guarded by a
    /// <c>test</c> of each webhook's name (so a concurrent edit that reorders webhooks fails instead of patching the wrong one).
    /// </summary>
    /// <param name="configuration">The configuration as read (names and count of webhooks).</param>
    /// <param name="caBundlePem">The PEM bundle; sent base64-encoded.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The patched configuration.</returns>
    public async Task<MutatingWebhookConfiguration> PatchWebhookCaBundleAsync(
        MutatingWebhookConfiguration configuration, string caBundlePem, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        var name = configuration.Metadata.Name ?? throw new ArgumentException("metadata.name is required", nameof(configuration));
        var encoded = Convert.ToBase64String(Encoding.UTF8.GetBytes(caBundlePem));
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartArray();
            var webhooks = configuration.Webhooks ?? [];
            for (var i = 0; i < webhooks.Count; i++)
            {
                writer.WriteStartObject();
                writer.WriteString("op", "test");
                writer.WriteString("path", $"/webhooks/{i}/name");
                writer.WriteString("value", webhooks[i].Name);
                writer.WriteEndObject();
                writer.WriteStartObject();

                // "add" replaces an existing member and creates a missing one (RFC 6902 §4.1); "replace" fails when absent.
                writer.WriteString("op", "add");
                writer.WriteString("path", $"/webhooks/{i}/clientConfig/caBundle");
                writer.WriteString("value", encoded);
                writer.WriteEndObject();
            }

            writer.WriteEndArray();
        }

        return (await SendAsync(HttpMethod.Patch, $"/apis/{AdmissionRegistrationGroup}/v1/mutatingwebhookconfigurations/{Escape(name)}",
            buffer.WrittenMemory.ToArray(), new MediaTypeHeaderValue("application/json-patch+json"),
            KubernetesJsonContext.Default.MutatingWebhookConfiguration,
            new CallContext("patch", "mutatingwebhookconfigurations", AdmissionRegistrationGroup, null), notFoundIsNull: false,
            cancellationToken).ConfigureAwait(false))!;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposeHttp)
        {
            _http.Dispose();
        }
    }

    /// <summary>Reads a Status from an error body, or makes one from the status line when the body is not a Status.</summary>
    /// <param name="code">HTTP status.</param>
    /// <param name="body">The body.</param>
    /// <returns>The Status.</returns>
    public static Status ParseStatus(HttpStatusCode code, byte[] body)
    {
        ArgumentNullException.ThrowIfNull(body);
        try
        {
            if (body.Length > 0 && JsonSerializer.Deserialize(body, KubernetesJsonContext.Default.Status) is { Kind: "Status" } status)
            {
                return status with { Code = status.Code ?? (int)code };
            }
        }
        catch (JsonException)
        {
            // Not JSON (a proxy's HTML error page, or a truncated body): fall through to the status line.
        }

        var text = Encoding.UTF8.GetString(body.AsSpan(0, Math.Min(body.Length, 512))).Trim();
        return new Status
        {
            Outcome = "Failure",
            Code = (int)code,
            Reason = code.ToString(),
            Message = text.Length > 0 ? text : $"{(int)code} {code}",
        };
    }

    private static string PodsPath(string? namespaceName) =>
        namespaceName is null ? "/api/v1/pods" : $"/api/v1/namespaces/{Escape(namespaceName)}/pods";

    private static string Escape(string segment) => Uri.EscapeDataString(segment);

    private async Task<KubernetesWriteResult<T>> WriteAsync<T>(
        HttpMethod method, string path, byte[] body, MediaTypeHeaderValue contentType, JsonTypeInfo<T> typeInfo, CallContext context,
        CancellationToken cancellationToken)
        where T : class
    {
        try
        {
            var value = await SendAsync(method, path, body, contentType, typeInfo, context, notFoundIsNull: false, cancellationToken).ConfigureAwait(false);
            return new KubernetesWriteResult<T>(value!, null);
        }
        catch (KubernetesApiException ex) when (ex.Code == (int)HttpStatusCode.Conflict)
        {
            return new KubernetesWriteResult<T>(null, ex.Status);
        }
    }

    private async Task<T?> SendAsync<T>(
        HttpMethod method, string path, byte[]? body, MediaTypeHeaderValue? contentType, JsonTypeInfo<T> typeInfo, CallContext context,
        bool notFoundIsNull, CancellationToken cancellationToken)
        where T : class
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(RequestTimeout);
        var started = Stopwatch.GetTimestamp();
        var reauthenticated = false;
        for (var retries = 0; ; retries++)
        {
            using var request = CreateRequest(method, path, body, contentType);
            using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseContentRead, timeout.Token).ConfigureAwait(false);
            if (response.IsSuccessStatusCode)
            {
                var stream = await response.Content.ReadAsStreamAsync(timeout.Token).ConfigureAwait(false);
                await using (stream.ConfigureAwait(false))
                {
                    return await JsonSerializer.DeserializeAsync(stream, typeInfo, timeout.Token).ConfigureAwait(false);
                }
            }

            if (response.StatusCode == HttpStatusCode.NotFound && notFoundIsNull)
            {
                return null;
            }

            if (response.StatusCode == HttpStatusCode.Unauthorized && !reauthenticated && _configuration.Token is { } token)
            {
                // The token may have rotated under us: read the file again and retry once.
                reauthenticated = true;
                token.Invalidate();
                continue;
            }

            var errorBody = await response.Content.ReadAsByteArrayAsync(timeout.Token).ConfigureAwait(false);
            if (RetryDelay(response, retries) is { } delay && Stopwatch.GetElapsedTime(started) + delay < RequestTimeout)
            {
                await Task.Delay(delay, timeout.Token).ConfigureAwait(false);
                continue;
            }

            throw new KubernetesApiException(ParseStatus(response.StatusCode, errorBody), context.Verb, context.Resource, context.Group, context.Namespace);
        }
    }

    /// <summary>
    /// client-go's <c>checkWait</c>: a 429 or any 5xx that carries <c>Retry-After</c> (seconds) is sent again after that delay, at
    /// most <see cref="MaxRetries"/> times (API Priority and Fairness sheds load with <c>429</c> + <c>Retry-After: 1</c>).
    /// </summary>
    private static TimeSpan? RetryDelay(HttpResponseMessage response, int retries) =>
        retries < MaxRetries && (response.StatusCode == HttpStatusCode.TooManyRequests || (int)response.StatusCode >= 500)
            && response.Headers.RetryAfter?.Delta is { } delay && delay >= TimeSpan.Zero
            ? delay
            : null;

    private async IAsyncEnumerable<WatchEvent<T>> WatchAsync<T>(
        string path, JsonTypeInfo<T> typeInfo, CallContext context, TimeSpan? deadline, [EnumeratorCancellation] CancellationToken callerToken)
        where T : class
    {
        HttpResponseMessage? response = null;
        using var expiry = CancellationTokenSource.CreateLinkedTokenSource(callerToken);
        if (deadline is { } d)
        {
            expiry.CancelAfter(d);
        }

        var cancellationToken = expiry.Token;
        try
        {
            var reauthenticated = false;
            for (var retries = 0; ; retries++)
            {
                using var request = CreateRequest(HttpMethod.Get, path, null, null);
                response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
                if (response.IsSuccessStatusCode)
                {
                    break;
                }

                var errorBody = await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
                var code = response.StatusCode;
                var retryDelay = RetryDelay(response, retries);
                response.Dispose();
                response = null;
                if (code == HttpStatusCode.Unauthorized && !reauthenticated && _configuration.Token is { } token)
                {
                    reauthenticated = true;
                    token.Invalidate();
                    continue;
                }

                if (retryDelay is { } delay)
                {
                    await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
                    continue;
                }

                throw new KubernetesApiException(ParseStatus(code, errorBody), context.Verb, context.Resource, context.Group, context.Namespace);
            }

            var stream = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
            await using (stream.ConfigureAwait(false))
            {
                // Split on newlines, never on chunks: a replay cuts events across chunks (fixture watch/07).
                using var reader = new StreamReader(stream, Encoding.UTF8);
                while (await reader.ReadLineAsync(cancellationToken).ConfigureAwait(false) is { } line)
                {
                    if (line.Length == 0)
                    {
                        continue;
                    }

                    yield return Decode(line, typeInfo);
                }
            }
        }
        finally
        {
            response?.Dispose();
        }
    }

    /// <summary>Decodes one watch line.</summary>
    /// <typeparam name="T">The watched kind.</typeparam>
    /// <param name="line">One JSON event.</param>
    /// <param name="typeInfo">The kind's JSON metadata.</param>
    /// <returns>The event.</returns>
    /// <exception cref="JsonException">The line is not a watch event.</exception>
    public static WatchEvent<T> Decode<T>(string line, JsonTypeInfo<T> typeInfo)
        where T : class
    {
        var raw = JsonSerializer.Deserialize(line, KubernetesJsonContext.Default.RawWatchEvent)
            ?? throw new JsonException("watch line is null");
        var type = raw.Type switch
        {
            "ADDED" => WatchEventType.Added,
            "MODIFIED" => WatchEventType.Modified,
            "DELETED" => WatchEventType.Deleted,
            "BOOKMARK" => WatchEventType.Bookmark,
            "ERROR" => WatchEventType.Error,
            _ => throw new JsonException($"unknown watch event type '{raw.Type}'"),
        };
        if (type == WatchEventType.Error)
        {
            var status = raw.Item.ValueKind == JsonValueKind.Object ? raw.Item.Deserialize(KubernetesJsonContext.Default.Status) : null;
            return new WatchEvent<T>(type, null, status ?? new Status { Code = 500, Reason = "InternalError", Message = "watch ERROR without a Status" }, null);
        }

        var item = raw.Item.Deserialize(typeInfo) ?? throw new JsonException("watch event without an object");
        string? rv = null;
        if (raw.Item.TryGetProperty("metadata", out var metadata) && metadata.TryGetProperty("resourceVersion", out var rvElement))
        {
            rv = rvElement.GetString();
        }

        return new WatchEvent<T>(type, item, null, rv);
    }

    private HttpRequestMessage CreateRequest(HttpMethod method, string path, byte[]? body, MediaTypeHeaderValue? contentType)
    {
        var request = new HttpRequestMessage(method, new Uri(path, UriKind.Relative));
        if (_configuration.Token?.GetToken() is { Length: > 0 } token)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        if (body is not null)
        {
            request.Content = new ByteArrayContent(body);
            request.Content.Headers.ContentType = contentType;
        }

        return request;
    }

    private readonly record struct CallContext(string Verb, string Resource, string Group, string? Namespace);

    private sealed class QueryBuilder
    {
        private readonly StringBuilder _text = new();

        public QueryBuilder Add(string name, string? value)
        {
            if (value is not null)
            {
                _text.Append(_text.Length == 0 ? '?' : '&').Append(name).Append('=').Append(Uri.EscapeDataString(value));
            }

            return this;
        }

        public override string ToString() => _text.ToString();
    }
}

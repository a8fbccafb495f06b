using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Sharding.Kubernetes;

namespace Sharding.Testing.Kubernetes;

/// <summary>
/// An in-process API server on Kestrel (127.0.0.1:0) that keeps the real semantics the Sharding client relies on, checked
/// against <c>../shared/k8s-fixtures</c>: one global resourceVersion counter bumped by every write (no-op writes keep it),
/// 201 on create, 409 Conflict on a stale update or patch precondition, 409 AlreadyExists, 422 for a Lease PUT without
/// resourceVersion, 400 for MicroTime without exactly six digits, 404/403/401/415 Status objects with the real shapes,
/// lists with their own resourceVersion, watches as newline-delimited JSON (replay after an RV, synthetic ADDED without
/// one, BOOKMARKs when asked and the revision moved, an ERROR 410 Expired event for an RV older than the retained
/// history), graceful pod deletion (deletionTimestamp, then DELETED on grace 0).
/// </summary>
/// <remarks>
/// Faults for tests: <see cref="FailNextRequests"/> (500s), <see cref="DropWatches"/> (end or abort every watch),
/// <see cref="EndWatchesAtOnce"/> (every new watch: 200 and an empty body, as a proxy that closes at once),
/// <see cref="ExpireHistory"/> (compact the watch window), <see cref="BeforeRequest"/> (run code, e.g. a racing write, before
/// a request is handled), <see cref="Forbid"/> (RBAC 403). Strategic merge patch is treated as a JSON merge patch, and a
/// MODIFIED that moves an object out of a watch's selector is not turned into DELETED.
/// </remarks>
public sealed partial class FakeKubernetesApiServer : IAsyncDisposable
{
    private static readonly JsonSerializerOptions Compact = new() { WriteIndented = false };
    private readonly Lock _gate = new();
    private readonly Dictionary<(string Resource, string? Namespace, string Name), JsonObject> _objects = [];
    private readonly List<(long Revision, ResourceType Type, string? Namespace, string EventType, JsonObject Item)> _history = [];
    private readonly List<Watcher> _watchers = [];
    private readonly List<(int Remaining, int Code, string? PathContains, string? Method, int? RetryAfterSeconds)> _faults = [];
    private readonly HashSet<(string Verb, string Resource)> _forbidden = [];
    private readonly List<string> _requests = [];
    private readonly TimeProvider _timeProvider;
    private WebApplication? _app;
    private long _revision = 100;
    private long _compactedRevision;

    private FakeKubernetesApiServer(TimeProvider timeProvider) => _timeProvider = timeProvider;

    /// <summary>The server's address, <c>http://127.0.0.1:port</c>.</summary>
    public Uri BaseAddress { get; private set; } = null!;

    /// <summary>How many events the watch window keeps before older resourceVersions answer 410 Expired.</summary>
    public int HistoryLimit { get; set; } = 1000;

    /// <summary>Bookmark period for watches that ask for them (the real server: about 60 s).</summary>
    public TimeSpan BookmarkInterval { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>If set, requests must carry <c>Bearer {RequiredToken}</c> (401 for another, 403 anonymous for none).</summary>
    public string? RequiredToken { get; set; }

    /// <summary>If set, every watch answers 200 with no event and ends at once, as a proxy that closes watches straight away.</summary>
    public bool EndWatchesAtOnce { get; set; }

    /// <summary>If set, every watch from a resourceVersion gets the 410 Expired event at once, however fresh the version.</summary>
    public bool ExpireEveryWatch { get; set; }

    /// <summary>Runs before every request is handled (after logging, before faults): tests race writes or hold requests here.</summary>
    public Func<HttpRequest, Task>? BeforeRequest { get; set; }

    /// <summary>The current revision (the last resourceVersion written).</summary>
    public long Revision
    {
        get
        {
            lock (_gate)
            {
                return _revision;
            }
        }
    }

    /// <summary>Open watch streams.</summary>
    public int ActiveWatchCount
    {
        get
        {
            lock (_gate)
            {
                return _watchers.Count;
            }
        }
    }

    /// <summary>Every request so far: <c>METHOD path?query</c>.</summary>
    public IReadOnlyList<string> Requests
    {
        get
        {
            lock (_gate)
            {
                return [.. _requests];
            }
        }
    }

    /// <summary>Starts the server on 127.0.0.1 with a free port.</summary>
    public static async Task<FakeKubernetesApiServer> StartAsync(TimeProvider? timeProvider = null)
    {
        var server = new FakeKubernetesApiServer(timeProvider ?? TimeProvider.System);
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore().ConfigureKestrel(o => o.Listen(IPAddress.Loopback, 0));
        builder.Logging.ClearProviders();
        var app = builder.Build();
        app.Run(server.HandleAsync);
        await app.StartAsync().ConfigureAwait(false);
        server._app = app;
        var address = app.Urls.First();
        server.BaseAddress = new Uri(address.Replace("[::]", "127.0.0.1", StringComparison.Ordinal));
        return server;
    }

    /// <summary>A client for this server (plain HTTP, bearer token <c>fake-token</c> unless given).</summary>
    public KubernetesClient CreateClient(string? token = "fake-token") =>
        new(new KubernetesClientConfiguration
        {
            Server = BaseAddress,
            Namespace = "default",
            Token = token is null ? null : BearerTokenSource.FromValue(token),
        })
        { RequestTimeout = TimeSpan.FromSeconds(10) };

    // ---------------------------------------------------------------- faults

    /// <summary>
    /// The next <paramref name="count"/> matching requests get <paramref name="statusCode"/> with an InternalError Status (429: the
    /// apiserver's TooManyRequests Status), and a <c>Retry-After</c> header when <paramref name="retryAfterSeconds"/> is set.
    /// </summary>
    public void FailNextRequests(int count, int statusCode = 500, string? pathContains = null, string? method = null, int? retryAfterSeconds = null)
    {
        lock (_gate)
        {
            _faults.Add((count, statusCode, pathContains, method, retryAfterSeconds));
        }
    }

    /// <summary>RBAC: deny <paramref name="verb"/> on <paramref name="resource"/> with 403 Forbidden.</summary>
    public void Forbid(string verb, string resource)
    {
        lock (_gate)
        {
            _forbidden.Add((verb, resource));
        }
    }

    /// <summary>Ends every open watch: cleanly (as at timeoutSeconds) or by aborting the connection.</summary>
    public void DropWatches(bool abort = false)
    {
        lock (_gate)
        {
            foreach (var watcher in _watchers)
            {
                watcher.Abort = abort;
                watcher.Events.Writer.TryComplete();
            }
        }
    }

    /// <summary>Forgets every event so far: a watch from any earlier resourceVersion gets 410 Expired.</summary>
    public void ExpireHistory()
    {
        lock (_gate)
        {
            _history.Clear();
            _compactedRevision = _revision;
        }
    }

    /// <summary>Sends a BOOKMARK now to every watch that asked for them and whose start the revision has passed.</summary>
    public void SendBookmarks()
    {
        lock (_gate)
        {
            foreach (var watcher in _watchers)
            {
                if (watcher.Bookmarks && _revision > watcher.StartRevision)
                {
                    watcher.Events.Writer.TryWrite(BookmarkLine(watcher.Type, _revision));
                }
            }
        }
    }

    // ---------------------------------------------------------------- store API for tests

    /// <summary>Stores a new object as the server would on create (uid, resourceVersion, creationTimestamp) and emits ADDED.</summary>
    public JsonObject Create(string resource, string? namespaceName, JsonObject item)
    {
        var type = ResourceType.Find(resource) ?? throw new ArgumentException("unknown resource " + resource, nameof(resource));
        lock (_gate)
        {
            var (code, result) = CreateLocked(type, namespaceName, item);
            return code == 201 ? (JsonObject)result.DeepClone() : throw new InvalidOperationException(result.ToJsonString());
        }
    }

    /// <summary>The stored object, or null.</summary>
    public JsonObject? Get(string resource, string? namespaceName, string name)
    {
        lock (_gate)
        {
            return _objects.TryGetValue((resource, namespaceName, name), out var item) ? (JsonObject)item.DeepClone() : null;
        }
    }

    /// <summary>Changes a stored object (new resourceVersion, MODIFIED), as a controller or the kubelet would.</summary>
    public JsonObject Update(string resource, string? namespaceName, string name, Action<JsonObject> mutate)
    {
        ArgumentNullException.ThrowIfNull(mutate);
        var type = ResourceType.Find(resource)!;
        lock (_gate)
        {
            var stored = _objects[(resource, namespaceName, name)];
            var copy = (JsonObject)stored.DeepClone();
            mutate(copy);
            return (JsonObject)CommitLocked(type, namespaceName, name, stored, copy).DeepClone();
        }
    }

    /// <summary>Removes an object at once (DELETED event).</summary>
    public bool Delete(string resource, string? namespaceName, string name)
    {
        var type = ResourceType.Find(resource)!;
        lock (_gate)
        {
            return RemoveLocked(type, namespaceName, name) is not null;
        }
    }

    /// <summary>Adds a pod (bound to node-1), optionally Ready with an IP.</summary>
    public JsonObject AddPod(
        string namespaceName, string name, IReadOnlyDictionary<string, string> labels, IReadOnlyDictionary<string, string>? annotations = null,
        bool ready = false, string? podIP = null)
    {
        var metadata = new JsonObject { ["name"] = name, ["namespace"] = namespaceName, ["labels"] = ToObject(labels) };
        if (annotations is not null)
        {
            metadata["annotations"] = ToObject(annotations);
        }

        var pod = new JsonObject
        {
            ["kind"] = "Pod",
            ["apiVersion"] = "v1",
            ["metadata"] = metadata,
            ["spec"] = new JsonObject { ["containers"] = new JsonArray(new JsonObject { ["name"] = "app", ["image"] = "sample:1" }), ["nodeName"] = "node-1" },
            ["status"] = PodStatus(ready, podIP),
        };
        return Create("pods", namespaceName, pod);
    }

    /// <summary>Plays the kubelet: sets the Ready condition (and the IP, when given).</summary>
    public JsonObject SetPodReady(string namespaceName, string name, bool ready, string? podIP = null) =>
        Update("pods", namespaceName, name, pod =>
        {
            var ip = podIP ?? (string?)pod["status"]?["podIP"];
            pod["status"] = PodStatus(ready, ip);
        });

    /// <summary>A graceful DELETE: deletionTimestamp now + 30 s, the pod stays (no kubelet), MODIFIED.</summary>
    public JsonObject BeginPodDeletion(string namespaceName, string name) =>
        Update("pods", namespaceName, name, pod =>
        {
            pod["metadata"]!["deletionTimestamp"] = KubernetesTimeConverter.ToText(_timeProvider.GetUtcNow().AddSeconds(30));
            pod["metadata"]!["deletionGracePeriodSeconds"] = 30;
        });

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        DropWatches(abort: true);
        if (_app is not null)
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await _app.StopAsync(cts.Token).ConfigureAwait(false);
            await _app.DisposeAsync().ConfigureAwait(false);
        }
    }

    // ---------------------------------------------------------------- HTTP

    private async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        lock (_gate)
        {
            _requests.Add($"{request.Method} {request.Path}{request.QueryString}");
        }

        if (BeforeRequest is { } before)
        {
            await before(request).ConfigureAwait(false);
        }

        if (TakeFault(request) is { } fault)
        {
            if (fault.RetryAfterSeconds is { } retryAfter)
            {
                context.Response.Headers.RetryAfter = retryAfter.ToString(System.Globalization.CultureInfo.InvariantCulture);
            }

            // What API Priority and Fairness answers when it sheds a request (with Retry-After: 1).
            var body = fault.Code == 429
                ? Status(429, "TooManyRequests", "Too many requests, please try again later.", new JsonObject { ["retryAfterSeconds"] = fault.RetryAfterSeconds ?? 1 })
                : Status(fault.Code, "InternalError", "Internal error occurred: injected fault", new JsonObject { ["causes"] = new JsonArray(new JsonObject { ["message"] = "injected fault" }) });
            await WriteAsync(context, fault.Code, body).ConfigureAwait(false);
            return;
        }

        if (RequiredToken is not null)
        {
            var authorization = request.Headers.Authorization.ToString();
            if (authorization.Length == 0)
            {
                await WriteAsync(context, 403, Status(403, "Forbidden", "forbidden: User \"system:anonymous\" cannot get path \"" + request.Path + "\"", new JsonObject())).ConfigureAwait(false);
                return;
            }

            if (authorization != "Bearer " + RequiredToken)
            {
                await WriteAsync(context, 401, Status(401, "Unauthorized", "Unauthorized", null)).ConfigureAwait(false);
                return;
            }
        }

        if (!TryParsePath(request.Path.Value ?? "/", out var type, out var ns, out var name, out var subresource))
        {
            await WriteAsync(context, 404, Status(404, "NotFound", "the server could not find the requested resource", new JsonObject())).ConfigureAwait(false);
            return;
        }

        var watch = request.Query["watch"] is { Count: > 0 } w && (w[0] == "1" || w[0] == "true");
        var verb = (request.Method, name, watch) switch
        {
            ("GET", null, true) => "watch",
            ("GET", null, false) => "list",
            ("GET", _, _) => "get",
            ("POST", _, _) => "create",
            ("PUT", _, _) => "update",
            ("PATCH", _, _) => "patch",
            ("DELETE", _, _) => "delete",
            _ => "unknown",
        };
        bool denied;
        lock (_gate)
        {
            denied = _forbidden.Contains((verb, type.Plural));
        }

        if (denied)
        {
            var where = ns is null ? "at the cluster scope" : $"in the namespace \"{ns}\"";
            var message = $"{type.Plural}{(name is null ? string.Empty : $" \"{name}\"")} is forbidden: User \"system:serviceaccount:sharding-system:sharding-controlplane\" cannot {verb} resource \"{type.Plural}\" in API group \"{type.Group}\" {where}";
            var details = new JsonObject();
            if (name is not null)
            {
                details["name"] = name;
            }

            if (type.Group.Length > 0)
            {
                details["group"] = type.Group;
            }

            details["kind"] = type.Plural;
            await WriteAsync(context, 403, Status(403, "Forbidden", message, details)).ConfigureAwait(false);
            return;
        }

        switch (verb)
        {
            case "watch":
                await WatchAsync(context, type, ns).ConfigureAwait(false);
                return;
            case "list":
                await ListAsync(context, type, ns).ConfigureAwait(false);
                return;
            case "get":
                lock (_gate)
                {
                    if (!_objects.TryGetValue((type.Plural, ns, name!), out var found))
                    {
                        _ = WriteLater(context, 404, NotFound(type, name!));
                    }
                    else
                    {
                        _ = WriteLater(context, 200, found.DeepClone());
                    }
                }

                await FlushLaterAsync(context).ConfigureAwait(false);
                return;
            case "create":
                await CreateHttpAsync(context, type, ns).ConfigureAwait(false);
                return;
            case "update":
                await UpdateHttpAsync(context, type, ns, name!, subresource).ConfigureAwait(false);
                return;
            case "patch":
                await PatchHttpAsync(context, type, ns, name!, subresource).ConfigureAwait(false);
                return;
            case "delete":
                await DeleteHttpAsync(context, type, ns, name!).ConfigureAwait(false);
                return;
            default:
                await WriteAsync(context, 405, Status(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", new JsonObject())).ConfigureAwait(false);
                return;
        }
    }

    private async Task CreateHttpAsync(HttpContext context, ResourceType type, string? ns)
    {
        if (!IsJson(context.Request.ContentType))
        {
            await WriteAsync(context, 415, Status(415, "UnsupportedMediaType", $"the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf", new JsonObject())).ConfigureAwait(false);
            return;
        }

        var body = await ReadBodyAsync(context, type).ConfigureAwait(false);
        if (body is null)
        {
            return;
        }

        (int Code, JsonNode Result) outcome;
        lock (_gate)
        {
            outcome = CreateLocked(type, ns, body);
        }

        await WriteAsync(context, outcome.Code, outcome.Result).ConfigureAwait(false);
    }

    private async Task UpdateHttpAsync(HttpContext context, ResourceType type, string? ns, string name, string? subresource)
    {
        var body = await ReadBodyAsync(context, type).ConfigureAwait(false);
        if (body is null)
        {
            return;
        }

        (int Code, JsonNode Result) outcome;
        lock (_gate)
        {
            outcome = UpdateLocked(type, ns, name, body, requireVersion: type.Plural == "leases", subresource);
        }

        await WriteAsync(context, outcome.Code, outcome.Result).ConfigureAwait(false);
    }

    private async Task PatchHttpAsync(HttpContext context, ResourceType type, string? ns, string name, string? subresource)
    {
        var contentType = context.Request.ContentType ?? string.Empty;
        var kind = contentType.StartsWith("application/json-patch+json", StringComparison.Ordinal) ? "json"
            : contentType.StartsWith("application/merge-patch+json", StringComparison.Ordinal) ? "merge"
            : contentType.StartsWith("application/strategic-merge-patch+json", StringComparison.Ordinal) ? "merge"
            : null;
        if (kind is null)
        {
            await WriteAsync(context, 415, Status(415, "UnsupportedMediaType", "415: Unsupported Media Type", new JsonObject())).ConfigureAwait(false);
            return;
        }

        JsonNode? patch;
        try
        {
            patch = await JsonNode.ParseAsync(context.Request.Body).ConfigureAwait(false);
        }
        catch (JsonException ex)
        {
            await WriteAsync(context, 400, Status(400, "BadRequest", ex.Message, null)).ConfigureAwait(false);
            return;
        }

        (int Code, JsonNode Result) outcome;
        lock (_gate)
        {
            if (!_objects.TryGetValue((type.Plural, ns, name), out var stored))
            {
                outcome = (404, NotFound(type, name));
            }
            else
            {
                JsonObject patched;
                try
                {
                    patched = (JsonObject)(kind == "json" ? JsonPatch.Apply(stored, (JsonArray)patch!) : JsonPatch.Merge(stored, patch));
                    outcome = UpdateLocked(type, ns, name, patched, requireVersion: false, subresource);
                }
                catch (InvalidOperationException ex)
                {
                    outcome = (422, Status(422, "Invalid", "the server rejected our request due to an error in our request: " + ex.Message, Details(type, name)));
                }
            }
        }

        await WriteAsync(context, outcome.Code, outcome.Result).ConfigureAwait(false);
    }

    private async Task DeleteHttpAsync(HttpContext context, ResourceType type, string? ns, string name)
    {
        long? grace = long.TryParse(context.Request.Query["gracePeriodSeconds"], NumberStyles.Integer, CultureInfo.InvariantCulture, out var g) ? g : null;
        if (context.Request.ContentLength > 0)
        {
            var body = await JsonNode.ParseAsync(context.Request.Body).ConfigureAwait(false);
            grace ??= (long?)body?["gracePeriodSeconds"];
        }

        (int Code, JsonNode Result) outcome;
        lock (_gate)
        {
            if (!_objects.TryGetValue((type.Plural, ns, name), out var stored))
            {
                outcome = (404, NotFound(type, name));
            }
            else if (type.Plural == "pods" && grace != 0)
            {
                var copy = (JsonObject)stored.DeepClone();
                if (copy["metadata"]!["deletionTimestamp"] is null)
                {
                    copy["metadata"]!["deletionTimestamp"] = KubernetesTimeConverter.ToText(_timeProvider.GetUtcNow().AddSeconds(grace ?? 30));
                    copy["metadata"]!["deletionGracePeriodSeconds"] = grace ?? 30;
                }

                outcome = (200, CommitLocked(type, ns, name, stored, copy).DeepClone());
            }
            else
            {
                var removed = RemoveLocked(type, ns, name)!;
                outcome = type.Plural == "pods"
                    ? (200, removed.DeepClone())
                    : (200, new JsonObject
                    {
                        ["kind"] = "Status",
                        ["apiVersion"] = "v1",
                        ["metadata"] = new JsonObject(),
                        ["status"] = "Success",
                        ["details"] = WithUid(Details(type, name), (string?)removed["metadata"]?["uid"]),
                    });
            }
        }

        await WriteAsync(context, outcome.Code, outcome.Result).ConfigureAwait(false);
    }

    private async Task ListAsync(HttpContext context, ResourceType type, string? ns)
    {
        var query = context.Request.Query;
        var selector = LabelSelector.Parse(query["labelSelector"]);
        string? rv = query["resourceVersion"];
        string? match = query["resourceVersionMatch"];
        if (!string.IsNullOrEmpty(match) && string.IsNullOrEmpty(rv))
        {
            await WriteAsync(context, 422, Status(422, "Invalid", "Invalid ListOptions: [resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided]", new JsonObject { ["kind"] = "ListOptions", ["causes"] = new JsonArray(new JsonObject { ["reason"] = "FieldValueForbidden", ["message"] = "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided", ["field"] = "resourceVersionMatch" }) })).ConfigureAwait(false);
            return;
        }

        JsonObject list;
        lock (_gate)
        {
            if (match == "Exact" && long.TryParse(rv, NumberStyles.Integer, CultureInfo.InvariantCulture, out var exact) && exact < _compactedRevision)
            {
                _ = WriteLater(context, 410, Status(410, "Expired", "The resourceVersion for the provided list is too old.", null));
                list = null!;
            }
            else
            {
                var items = _objects
                    .Where(kv => kv.Key.Resource == type.Plural && (ns is null || kv.Key.Namespace == ns) && selector.Matches(Labels(kv.Value)))
                    .OrderBy(kv => kv.Key.Namespace, StringComparer.Ordinal).ThenBy(kv => kv.Key.Name, StringComparer.Ordinal)
                    .Select(kv => kv.Value)
                    .ToList();
                var start = 0;
                if (query["continue"] is { Count: > 0 } token && !string.IsNullOrEmpty(token[0]))
                {
                    start = int.Parse(Encoding.UTF8.GetString(Convert.FromBase64String(token[0]!)), CultureInfo.InvariantCulture);
                }

                var limit = int.TryParse(query["limit"], NumberStyles.Integer, CultureInfo.InvariantCulture, out var l) && l > 0 ? l : int.MaxValue;
                var page = items.Skip(start).Take(limit).ToList();
                var metadata = new JsonObject { ["resourceVersion"] = _revision.ToString(CultureInfo.InvariantCulture) };
                if (start + page.Count < items.Count)
                {
                    metadata["continue"] = Convert.ToBase64String(Encoding.UTF8.GetBytes((start + page.Count).ToString(CultureInfo.InvariantCulture)));
                }

                list = new JsonObject
                {
                    ["kind"] = type.Kind + "List",
                    ["apiVersion"] = type.ApiVersion,
                    ["metadata"] = metadata,
                    ["items"] = new JsonArray([.. page.Select(i => i.DeepClone())]),
                };
            }
        }

        if (list is null)
        {
            await FlushLaterAsync(context).ConfigureAwait(false);
            return;
        }

        await WriteAsync(context, 200, list).ConfigureAwait(false);
    }

    private async Task WatchAsync(HttpContext context, ResourceType type, string? ns)
    {
        var query = context.Request.Query;
        var selector = LabelSelector.Parse(query["labelSelector"]);
        string? rvText = query["resourceVersion"];
        var bookmarks = query["allowWatchBookmarks"] is { Count: > 0 } b && b[0] == "true";
        var timeout = int.TryParse(query["timeoutSeconds"], NumberStyles.Integer, CultureInfo.InvariantCulture, out var t) ? TimeSpan.FromSeconds(t) : TimeSpan.FromMinutes(30);
        var watcher = new Watcher(type, ns, selector, bookmarks);
        if (EndWatchesAtOnce)
        {
            context.Response.StatusCode = 200;
            context.Response.ContentType = "application/json";
            return;
        }

        lock (_gate)
        {
            if (string.IsNullOrEmpty(rvText) || rvText == "0")
            {
                // No resourceVersion: a synthetic ADDED for every existing object, then changes (fixture watch/02).
                watcher.StartRevision = _revision;
                foreach (var item in _objects.Where(kv => kv.Key.Resource == type.Plural && (ns is null || kv.Key.Namespace == ns) && selector.Matches(Labels(kv.Value)))
                    .OrderBy(kv => kv.Key.Name, StringComparer.Ordinal))
                {
                    watcher.Events.Writer.TryWrite(EventLine("ADDED", item.Value));
                }
            }
            else
            {
                var start = long.Parse(rvText, CultureInfo.InvariantCulture);
                watcher.StartRevision = start;
                if (start < _compactedRevision || ExpireEveryWatch)
                {
                    // Fixture watch/08: HTTP 200, one ERROR event with a 410 Expired Status, then the stream ends.
                    var oldest = _history.Count > 0 ? _history[0].Revision : _revision;
                    watcher.Events.Writer.TryWrite(EventLine("ERROR", Status(410, "Expired", $"too old resource version: {start} ({oldest})", null, includeDetails: false)));
                    watcher.Events.Writer.TryComplete();
                }
                else
                {
                    foreach (var change in _history.Where(h => h.Revision > start && h.Type == type && (ns is null || h.Namespace == ns) && selector.Matches(Labels(h.Item))))
                    {
                        watcher.Events.Writer.TryWrite(EventLine(change.EventType, change.Item));
                    }
                }
            }

            if (!watcher.Events.Reader.Completion.IsCompleted)
            {
                _watchers.Add(watcher);
            }
        }

        context.Response.StatusCode = 200;
        context.Response.ContentType = "application/json";
        await context.Response.StartAsync(context.RequestAborted).ConfigureAwait(false);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
        using var timeoutTimer = _timeProvider.CreateTimer(static s => ((Watcher)s!).Events.Writer.TryComplete(), watcher, timeout, Timeout.InfiniteTimeSpan);
        using var bookmarkTimer = bookmarks
            ? _timeProvider.CreateTimer(_ => SendBookmark(watcher), null, BookmarkInterval, BookmarkInterval)
            : null;
        try
        {
            await foreach (var line in watcher.Events.Reader.ReadAllAsync(stop.Token).ConfigureAwait(false))
            {
                await context.Response.Body.WriteAsync(line, stop.Token).ConfigureAwait(false);
                await context.Response.Body.FlushAsync(stop.Token).ConfigureAwait(false);
            }

            if (watcher.Abort)
            {
                context.Abort();
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (IOException)
        {
        }
        finally
        {
            lock (_gate)
            {
                _watchers.Remove(watcher);
            }
        }
    }

    private void SendBookmark(Watcher watcher)
    {
        lock (_gate)
        {
            if (_revision > watcher.StartRevision)
            {
                watcher.Events.Writer.TryWrite(BookmarkLine(watcher.Type, _revision));
            }
        }
    }

    // ---------------------------------------------------------------- store internals (callers hold _gate)

    private (int Code, JsonNode Result) CreateLocked(ResourceType type, string? ns, JsonObject item)
    {
        item = (JsonObject)item.DeepClone();
        if ((string?)item["kind"] is { } kind && kind != type.Kind)
        {
            return (400, Status(400, "BadRequest", $"the API version in the data ({(string?)item["apiVersion"]}) does not match the expected API version ({type.ApiVersion})", null));
        }

        var metadata = item["metadata"] as JsonObject ?? [];
        item["metadata"] = metadata;
        var name = (string?)metadata["name"];
        if (string.IsNullOrEmpty(name) && (string?)metadata["generateName"] is { Length: > 0 } prefix)
        {
            name = prefix + Guid.NewGuid().ToString("N")[..5];
        }

        if (string.IsNullOrEmpty(name))
        {
            return (422, Status(422, "Invalid", $"{type.Kind}{type.GroupSuffix} \"\" is invalid: metadata.name: Required value: name or generateName is required", new JsonObject { ["group"] = type.Group, ["kind"] = type.Kind }));
        }

        if (Validate(type, name, item) is { } invalid)
        {
            return invalid;
        }

        if (_objects.ContainsKey((type.Plural, ns, name)))
        {
            return (409, Status(409, "AlreadyExists", $"{type.Plural}{type.GroupSuffix} \"{name}\" already exists", Details(type, name)));
        }

        item["kind"] = type.Kind;
        item["apiVersion"] = type.ApiVersion;
        metadata["name"] = name;
        if (ns is not null)
        {
            metadata["namespace"] = ns;
        }

        metadata["uid"] = Guid.NewGuid().ToString();
        metadata["resourceVersion"] = (++_revision).ToString(CultureInfo.InvariantCulture);
        metadata["creationTimestamp"] = KubernetesTimeConverter.ToText(_timeProvider.GetUtcNow());
        if (type.Plural == "pods" && item["status"] is null)
        {
            item["status"] = new JsonObject { ["phase"] = "Pending", ["qosClass"] = "BestEffort" };
        }

        Reorder(item);
        _objects[(type.Plural, ns, name)] = item;
        Publish(type, ns, "ADDED", item);
        return (201, item.DeepClone());
    }

    private (int Code, JsonNode Result) UpdateLocked(ResourceType type, string? ns, string name, JsonObject body, bool requireVersion, string? subresource)
    {
        if (!_objects.TryGetValue((type.Plural, ns, name), out var stored))
        {
            return (404, NotFound(type, name));
        }

        var version = (string?)body["metadata"]?["resourceVersion"];
        if (string.IsNullOrEmpty(version) && requireVersion)
        {
            return (422, Status(422, "Invalid", $"{type.Plural}{type.GroupSuffix} \"{name}\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                WithCauses(Details(type, name), "FieldValueInvalid", "Invalid value: 0x0: must be specified for an update", "metadata.resourceVersion")));
        }

        if (!string.IsNullOrEmpty(version) && version != (string?)stored["metadata"]!["resourceVersion"])
        {
            return (409, Status(409, "Conflict", $"Operation cannot be fulfilled on {type.Plural}{type.GroupSuffix} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", Details(type, name)));
        }

        if (Validate(type, name, body) is { } invalid)
        {
            return invalid;
        }

        var updated = (JsonObject)body.DeepClone();
        updated["kind"] = type.Kind;
        updated["apiVersion"] = type.ApiVersion;
        var metadata = updated["metadata"] as JsonObject ?? [];
        updated["metadata"] = metadata;
        foreach (var kept in new[] { "name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds" })
        {
            metadata[kept] = stored["metadata"]![kept]?.DeepClone();
            if (metadata[kept] is null)
            {
                metadata.Remove(kept);
            }
        }

        if (type.Plural == "pods")
        {
            // Status changes sent to the main resource are dropped silently, spec changes to /status too (fixture pods/09).
            if (subresource == "status")
            {
                updated["spec"] = stored["spec"]?.DeepClone();
            }
            else
            {
                updated["status"] = stored["status"]?.DeepClone();
            }
        }

        return (200, CommitLocked(type, ns, name, stored, updated).DeepClone());
    }

    private JsonObject CommitLocked(ResourceType type, string? ns, string name, JsonObject stored, JsonObject updated)
    {
        var before = (JsonObject)stored.DeepClone();
        var after = (JsonObject)updated.DeepClone();
        before["metadata"]!.AsObject().Remove("resourceVersion");
        after["metadata"]!.AsObject().Remove("resourceVersion");
        if (JsonNode.DeepEquals(before, after))
        {
            // A write that changes nothing keeps the resourceVersion and makes no event (fixture pods/09).
            return stored;
        }

        updated["metadata"]!["resourceVersion"] = (++_revision).ToString(CultureInfo.InvariantCulture);
        Reorder(updated);
        _objects[(type.Plural, ns, name)] = updated;
        Publish(type, ns, "MODIFIED", updated);
        return updated;
    }

    private JsonObject? RemoveLocked(ResourceType type, string? ns, string name)
    {
        if (!_objects.Remove((type.Plural, ns, name), out var stored))
        {
            return null;
        }

        var last = (JsonObject)stored.DeepClone();
        last["metadata"]!["resourceVersion"] = (++_revision).ToString(CultureInfo.InvariantCulture);
        Publish(type, ns, "DELETED", last);
        return last;
    }

    private void Publish(ResourceType type, string? ns, string eventType, JsonObject item)
    {
        var snapshot = (JsonObject)item.DeepClone();
        _history.Add((_revision, type, ns, eventType, snapshot));
        while (_history.Count > HistoryLimit)
        {
            _compactedRevision = _history[0].Revision;
            _history.RemoveAt(0);
        }

        var labels = Labels(snapshot);
        foreach (var watcher in _watchers)
        {
            if (watcher.Type == type && (watcher.Namespace is null || watcher.Namespace == ns) && watcher.Selector.Matches(labels))
            {
                watcher.Events.Writer.TryWrite(EventLine(eventType, snapshot));
            }
        }
    }

    private static (int Code, JsonNode Result)? Validate(ResourceType type, string name, JsonObject item)
    {
        if (type.Plural != "leases" || item["spec"] is not JsonObject spec)
        {
            return null;
        }

        foreach (var field in new[] { "acquireTime", "renewTime" })
        {
            if ((string?)spec[field] is { } text && !MicroTimePattern().IsMatch(text))
            {
                // Fixture leases/09 and leases/10: the decoder rejects any precision other than six digits.
                var tail = text.Length > 20 ? text[19..] : text;
                return (400, Status(400, "BadRequest", $"Lease in version \"v1\" cannot be handled as a Lease: parsing time \"{text}\" as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse \"{tail}\" as \".000000\"", null));
            }
        }

        var causes = new JsonArray();
        if ((int?)spec["leaseDurationSeconds"] is { } duration && duration <= 0)
        {
            causes.Add(new JsonObject { ["reason"] = "FieldValueInvalid", ["message"] = $"Invalid value: {duration}: must be greater than 0", ["field"] = "spec.leaseDurationSeconds" });
        }

        if ((int?)spec["leaseTransitions"] is { } transitions && transitions < 0)
        {
            causes.Add(new JsonObject { ["reason"] = "FieldValueInvalid", ["message"] = $"Invalid value: {transitions}: must be greater than or equal to 0", ["field"] = "spec.leaseTransitions" });
        }

        if (causes.Count == 0)
        {
            return null;
        }

        var messages = string.Join(", ", causes.Select(c => $"{(string?)c!["field"]}: {(string?)c["message"]}"));
        return (422, Status(422, "Invalid", $"Lease.coordination.k8s.io \"{name}\" is invalid: [{messages}]",
            new JsonObject { ["name"] = name, ["group"] = type.Group, ["kind"] = type.Kind, ["causes"] = causes }));
    }

    // ---------------------------------------------------------------- helpers

    private (int Code, int? RetryAfterSeconds)? TakeFault(HttpRequest request)
    {
        lock (_gate)
        {
            for (var i = 0; i < _faults.Count; i++)
            {
                var fault = _faults[i];
                if ((fault.PathContains is null || (request.Path.Value ?? string.Empty).Contains(fault.PathContains, StringComparison.Ordinal))
                    && (fault.Method is null || fault.Method == request.Method))
                {
                    _faults[i] = fault with { Remaining = fault.Remaining - 1 };
                    if (_faults[i].Remaining <= 0)
                    {
                        _faults.RemoveAt(i);
                    }

                    return (fault.Code, fault.RetryAfterSeconds);
                }
            }
        }

        return null;
    }

    private static async Task<JsonObject?> ReadBodyAsync(HttpContext context, ResourceType type)
    {
        try
        {
            var node = await JsonNode.ParseAsync(context.Request.Body).ConfigureAwait(false);
            if (node is JsonObject o)
            {
                return o;
            }
        }
        catch (JsonException ex)
        {
            await WriteAsync(context, 400, Status(400, "BadRequest", $"{type.Kind} in version \"v1\" cannot be handled as a {type.Kind}: {ex.Message}", null)).ConfigureAwait(false);
            return null;
        }

        await WriteAsync(context, 400, Status(400, "BadRequest", $"{type.Kind} in version \"v1\" cannot be handled as a {type.Kind}: not an object", null)).ConfigureAwait(false);
        return null;
    }

    private static bool IsJson(string? contentType) => contentType?.StartsWith("application/json", StringComparison.Ordinal) == true;

    private static async Task WriteAsync(HttpContext context, int code, JsonNode body)
    {
        context.Response.StatusCode = code;
        context.Response.ContentType = "application/json";
        var bytes = Encoding.UTF8.GetBytes(body.ToJsonString(Compact) + "\n");
        await context.Response.Body.WriteAsync(bytes).ConfigureAwait(false);
    }

    // Writing from inside a lock is not possible (await); stash the answer and write it after.
    private static Task WriteLater(HttpContext context, int code, JsonNode body)
    {
        context.Items["fake.code"] = code;
        context.Items["fake.body"] = body;
        return Task.CompletedTask;
    }

    private static Task FlushLaterAsync(HttpContext context) =>
        WriteAsync(context, (int)context.Items["fake.code"]!, (JsonNode)context.Items["fake.body"]!);

    private static JsonObject Status(int code, string reason, string message, JsonObject? details, bool includeDetails = true)
    {
        var status = new JsonObject
        {
            ["kind"] = "Status",
            ["apiVersion"] = "v1",
            ["metadata"] = new JsonObject(),
            ["status"] = "Failure",
            ["message"] = message,
            ["reason"] = reason,
        };
        if (details is not null && includeDetails)
        {
            status["details"] = details;
        }

        status["code"] = code;
        return status;
    }

    private static JsonObject Details(ResourceType type, string name)
    {
        var details = new JsonObject { ["name"] = name };
        if (type.Group.Length > 0)
        {
            details["group"] = type.Group;
        }

        details["kind"] = type.Plural;
        return details;
    }

    private static JsonObject WithUid(JsonObject details, string? uid)
    {
        details["uid"] = uid;
        return details;
    }

    private static JsonObject WithCauses(JsonObject details, string reason, string message, string field)
    {
        details["causes"] = new JsonArray(new JsonObject { ["reason"] = reason, ["message"] = message, ["field"] = field });
        return details;
    }

    private static JsonObject NotFound(ResourceType type, string name) =>
        Status(404, "NotFound", $"{type.Plural}{type.GroupSuffix} \"{name}\" not found", Details(type, name));

    private static JsonObject PodStatus(bool ready, string? podIP)
    {
        var value = ready ? "True" : "False";
        var status = new JsonObject
        {
            ["phase"] = podIP is null ? "Pending" : "Running",
            ["conditions"] = new JsonArray(
                new JsonObject { ["type"] = "Ready", ["status"] = value, ["lastProbeTime"] = null, ["lastTransitionTime"] = "2026-01-01T00:00:00Z" },
                new JsonObject { ["type"] = "ContainersReady", ["status"] = value, ["lastProbeTime"] = null, ["lastTransitionTime"] = "2026-01-01T00:00:00Z" },
                new JsonObject { ["type"] = "PodScheduled", ["status"] = "True", ["lastProbeTime"] = null, ["lastTransitionTime"] = "2026-01-01T00:00:00Z" }),
            ["qosClass"] = "BestEffort",
        };
        if (podIP is not null)
        {
            status["podIP"] = podIP;
            status["podIPs"] = new JsonArray(new JsonObject { ["ip"] = podIP });
        }

        return status;
    }

    private static JsonObject ToObject(IReadOnlyDictionary<string, string> values)
    {
        var o = new JsonObject();
        foreach (var (k, v) in values)
        {
            o[k] = v;
        }

        return o;
    }

    private static Dictionary<string, string> Labels(JsonObject item)
    {
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        if (item["metadata"]?["labels"] is JsonObject o)
        {
            foreach (var (k, v) in o)
            {
                labels[k] = (string?)v ?? string.Empty;
            }
        }

        return labels;
    }

    // kind, apiVersion, metadata, spec, status: the order the apiserver writes.
    private static void Reorder(JsonObject item)
    {
        var order = new[] { "kind", "apiVersion", "metadata", "spec", "status" };
        var rest = item.Where(p => !order.Contains(p.Key)).Select(p => p.Key).ToList();
        var all = order.Where(item.ContainsKey).Concat(rest).ToList();
        var values = all.Select(k => (k, item[k])).ToList();
        foreach (var (k, _) in values)
        {
            item.Remove(k);
        }

        foreach (var (k, v) in values)
        {
            item[k] = v;
        }
    }

    private static byte[] EventLine(string type, JsonNode item) =>
        Encoding.UTF8.GetBytes(new JsonObject { ["type"] = type, ["object"] = item.DeepClone() }.ToJsonString(Compact) + "\n");

    private static byte[] BookmarkLine(ResourceType type, long revision)
    {
        var item = new JsonObject
        {
            ["kind"] = type.Kind,
            ["apiVersion"] = type.ApiVersion,
            ["metadata"] = new JsonObject { ["resourceVersion"] = revision.ToString(CultureInfo.InvariantCulture), ["creationTimestamp"] = null },
        };
        if (type.Plural == "pods")
        {
            item["spec"] = new JsonObject { ["containers"] = null };
            item["status"] = new JsonObject();
        }
        else if (type.Plural == "leases")
        {
            item["spec"] = new JsonObject();
        }

        return EventLine("BOOKMARK", item);
    }

    private static bool TryParsePath(string path, out ResourceType type, out string? ns, out string? name, out string? subresource)
    {
        type = null!;
        ns = name = subresource = null;
        var parts = path.Trim('/').Split('/');
        int i;
        string group;
        if (parts.Length >= 3 && parts[0] == "api" && parts[1] == "v1")
        {
            group = string.Empty;
            i = 2;
        }
        else if (parts.Length >= 4 && parts[0] == "apis")
        {
            group = parts[1];
            i = 3;
        }
        else
        {
            return false;
        }

        if (parts.Length > i + 2 && parts[i] == "namespaces")
        {
            ns = Uri.UnescapeDataString(parts[i + 1]);
            i += 2;
        }

        var found = ResourceType.Find(parts[i]);
        if (found is null || found.Group != group || (found.Namespaced && ns is null && parts.Length > i + 1))
        {
            return false;
        }

        type = found;
        if (parts.Length > i + 1)
        {
            name = Uri.UnescapeDataString(parts[i + 1]);
        }

        if (parts.Length > i + 2)
        {
            subresource = parts[i + 2];
        }

        return parts.Length <= i + 3;
    }

    [GeneratedRegex(@"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")]
    private static partial Regex MicroTimePattern();

    /// <summary>A resource the fake serves.</summary>
    public sealed record ResourceType(string Plural, string Group, string Version, string Kind, bool Namespaced)
    {
        private static readonly ResourceType[] All =
        [
            new("pods", string.Empty, "v1", "Pod", true),
            new("leases", "coordination.k8s.io", "v1", "Lease", true),
            new("mutatingwebhookconfigurations", "admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", false),
        ];

        public string ApiVersion => Group.Length == 0 ? Version : Group + "/" + Version;

        public string GroupSuffix => Group.Length == 0 ? string.Empty : "." + Group;

        public static ResourceType? Find(string plural) => Array.Find(All, r => r.Plural == plural);
    }

    private sealed class Watcher(ResourceType type, string? ns, LabelSelector selector, bool bookmarks)
    {
        public ResourceType Type { get; } = type;

        public string? Namespace { get; } = ns;

        public LabelSelector Selector { get; } = selector;

        public bool Bookmarks { get; } = bookmarks;

        public long StartRevision { get; set; }

        public bool Abort { get; set; }

        public Channel<byte[]> Events { get; } = Channel.CreateUnbounded<byte[]>();
    }
}

using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Sharding.Kubernetes;
using Sharding.Testing;
using Sharding.Testing.Kubernetes;

namespace Sharding.ControlPlane.Tests.Kubernetes;

/// <summary>The fake API server and the client checked against real kube-apiserver responses in tests/fixtures/k8s-fixtures (copied from the team's ../shared/k8s-fixtures).</summary>
public sealed class FakeApiServerFixtureTests : IAsyncLifetime
{
    private static readonly string Fixtures = RepositoryPaths.KubernetesFixtures;
    private FakeKubernetesApiServer _server = null!;
    private HttpClient _http = null!;

    public async Task InitializeAsync()
    {
        _server = await FakeKubernetesApiServer.StartAsync();
        _http = new HttpClient { BaseAddress = _server.BaseAddress };
    }

    public async Task DisposeAsync()
    {
        _http.Dispose();
        await _server.DisposeAsync();
    }

    private static JsonObject Fixture(string name) => JsonNode.Parse(File.ReadAllText(Path.Combine(Fixtures, name)))!.AsObject();

    private const string LeasePath = "/apis/coordination.k8s.io/v1/namespaces/sharding-fixtures/leases";

    private static StringContent Json(string text, string type = "application/json") => new(text, Encoding.UTF8, type);

    private static string LeaseBody(string? rv = null, string renew = "2026-11-21T23:23:54.816248Z", int duration = 15) =>
        "{\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\",\"metadata\":{\"name\":\"sharding-controlplane\"" + (rv is null ? "" : $",\"resourceVersion\":\"{rv}\"") + "},\"spec\":{\"holderIdentity\":\"cp-a\",\"leaseDurationSeconds\":" + duration + ",\"acquireTime\":\"" + renew + "\",\"renewTime\":\"" + renew + "\",\"leaseTransitions\":0}}";

    private async Task<(HttpStatusCode Code, JsonObject Body)> SendAsync(HttpMethod method, string path, HttpContent? content = null)
    {
        using var request = new HttpRequestMessage(method, path) { Content = content };
        using var response = await _http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.EndsWith("\n", text, StringComparison.Ordinal);
        return (response.StatusCode, JsonNode.Parse(text)!.AsObject());
    }

    // Same keys in the same order at every object level (values may differ: uids, times, resourceVersions).
    private static void AssertSameShape(JsonNode expected, JsonNode actual, string at = "$")
    {
        if (expected is JsonObject e)
        {
            var a = Assert.IsType<JsonObject>(actual);
            Assert.True(e.Select(p => p.Key).SequenceEqual(a.Select(p => p.Key)), $"{at}: expected keys [{string.Join(",", e.Select(p => p.Key))}] got [{string.Join(",", a.Select(p => p.Key))}]");
            foreach (var (key, value) in e)
            {
                if (value is not null && a[key] is { } other)
                {
                    AssertSameShape(value, other, at + "." + key);
                }
            }
        }
        else if (expected is JsonValue ev)
        {
            Assert.Equal(ev.GetValueKind(), actual.GetValueKind());
        }
    }

    private static void AssertSameStatus(JsonObject expected, JsonObject actual)
    {
        AssertSameShape(expected, actual);
        Assert.Equal((string?)expected["reason"], (string?)actual["reason"]);
        Assert.Equal((int?)expected["code"], (int?)actual["code"]);
        Assert.Equal((string?)expected["message"], (string?)actual["message"]);
    }

    [Fact]
    public async Task Leases_LifecycleStatuses_MatchRecordedApiServer()
    {
        var (code, body) = await SendAsync(HttpMethod.Get, LeasePath + "/sharding-controlplane");
        Assert.Equal(HttpStatusCode.NotFound, code);
        AssertSameStatus(Fixture("leases/01-get-missing.json"), body);

        (code, var created) = await SendAsync(HttpMethod.Post, LeasePath, Json(LeaseBody()));
        Assert.Equal(HttpStatusCode.Created, code);
        Assert.Equal("2026-11-21T23:23:54.816248Z", (string?)created["spec"]!["renewTime"]);

        (code, body) = await SendAsync(HttpMethod.Post, LeasePath, Json(LeaseBody()));
        Assert.Equal(HttpStatusCode.Conflict, code);
        AssertSameStatus(Fixture("leases/03-create-again-409.json"), body);

        var rv = (string)created["metadata"]!["resourceVersion"]!;
        (code, var renewed) = await SendAsync(HttpMethod.Put, LeasePath + "/sharding-controlplane", Json(LeaseBody(rv, "2026-11-21T23:24:00.000001Z")));
        Assert.Equal(HttpStatusCode.OK, code);
        Assert.True(long.Parse((string)renewed["metadata"]!["resourceVersion"]!) > long.Parse(rv));

        (code, body) = await SendAsync(HttpMethod.Put, LeasePath + "/sharding-controlplane", Json(LeaseBody(rv, "2026-11-21T23:24:01.000001Z")));
        Assert.Equal(HttpStatusCode.Conflict, code);
        AssertSameStatus(Fixture("leases/07-update-stale-409.json"), body);

        (code, body) = await SendAsync(HttpMethod.Put, LeasePath + "/sharding-controlplane", Json(LeaseBody()));
        Assert.Equal((HttpStatusCode)422, code);
        AssertSameStatus(Fixture("leases/08-update-without-rv-422.json"), body);

        (code, body) = await SendAsync(HttpMethod.Patch, LeasePath + "/sharding-controlplane", Json("{}"));
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, code);
        AssertSameStatus(Fixture("errors/12-patch-wrong-content-type-415.json"), body);

        (code, body) = await SendAsync(HttpMethod.Patch, LeasePath + "/sharding-controlplane", Json("{\"metadata\":{\"resourceVersion\":\"" + rv + "\"},\"spec\":{\"leaseTransitions\":1}}", "application/merge-patch+json"));
        Assert.Equal(HttpStatusCode.Conflict, code);
        AssertSameShape(Fixture("leases/14-patch-merge-stale-rv-409.json"), body);

        (code, body) = await SendAsync(HttpMethod.Delete, LeasePath + "/sharding-controlplane");
        Assert.Equal(HttpStatusCode.OK, code);
        AssertSameShape(Fixture("leases/15-delete.json"), body);
    }

    [Fact]
    public async Task Leases_BadMicroTimeAndInvalidSpec_MatchRecordedApiServer()
    {
        var (code, body) = await SendAsync(HttpMethod.Post, LeasePath, Json(LeaseBody(renew: "2026-11-21T23:30:00.1234567Z")));
        Assert.Equal(HttpStatusCode.BadRequest, code);
        AssertSameShape(Fixture("leases/09-create-microtime-7-digits-400.json"), body);
        (code, _) = await SendAsync(HttpMethod.Post, LeasePath, Json(LeaseBody(renew: "2026-11-21T23:30:00Z")));
        Assert.Equal(HttpStatusCode.BadRequest, code);

        var invalid = LeaseBody(duration: 0).Replace("\"leaseTransitions\":0", "\"leaseTransitions\":-1", StringComparison.Ordinal).Replace("sharding-controlplane", "sharding-badduration", StringComparison.Ordinal);
        (code, body) = await SendAsync(HttpMethod.Post, LeasePath, Json(invalid));
        Assert.Equal((HttpStatusCode)422, code);
        AssertSameStatus(Fixture("leases/11-create-invalid-422.json"), body);
    }

    [Fact]
    public async Task Errors_UnknownResourceAndEmptyList_MatchRecordedApiServer()
    {
        var (code, body) = await SendAsync(HttpMethod.Get, "/apis/coordination.k8s.io/v1/namespaces/sharding-fixtures/leasez");
        Assert.Equal(HttpStatusCode.NotFound, code);
        AssertSameStatus(Fixture("errors/16-unknown-resource-404.json"), body);

        (code, body) = await SendAsync(HttpMethod.Get, "/api/v1/namespaces/sharding-fixtures/pods?labelSelector=app%3Dsharded-svc%2Csharding.dev%2Fservice%3Dsharded-svc");
        Assert.Equal(HttpStatusCode.OK, code);
        AssertSameShape(Fixture("pods/01-list-empty.json"), body);

        (code, body) = await SendAsync(HttpMethod.Get, "/api/v1/namespaces/sharding-fixtures/pods?labelSelector=app%3Dsharded-svc&resourceVersionMatch=Exact");
        Assert.Equal((HttpStatusCode)422, code);
        Assert.Equal("Invalid", (string?)body["reason"]);

        _server.Forbid("list", "pods");
        (code, body) = await SendAsync(HttpMethod.Get, "/api/v1/namespaces/sharding-fixtures/pods?labelSelector=app%3Dsharded-svc");
        Assert.Equal(HttpStatusCode.Forbidden, code);
        AssertSameShape(Fixture("errors/05-forbidden-list-pods-403.json"), body);

        _server.RequiredToken = "good";
        using var request = new HttpRequestMessage(HttpMethod.Get, "/api/v1/namespaces/x/pods/y");
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", "this-token-is-not-valid");
        using var response = await _http.SendAsync(request);
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        AssertSameStatus(Fixture("errors/01-unauthorized-401.json"), JsonNode.Parse(await response.Content.ReadAsStringAsync())!.AsObject());
    }

    [Fact]
    public async Task Watch_ExpiredVersion_Http200ThenOneErrorEventLikeRecorded()
    {
        _server.AddPod("sharding-fixtures", "sharded-svc-0", new Dictionary<string, string> { ["app"] = "sharded-svc" });
        _server.ExpireHistory();
        using var response = await _http.GetAsync("/api/v1/namespaces/sharding-fixtures/pods?watch=1&labelSelector=app%3Dsharded-svc&resourceVersion=1&allowWatchBookmarks=true&timeoutSeconds=10", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType!.MediaType);
        Assert.Null(response.Content.Headers.ContentLength);
        var lines = (await response.Content.ReadAsStringAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var recorded = File.ReadAllText(Path.Combine(Fixtures, "watch/08-pods-watch-too-old-410.ndjson")).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        AssertSameShape(JsonNode.Parse(recorded[0])!, JsonNode.Parse(lines[0])!);
        Assert.StartsWith("too old resource version: 1 (", (string?)JsonNode.Parse(lines[0])!["object"]!["message"], StringComparison.Ordinal);
        var decoded = KubernetesClient.Decode(lines[0], KubernetesJsonContext.Default.Pod);
        Assert.Equal(WatchEventType.Error, decoded.Type);
        Assert.Equal(410, decoded.Status!.Code);
    }

    [Fact]
    public async Task Watch_FromVersion_ReplaysChangesAndBookmarksLikeRecorded()
    {
        var labels = new Dictionary<string, string> { ["app"] = "sharded-svc", ["sharding.dev/service"] = "sharded-svc" };
        var start = _server.Revision;
        _server.AddPod("sharding-fixtures", "sharded-svc-0", labels);
        _server.SetPodReady("sharding-fixtures", "sharded-svc-0", true, "10.244.0.20");
        _server.BeginPodDeletion("sharding-fixtures", "sharded-svc-0");
        _server.Delete("pods", "sharding-fixtures", "sharded-svc-0");

        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        using var response = await _http.GetAsync($"/api/v1/namespaces/sharding-fixtures/pods?watch=1&labelSelector=app%3Dsharded-svc%2Csharding.dev%2Fservice%3Dsharded-svc&resourceVersion={start}&allowWatchBookmarks=true&timeoutSeconds=75", HttpCompletionOption.ResponseHeadersRead, cts.Token);
        var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cts.Token));
        var events = new List<JsonObject>();
        for (var i = 0; i < 4; i++)
        {
            events.Add(JsonNode.Parse((await reader.ReadLineAsync(cts.Token))!)!.AsObject());
        }

        _server.SendBookmarks();
        events.Add(JsonNode.Parse((await reader.ReadLineAsync(cts.Token))!)!.AsObject());
        Assert.Equal(["ADDED", "MODIFIED", "MODIFIED", "DELETED", "BOOKMARK"], events.Select(e => (string?)e["type"]));

        var recorded = File.ReadAllText(Path.Combine(Fixtures, "watch/01-pods-watch.ndjson")).Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();
        AssertSameShape(recorded.First(e => (string?)e["type"] == "BOOKMARK"), events[4]);
        Assert.All(events, e => Assert.Equal(["type", "object"], e.Select(p => p.Key)));
        Assert.NotNull(events[2]["object"]!["metadata"]!["deletionTimestamp"]);

        // The client decodes every recorded event, and reads resourceVersions to resume from.
        foreach (var line in recorded)
        {
            var decoded = KubernetesClient.Decode(line.ToJsonString(), KubernetesJsonContext.Default.Pod);
            Assert.NotNull(decoded.ResourceVersion);
        }
    }

    [Fact]
    public void Models_RecordedLeaseAndPods_DecodeAndMicroTimeRoundTrips()
    {
        var leaseText = File.ReadAllText(Path.Combine(Fixtures, "leases/04-get.json"));
        var lease = JsonSerializer.Deserialize(leaseText, KubernetesJsonContext.Default.Lease)!;
        var recordedRenew = (string)JsonNode.Parse(leaseText)!["spec"]!["renewTime"]!;
        Assert.Equal(recordedRenew, MicroTimeConverter.ToText(lease.Spec.RenewTime!.Value));
        Assert.NotNull(lease.Metadata.ResourceVersion);
        var written = JsonSerializer.Serialize(lease, KubernetesJsonContext.Default.Lease);
        Assert.Contains($"\"renewTime\":\"{recordedRenew}\"", written, StringComparison.Ordinal);

        var pods = JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(Fixtures, "endpointslices/06-list-all-ready.json")), KubernetesJsonContext.Default.PodList);
        Assert.NotNull(pods);
        var readyPod = JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(Fixtures, "endpointslices/05-pod-0-ready.json")), KubernetesJsonContext.Default.Pod)!;
        Assert.True(readyPod.IsReady);
        Assert.Equal("10.244.0.20", readyPod.Status!.PodIP);
        var terminating = JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(Fixtures, "pods/10-delete-graceful.json")), KubernetesJsonContext.Default.Pod)!;
        Assert.NotNull(terminating.Metadata.DeletionTimestamp);
        var status = KubernetesClient.ParseStatus(HttpStatusCode.Forbidden, File.ReadAllBytes(Path.Combine(Fixtures, "errors/06-forbidden-get-lease-403.json")));
        var ex = new KubernetesApiException(status, "get", "leases", "coordination.k8s.io", "sharding-fixtures");
        Assert.True(ex.IsForbidden);
        Assert.Contains("coordination.k8s.io", ex.MissingPermission, StringComparison.Ordinal);
    }
}

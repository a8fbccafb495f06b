using System.Net;
using System.Text;
using System.Text.Json;
using Sharding.Client.Tests.Infrastructure;
using Sharding.Keys;
using Sharding.Mapping;

namespace Sharding.Client.Tests.Routing;

/// <summary>
/// In process, 100,000 random keys under every key rule: the handler sends each request to the owner the map gives for the key
/// that was put in the request. The sidecar runs the same <see cref="ShardKeyExtractor"/> over its own request adapter; the
/// HTTP sample in <see cref="ClusterRoutingTests.Handler_EveryKeyRule_AgreesWithSidecarOwnerOverHttp"/> checks it names the same owner.
/// </summary>
public sealed class KeyAgreementTests
{
    private const int KeyCount = 100_000;

    public static TheoryData<string> Rules => new() { "header", "path", "query", "cookie", "json" };

    [Theory]
    [MemberData(nameof(Rules))]
    public async Task Handler_100000RandomKeys_SendsToMapOwner(string rule)
    {
        var map = TestMaps.Create(5);
        await using var router = ShardRouter.CreateStatic(map);
        var inner = new RecordingHandler();
        using var invoker = new HttpMessageInvoker(new ShardRoutingHandler(router, inner));
        var random = new Random(rule.Length * 7919);
        var misses = new List<string>();
        for (var i = 0; i < KeyCount; i++)
        {
            var key = RandomKeys.Next(random, ascii: rule is "header" or "cookie");
            using var request = Request(rule, key, nonSeekableBody: i % 10 == 0);
            using var response = await invoker.SendAsync(request, CancellationToken.None);
            var expected = map.OwnerOf(key.AsSpan())!;
            if (inner.LastAuthority != expected.Address || (rule == "json" && inner.LastBody != Body(key)))
            {
                misses.Add($"'{key}': sent to {inner.LastAuthority}, owner {expected.Name} at {expected.Address}");
                if (misses.Count > 20)
                {
                    break;
                }
            }
        }

        Assert.Empty(misses);
    }

    private static string Body(string key) => "{\"name\":\"x\",\"account\":{\"plan\":[1,2],\"id\":" + JsonSerializer.Serialize(key) + "}}";

    private static HttpRequestMessage Request(string rule, string key, bool nonSeekableBody)
    {
        var escaped = Uri.EscapeDataString(key);
        var request = rule switch
        {
            "path" => new HttpRequestMessage(HttpMethod.Get, $"http://svc.local:15100/counters/{escaped}/x"),
            "query" => new HttpRequestMessage(HttpMethod.Get, $"http://svc.local:15100/counter?a=1&tenant={escaped}&b"),
            _ => new HttpRequestMessage(HttpMethod.Post, "http://svc.local:15100/counter"),
        };
        if (rule == "header")
        {
            request.Headers.TryAddWithoutValidation(ShardKeyRule.DefaultHeader, key);
        }
        else if (rule == "cookie")
        {
            request.Headers.TryAddWithoutValidation("cookie", $"theme=dark; sid={key}; x=y");
        }
        else if (rule == "json")
        {
            var bytes = Encoding.UTF8.GetBytes(Body(key));
            request.Content = nonSeekableBody
                ? new StreamContent(new NonSeekableStream(bytes))
                : new ByteArrayContent(bytes);
        }

        return request;
    }
}

/// <summary>Maps for in-process tests: members pod-i at 127.0.0.1:1510i, every key rule.</summary>
internal static class TestMaps
{
    public static readonly ShardKeyPolicy AllRules = new()
    {
        Rules = [ShardKeyRule.Parse("header:x-shard-key"), ShardKeyRule.Parse("path:/counters/{key}"), ShardKeyRule.Parse("query:tenant"),
            ShardKeyRule.Parse("cookie:sid"), ShardKeyRule.Parse("json:$.account.id")],
    };

    public static ShardMap Create(int members, ShardKeyPolicy? policy = null, long generation = 1, uint weight = 1) =>
        ShardMap.Create("svc", generation, Enumerable.Range(0, members).Select(i => new ShardMember($"pod-{i}", $"127.0.0.1:{15100 + i}", weight)),
            keyPolicy: policy ?? AllRules);
}

/// <summary>The innermost handler: records where the request went, its Host header and body, and answers 200.</summary>
internal sealed class RecordingHandler : HttpMessageHandler
{
    public string? LastAuthority { get; private set; }

    public Uri? LastUri { get; private set; }

    public string? LastHost { get; private set; }

    public string? LastBody { get; private set; }

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        LastUri = request.RequestUri;
        LastAuthority = request.RequestUri!.Authority;
        LastHost = request.Headers.Host;
        LastBody = request.Content is null ? null : await request.Content.ReadAsStringAsync(cancellationToken);
        return new HttpResponseMessage(HttpStatusCode.OK);
    }
}

/// <summary>A body stream that can be read once, front to back (like a request body being uploaded).</summary>
internal sealed class NonSeekableStream(byte[] data) : Stream
{
    private int _position;

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override int Read(byte[] buffer, int offset, int count)
    {
        // Small reads: the key extraction must cope with a body that arrives in pieces.
        var n = Math.Min(Math.Min(count, 7), data.Length - _position);
        Array.Copy(data, _position, buffer, offset, n);
        _position += n;
        return n;
    }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}

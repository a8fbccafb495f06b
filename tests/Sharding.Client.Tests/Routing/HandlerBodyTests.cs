using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Sharding.Client.Tests.Infrastructure;
using Sharding.Keys;

namespace Sharding.Client.Tests.Routing;

/// <summary>Bodies the handler must not read, or must not send twice: gRPC streams, retries of consumed uploads.</summary>
public sealed class HandlerBodyTests
{
    /// <summary>
    /// As the sidecar: only a JSON body is read for a JSON key; without another key the policy's fallback applies. A gRPC body
    /// is length-prefixed protobuf (and a streaming call's body only ends when the caller ends it, so buffering it first would
    /// never send the call); a multipart, form, text or binary body is not JSON either. Each body here never ends.
    /// </summary>
    [Theory]
    [InlineData("application/grpc")]
    [InlineData("multipart/form-data; boundary=b")]
    [InlineData("application/x-www-form-urlencoded")]
    [InlineData("text/plain; charset=utf-8")]
    [InlineData("application/octet-stream")]
    public async Task SendAsync_NonJsonBodyUnderJsonRule_BodyNotReadAndNoKeyFallbackAppliedLikeSidecar(string contentType)
    {
        var policy = TestMaps.AllRules with { NoKey = NoKeyAction.FixedMember, FallbackMember = "pod-2" };
        await using var router = ShardRouter.CreateStatic(TestMaps.Create(3, policy));
        var inner = new HeadersOnlyHandler();
        using var invoker = new HttpMessageInvoker(new ShardRoutingHandler(router, inner));
        using var content = new EndlessContent(contentType);
        using var request = new HttpRequestMessage(HttpMethod.Post, "http://svc.example/chat.Chat/Talk") { Version = HttpVersion.Version20, Content = content };

        var send = invoker.SendAsync(request, CancellationToken.None);
        var finished = await Task.WhenAny(send, Task.Delay(TimeSpan.FromSeconds(5))) == send;

        Assert.True(finished, "the handler waited for a body that never ends");
        using var response = await send;
        Assert.Equal("127.0.0.1:15102", inner.LastAuthority);
        Assert.False(content.Serialized);
    }

    [Theory]
    [InlineData("application/merge-patch+json")]
    [InlineData("text/json; charset=utf-8")]
    public async Task SendAsync_JsonSuffixTypes_AreReadForTheKey(string contentType)
    {
        var map = TestMaps.Create(3);
        await using var router = ShardRouter.CreateStatic(map);
        var inner = new RecordingHandler();
        using var invoker = new HttpMessageInvoker(new ShardRoutingHandler(router, inner));
        using var request = new HttpRequestMessage(HttpMethod.Post, "http://svc.example/counter")
        {
            Content = new StringContent("{\"account\":{\"id\":\"acct-7\"}}", MediaTypeHeaderValue.Parse(contentType)),
        };

        using var response = await invoker.SendAsync(request, CancellationToken.None);

        Assert.Equal(map.OwnerOf("acct-7".AsSpan())!.Address, inner.LastAuthority);
        Assert.Equal("{\"account\":{\"id\":\"acct-7\"}}", inner.LastBody);
    }

    [Fact]
    public async Task SendAsync_NonSeekableBodySentTwiceByInnerRetry_NeverSendsItTruncated()
    {
        // A retry inside the routing handler sends the same content again. The key was found in the first bytes, so the body
        // was replaced by one that replays those bytes and then the rest of the original stream, which the first send read
        // to its end: a second send must fail as the original StreamContent would, not send the first bytes alone.
        await using var server = await RecordingServer.StartAsync(3);
        await using var router = ShardRouter.CreateStatic(server.Map(TestMaps.AllRules));
        using var invoker = new HttpMessageInvoker(new ShardRoutingHandler(router,
            new SendTwiceHandler(new SocketsHttpHandler { UseProxy = false, UseCookies = false })));
        var body = "{\"account\":{\"id\":\"acct-7\"},\"pad\":\"" + new string('p', 20_000) + "\"}";
        using var request = new HttpRequestMessage(HttpMethod.Post, "http://svc.example/counter")
        {
            Content = new StreamContent(new NonSeekableStream(Encoding.UTF8.GetBytes(body))),
        };

        await Assert.ThrowsAnyAsync<Exception>(() => invoker.SendAsync(request, CancellationToken.None));

        await Task.Delay(200); // let the server finish recording whatever it got
        var received = Assert.Single(server.Received);
        Assert.Equal(body, received.Body);
    }

    [Fact]
    public async Task SendAsync_SeekableBodyRetriedByOuterHandler_SecondAttemptGoesToTheKeysOwnerToo()
    {
        // A retry policy outside the routing handler sends the same request through it again. The first send read the
        // seekable body to its end; the second decision must still be made on the key, not on an empty body.
        await using var server = await RecordingServer.StartAsync(3);
        var map = server.Map(TestMaps.AllRules);
        var key = Enumerable.Range(0, 100).Select(i => $"acct-{i}").First(k => map.OwnerOf(k.AsSpan())!.Name != "pod-2");
        var owner = map.OwnerOf(key.AsSpan())!;
        await using var router = ShardRouter.CreateStatic(server.Map(TestMaps.AllRules with { NoKey = NoKeyAction.FixedMember, FallbackMember = "pod-2" }));
        using var invoker = new HttpMessageInvoker(new SendTwiceHandler(new ShardRoutingHandler(router,
            new SocketsHttpHandler { UseProxy = false, UseCookies = false })));
        var body = "{\"account\":{\"id\":\"" + key + "\"},\"n\":1}";
        using var request = new HttpRequestMessage(HttpMethod.Post, "http://svc.example/counter")
        {
            Content = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes(body))),
        };

        using var response = await invoker.SendAsync(request, CancellationToken.None);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var received = server.Received.ToArray();
        Assert.Equal(2, received.Length);
        Assert.All(received, r => Assert.Equal((owner.Address, body), ($"127.0.0.1:{r.Port}", r.Body)));
    }

    [Fact]
    public async Task SendAsync_RetriedByOuterHandlerAfterMapEmptied_SecondAttemptGoesToServiceAddress()
    {
        // The first attempt was rewritten to the owner; the map then lost every member. The retry must go where a request
        // without an owner goes, the Service address the caller gave, not to the previous owner left in RequestUri.
        await using var server = await RecordingServer.StartAsync(4);
        var service = $"127.0.0.1:{server.Ports[3]}";
        await using var router = ShardRouter.CreateStatic(server.Map(TestMaps.AllRules, members: 3));
        using var invoker = new HttpMessageInvoker(new SendTwiceHandler(
            new ShardRoutingHandler(router, new SocketsHttpHandler { UseProxy = false, UseCookies = false }),
            between: () => router.TryPublish(server.Map(TestMaps.AllRules, generation: 2, members: 3, weight: 0))));
        using var request = new HttpRequestMessage(HttpMethod.Get, $"http://{service}/counter?x=1");
        request.Headers.TryAddWithoutValidation("x-shard-key", "k-1");

        using var response = await invoker.SendAsync(request, CancellationToken.None);

        var received = server.Received.ToArray();
        Assert.Equal(2, received.Length);
        Assert.NotEqual(server.Ports[3], received[0].Port);
        Assert.Equal(server.Ports[3], received[1].Port);
        Assert.Equal(service, received[1].Host);
    }

    /// <summary>Answers 200 at once without reading the request body; records the authority.</summary>
    private sealed class HeadersOnlyHandler : HttpMessageHandler
    {
        public string? LastAuthority { get; private set; }

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            LastAuthority = request.RequestUri!.Authority;
            return Task.FromResult(new HttpResponseMessage(HttpStatusCode.OK));
        }
    }

    /// <summary>A streaming body (a gRPC call's request stream): one frame, then nothing until disposed.</summary>
    private sealed class EndlessContent : HttpContent
    {
        private readonly TaskCompletionSource _end = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public EndlessContent(string mediaType)
        {
            Headers.ContentType = MediaTypeHeaderValue.Parse(mediaType);
        }

        public bool Serialized { get; private set; }

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            Serialized = true;
            await stream.WriteAsync(new byte[] { 0, 0, 0, 0, 2, 8, 1 });
            await stream.FlushAsync();
            await _end.Task;
        }

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }

        protected override void Dispose(bool disposing)
        {
            _end.TrySetResult();
            base.Dispose(disposing);
        }
    }
}

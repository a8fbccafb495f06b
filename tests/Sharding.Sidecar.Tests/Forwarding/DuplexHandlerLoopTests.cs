using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Sharding.Sidecar.Forwarding;
using Sharding.Sidecar.Tests.Infrastructure;
using Sharding.Sidecar.Transport;

namespace Sharding.Sidecar.Tests.Forwarding;

/// <summary>
/// The full path's HTTP/1.1 client puts a request's app connection on the event loop of the client connection it came on
/// (the request says which), so its continuations run on the thread that serves that client.
/// </summary>
public sealed class DuplexHandlerLoopTests
{
    [Fact]
    public async Task A_request_that_names_its_clients_loop_gets_and_gives_back_an_app_connection_on_that_loop()
    {
        await using var cluster = await Cluster.StartAsync(size: 1, sidecarSettings: new Dictionary<string, string?> { ["Sidecar:IoThreads"] = "2" });
        var (app, sidecar) = (cluster.Apps[0], cluster.Sidecars[0]);
        var loops = sidecar.Services.GetRequiredService<EpollLoops>();
        var (first, second) = (loops.Next(), loops.Next());

        using var handler = new DuplexHttp1Handler(new IPEndPoint(IPAddress.Loopback, app.Port), TimeSpan.FromSeconds(5), TimeProvider.System, loops);
        using var invoker = new HttpMessageInvoker(handler, disposeHandler: false);
        foreach (var loop in new[] { first, first, first, second, second })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{app.Port}/p") { Version = HttpVersion.Version11 };
            request.Headers.Add("x-shard-key", "k");
            request.Options.Set(DuplexHttp1Handler.Loop, loop); // sent from the test's thread, which is no loop's
            using var response = await invoker.SendAsync(request, CancellationToken.None);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            await response.Content.ReadAsStringAsync();
        }

        // One connection per loop, each kept on its own loop's idle stack (the first was reused twice).
        Assert.Equal(1, handler.Pool.IdleOn(first.Index));
        Assert.Equal(1, handler.Pool.IdleOn(second.Index));
    }

    [Fact]
    public async Task The_full_path_keeps_an_http2_clients_app_connections_on_that_clients_loop()
    {
        // Kestrel runs HTTP/2 requests on the thread pool: without the client's loop named, each would rent on the next
        // loop round robin, and its response would be read on another thread than the one serving its client.
        await using var cluster = await Cluster.StartAsync(size: 1, sidecarSettings: new Dictionary<string, string?> { ["Sidecar:IoThreads"] = "2" });
        var sidecar = cluster.Sidecars[0];
        var pool = sidecar.Services.GetRequiredService<HttpForwarder>().AppHttp1Handler.Pool;

        using var client = Cluster.Client(http2: true); // one connection, prior knowledge
        for (var i = 0; i < 10; i++)
        {
            using var request = Cluster.Request(HttpMethod.Get, $"http://127.0.0.1:{sidecar.Port}/p", http2: true);
            request.Headers.Add("x-shard-key", $"k{i}");
            using var response = await client.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            await response.Content.ReadAsStringAsync();
        }

        var idle = new[] { pool.IdleOn(0), pool.IdleOn(1) };
        Assert.True(idle.Sum() >= 1 && idle.Contains(0), $"app connections idle on loops 0 and 1: {idle[0]}, {idle[1]}");
    }
}

using System.Buffers;
using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using Sharding.Sidecar.PeerLink;
using Sharding.Sidecar.Tests.Infrastructure;
using Sharding.Sidecar.Transport;

namespace Sharding.Sidecar.Tests.PeerLink;

/// <summary>
/// An owner that ends a kept-alive tunnel just as the forwarding sidecar sends the next request on it (a drain, max age or
/// shutdown closing it after its last response): the owner's clean end says "nothing unanswered was processed", so the
/// request goes again on a new tunnel, its body included when the first send carried it whole. An owner that resets the
/// tunnel instead may have processed it: 502, never a second delivery.
/// </summary>
public sealed class OwnerEndedTunnelTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    [Theory]
    [InlineData(100, false, HttpStatusCode.OK, 2)] // refused, sent again whole on a new tunnel
    [InlineData(40_000, false, HttpStatusCode.BadGateway, 1)] // the body went out in pieces: the sidecar no longer holds it
    [InlineData(100, true, HttpStatusCode.BadGateway, 1)] // a reset (the owner may have processed it): never sent twice
    public async Task A_request_on_a_tunnel_the_owner_ends_as_it_arrives_goes_again_only_when_the_owner_did_not_process_it(
        int bodyLength, bool ownerResets, HttpStatusCode expected, int deliveries)
    {
        var directory = Path.Combine(Path.GetTempPath(), "sharding-sidecar-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(directory);
        await using var owner = FakeOwner.Start(ownerResets);
        await using var app0 = await EchoApp.StartAsync("pod-0");
        var port0 = TestSidecar.FreePort();
        var mapFile = Path.Combine(directory, "map.yaml");
        await File.WriteAllTextAsync(mapFile, Cluster.MapYaml([port0, owner.Port]));
        await using var sidecar = await TestSidecar.StartAsync("pod-0", port0, app0.Port, mapFile);
        var key = Enumerable.Range(0, 1000).Select(i => $"ended-{i}").First(k => sidecar.Store.Current!.OwnerOf(k.AsSpan())!.Name == "pod-1");

        // One client connection: its session keeps the first request's tunnel for the second.
        using var client = new HttpClient(new SocketsHttpHandler { UseProxy = false, MaxConnectionsPerServer = 1 }) { Timeout = Timeout };
        async Task<(HttpStatusCode Status, string Body)> PostAsync(string body)
        {
            using var request = Cluster.Request(HttpMethod.Post, $"http://127.0.0.1:{port0}/counter");
            request.Headers.Add("x-shard-key", key);
            request.Content = new StringContent(body);
            using var response = await client.SendAsync(request);
            return (response.StatusCode, await response.Content.ReadAsStringAsync());
        }

        var first = await PostAsync("first");
        Assert.Equal(HttpStatusCode.OK, first.Status);
        Assert.Equal("tunnel 1: first", first.Body);

        var body = new string('b', bodyLength);
        var second = await PostAsync(body);
        Assert.Equal(expected, second.Status);
        if (expected == HttpStatusCode.OK)
        {
            Assert.Equal("tunnel 2: " + body, second.Body); // whole, on a new tunnel
        }
        else
        {
            Assert.Contains("pod-1", second.Body, StringComparison.Ordinal); // the sidecar's 502 names the owner it failed to reach
        }

        Assert.Equal(deliveries, owner.Received.Count(r => r == body));
    }

    /// <summary>
    /// A peer sidecar that speaks the link with the real <see cref="LinkConnection"/> and serves each tunnel as the owner's
    /// side does (<see cref="LinkStreamConnection"/>): it answers the first request on the first tunnel and, when the
    /// second arrives on it, ends the tunnel cleanly (or resets it) without answering; other tunnels are answered.
    /// </summary>
    private sealed class FakeOwner : IAsyncDisposable
    {
        private readonly EpollLoop _loop = new("fake-owner-io", 0, inline: false);
        private readonly Socket _listener = LoopbackListener.Listen();
        private readonly ConcurrentBag<EpollConnection> _connections = [];
        private readonly CancellationTokenSource _stop = new();
        private readonly bool _reset;
        private Task _accepting = Task.CompletedTask;
        private int _tunnels;

        private FakeOwner(bool reset) => _reset = reset;

        public int Port => ((IPEndPoint)_listener.LocalEndPoint!).Port;

        /// <summary>Every request body that arrived, answered or not.</summary>
        public ConcurrentQueue<string> Received { get; } = new();

        public static FakeOwner Start(bool reset)
        {
            var owner = new FakeOwner(reset);
            owner._accepting = LoopbackListener.AcceptAllAsync(owner._listener, owner.OnAccepted, owner._stop.Token);
            return owner;
        }

        private void OnAccepted(Socket socket)
        {
            var connection = new EpollConnection(EpollSocket.Attach(socket, _loop), MemoryPool<byte>.Shared, 1 << 20, 1 << 20, NullLogger.Instance);
            connection.Start();
            _connections.Add(connection);
            LinkConnection.Accept(connection, _loop, stream => _ = ServeAsync(new LinkStreamConnection(stream, connection)), metrics: null, NullLogger.Instance);
        }

        private async Task ServeAsync(LinkStreamConnection tunnel)
        {
            var number = Interlocked.Increment(ref _tunnels);
            try
            {
                // Bounded by the tunnel: every turn reads one request or ends.
                for (var request = 1; await ReadBodyAsync(tunnel.Transport.Input) is { } body; request++)
                {
                    Received.Enqueue(body);
                    if (number == 1 && request == 2)
                    {
                        if (_reset)
                        {
                            tunnel.Abort(new Microsoft.AspNetCore.Connections.ConnectionAbortedException("reset"));
                        }

                        return; // the clean end below: what was sent stands, this request was not processed
                    }

                    var reply = Encoding.ASCII.GetBytes($"tunnel {number}: {body}");
                    await tunnel.Transport.Output.WriteAsync(Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Length: {reply.Length}\r\n\r\n"));
                    await tunnel.Transport.Output.WriteAsync(reply);
                }
            }
            finally
            {
                await tunnel.DisposeAsync();
            }
        }

        /// <summary>The next request's body (Content-Length framed), or null when the tunnel ended.</summary>
        private static async Task<string?> ReadBodyAsync(PipeReader input)
        {
            // Bounded by the request: every turn reads more of it or ends.
            while (true)
            {
                var result = await input.ReadAsync().AsTask().WaitAsync(Timeout);
                var text = Encoding.ASCII.GetString(result.Buffer.ToArray());
                var headEnd = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
                if (headEnd >= 0)
                {
                    var head = text[..headEnd];
                    var lengthLine = head.Split("\r\n").FirstOrDefault(l => l.StartsWith("content-length:", StringComparison.OrdinalIgnoreCase));
                    var length = lengthLine is null ? 0 : int.Parse(lengthLine["content-length:".Length..].Trim(), System.Globalization.CultureInfo.InvariantCulture);
                    if (text.Length >= headEnd + 4 + length)
                    {
                        input.AdvanceTo(result.Buffer.GetPosition(headEnd + 4 + length));
                        return text.Substring(headEnd + 4, length);
                    }
                }

                if (result.IsCompleted)
                {
                    input.AdvanceTo(result.Buffer.End);
                    return null;
                }

                input.AdvanceTo(result.Buffer.Start, result.Buffer.End);
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            _listener.Dispose();
            await _accepting;
            foreach (var connection in _connections)
            {
                await connection.DisposeAsync();
            }

            _loop.Dispose();
            _stop.Dispose();
        }
    }
}

using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace Sharding.Testing;

/// <summary>
/// A TCP hop on 127.0.0.1 that can be cut: while cut, its connections are closed and new ones are accepted and then held
/// silent (a partition: the peer hears nothing, not even a refusal); <see cref="Restore"/> forwards again.
/// </summary>
public sealed class TcpForwarder : IAsyncDisposable
{
    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private readonly ConcurrentDictionary<Socket, byte> _open = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private volatile bool _cut;

    public TcpForwarder()
    {
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(64);
        Port = ((IPEndPoint)_listener.LocalEndPoint!).Port;
        _accepting = AcceptAsync();
    }

    /// <summary>The port it listens on.</summary>
    public int Port { get; }

    /// <summary>The port on 127.0.0.1 it forwards to (set it before the first connection arrives).</summary>
    public int TargetPort { get; set; }

    /// <summary>Closes every connection and holds new ones silent.</summary>
    public void Cut()
    {
        _cut = true;
        CloseAll();
    }

    /// <summary>Closes the held connections and forwards new ones again.</summary>
    public void Restore()
    {
        _cut = false;
        CloseAll();
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Dispose();
        CloseAll();
        await _accepting.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        _stop.Dispose();
    }

    private void CloseAll()
    {
        foreach (var socket in _open.Keys)
        {
            _open.TryRemove(socket, out _);
            socket.Dispose();
        }
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }

            _open[client] = 0;
            if (!_cut)
            {
                _ = ForwardAsync(client);
            }
        }
    }

    private async Task ForwardAsync(Socket client)
    {
        var upstream = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        _open[upstream] = 0;
        try
        {
            await upstream.ConnectAsync(new IPEndPoint(IPAddress.Loopback, TargetPort), _stop.Token);
            await Task.WhenAny(PumpAsync(client, upstream), PumpAsync(upstream, client));
        }
        catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
        {
        }
        finally
        {
            foreach (var socket in new[] { client, upstream })
            {
                _open.TryRemove(socket, out _);
                socket.Dispose();
            }
        }
    }

    private async Task PumpAsync(Socket from, Socket to)
    {
        var buffer = new byte[16 * 1024];
        try
        {
            for (var read = await from.ReceiveAsync(buffer, _stop.Token); read > 0; read = await from.ReceiveAsync(buffer, _stop.Token))
            {
                await to.SendAsync(buffer.AsMemory(0, read), _stop.Token);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
        {
        }
    }
}

using System.Net;
using System.Net.Sockets;

namespace Sharding.Sidecar.Tests.Infrastructure;

/// <summary>A listening socket on 127.0.0.1 (a free port) and the accept loop test peers run on it.</summary>
internal static class LoopbackListener
{
    public static Socket Listen(int backlog = 64)
    {
        var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(backlog);
        return listener;
    }

    /// <summary>Hands every accepted socket to <paramref name="accepted"/> until <paramref name="stop"/> or the listener is
    /// disposed.</summary>
    public static async Task AcceptAllAsync(Socket listener, Action<Socket> accepted, CancellationToken stop)
    {
        // Bounded by the test: ends when it stops the loop or disposes the listener.
        while (!stop.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await listener.AcceptAsync(stop);
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            accepted(socket);
        }
    }
}

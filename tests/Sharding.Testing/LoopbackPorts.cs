using System.Net;
using System.Net.Sockets;

namespace Sharding.Testing;

/// <summary>Picks a free port on 127.0.0.1 for tests that must know a port before the server that binds it starts.</summary>
public static class LoopbackPorts
{
    // Below Linux's ephemeral range (32768–60999): a port the OS hands out for "port 0" is also what outgoing connections of
    // the other test processes get as their source port, so it can be taken between choosing it and binding it.
    private const int First = 20000;
    private const int Last = 32000;

    /// <summary>A port in 20000–31999 that could be bound on 127.0.0.1 a moment ago.</summary>
    public static int Free()
    {
        for (var attempt = 0; attempt < 500; attempt++)
        {
            var port = Random.Shared.Next(First, Last);
            try
            {
                using var listener = new TcpListener(IPAddress.Loopback, port);
                listener.Start();
                return port;
            }
            catch (SocketException)
            {
                // Taken: try another.
            }
        }

        throw new InvalidOperationException($"no free port on 127.0.0.1 between {First} and {Last}");
    }
}

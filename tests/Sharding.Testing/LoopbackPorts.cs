using System.Net;
using System.Net.Sockets;

namespace Sharding.Testing;

/// <summary>Picks a free port on 127.0.0.1 for tests that must know a port before the server that binds it starts.</summary>
/// <remarks>
/// Test projects run in parallel and pick from the same range, and a child process may bind its port seconds after the
/// pick: so each pick also takes a lease, a file named after the port in a directory all test processes share, and no other
/// test process picks that port while the lease is younger than <see cref="LeaseTime"/>.
/// </remarks>
public static class LoopbackPorts
{
    // Below Linux's ephemeral range (32768–60999): a port the OS hands out for "port 0" is also what outgoing connections of
    // the other test processes get as their source port, so it can be taken between choosing it and binding it.
    private const int First = 20000;
    private const int Last = 32000;

    private static readonly TimeSpan LeaseTime = TimeSpan.FromMinutes(2);

    private static readonly string LeaseDirectory = Path.Combine(Path.GetTempPath(), "sharding-test-ports");

    /// <summary>A port in 20000–31999 that could be bound on 127.0.0.1 a moment ago and that no other test process holds.</summary>
    public static int Free()
    {
        Directory.CreateDirectory(LeaseDirectory);
        for (var attempt = 0; attempt < 500; attempt++)
        {
            var port = Random.Shared.Next(First, Last);
            if (!TryLease(port))
            {
                continue;
            }

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

    private static bool TryLease(int port)
    {
        var path = Path.Combine(LeaseDirectory, port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        try
        {
            using (new FileStream(path, FileMode.CreateNew, FileAccess.Write))
            {
            }

            return true;
        }
        catch (IOException) when (File.Exists(path))
        {
            // Held, unless the lease is stale: then renew it (two processes may both renew a stale one; the bind check and
            // the callers' own retries cover that rare case).
            if (TimeProvider.System.GetUtcNow().UtcDateTime - File.GetLastWriteTimeUtc(path) < LeaseTime)
            {
                return false;
            }

            File.SetLastWriteTimeUtc(path, TimeProvider.System.GetUtcNow().UtcDateTime);
            return true;
        }
    }
}

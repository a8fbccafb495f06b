using System.Diagnostics;
using System.Text;

namespace Sharding.Sidecar.Tests.Infrastructure;

/// <summary>
/// An SSE stream over h2c opened by the real <c>nghttp -v</c>, which logs every HTTP/2 frame it sends and receives (with its
/// time since connect): the frame-level view of GOAWAYs and stream ends.
/// </summary>
internal sealed class NghttpSseStream : IDisposable
{
    private readonly StringBuilder _output = new();
    private readonly TaskCompletionSource _firstData = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private bool _disposed;

    private NghttpSseStream(int port, string key)
    {
        Process = Process.Start(new ProcessStartInfo("nghttp",
            ["-v", "-H", $"x-shard-key: {key}", "-H", "accept: text/event-stream", $"http://127.0.0.1:{port}/sse-forever"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        })!;
        Process.OutputDataReceived += (_, e) =>
        {
            lock (_output)
            {
                _output.AppendLine(e.Data);
            }

            if (e.Data?.Contains("recv DATA frame", StringComparison.Ordinal) == true)
            {
                _firstData.TrySetResult();
            }
        };
        Process.BeginOutputReadLine();
        Process.BeginErrorReadLine();
    }

    public Process Process { get; }

    /// <summary>Completes when the first DATA frame of the stream has arrived.</summary>
    public Task FirstData => _firstData.Task;

    /// <summary>Opens <c>GET /sse-forever</c> with the key on the sidecar's data port.</summary>
    public static NghttpSseStream Open(int port, string key) => new(port, key);

    /// <summary>Everything nghttp logged so far.</summary>
    public string Output()
    {
        lock (_output)
        {
            return _output.ToString();
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (!Process.HasExited)
        {
            Process.Kill();
        }

        Process.Dispose();
    }
}

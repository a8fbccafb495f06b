using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Sharding.Cli.Demo;

namespace Sharding.Cli.ControlPlane;

/// <summary>
/// A real control plane, started from its built dll as a process in local mode, both listeners on 127.0.0.1:0, with a membership
/// file in a temporary folder. Tells its HTTP (directory) and gRPC (Watch) URLs apart by asking each for <c>/healthz</c> over HTTP/1.1.
/// </summary>
internal sealed class ControlPlaneProcess : IAsyncDisposable
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);
    private readonly Process _process;
    private readonly string _directory;

    private ControlPlaneProcess(Process process, string directory, Uri http, Uri grpc)
    {
        _process = process;
        _directory = directory;
        HttpUrl = http;
        GrpcUrl = grpc;
    }

    public Uri HttpUrl { get; }

    public Uri GrpcUrl { get; }

    public string MembershipPath => Path.Combine(_directory, "membership.yaml");

    public static string Yaml(int members, string service = "svc", int tableSize = 251)
    {
        var text = new StringBuilder().Append(CultureInfo.InvariantCulture, $"services:\n  {service}:\n    tableSize: {tableSize}\n    members:\n");
        for (var i = 0; i < members; i++)
        {
            text.Append(CultureInfo.InvariantCulture, $"      - {{ name: {service}-{i}, address: 127.0.0.1:{21000 + i} }}\n");
        }

        return text.ToString();
    }

    public static async Task<ControlPlaneProcess> StartAsync(string membershipYaml)
    {
        var directory = Path.Combine(Path.GetTempPath(), "sharding-cli-cp-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(directory);
        await File.WriteAllTextAsync(Path.Combine(directory, "membership.yaml"), membershipYaml).ConfigureAwait(false);
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in new[]
        {
            ComponentPaths.Locate().ControlPlane,
            "--ControlPlane:HttpUrl=http://127.0.0.1:0",
            "--ControlPlane:GrpcUrl=http://127.0.0.1:0",
            $"--ControlPlane:MembershipFile={Path.Combine(directory, "membership.yaml")}",
            $"--ControlPlane:LeaseFile={Path.Combine(directory, "leader.lock")}",
            "--ControlPlane:Debounce=00:00:00.100",
            "--ControlPlane:MembershipPollInterval=00:00:00.100",
            "--ControlPlane:PingInterval=00:00:00.500",
            "--Logging:LogLevel:Default=Warning",
            "--Logging:LogLevel:Microsoft.Hosting.Lifetime=Information",
        })
        {
            info.ArgumentList.Add(arg);
        }

        var process = Process.Start(info) ?? throw new InvalidOperationException("dotnet did not start");
        var urls = new List<Uri>();
        var bound = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        process.OutputDataReceived += (_, e) =>
        {
            const string Prefix = "Now listening on: ";
            if (e.Data?.IndexOf(Prefix, StringComparison.Ordinal) is int at and >= 0)
            {
                lock (urls)
                {
                    urls.Add(new Uri(e.Data[(at + Prefix.Length)..].Trim()));
                    if (urls.Count == 2)
                    {
                        bound.TrySetResult();
                    }
                }
            }
        };
        process.ErrorDataReceived += static (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            await bound.Task.WaitAsync(StartTimeout).ConfigureAwait(false);
            using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
            Uri? http = null;
            foreach (var url in urls)
            {
                try
                {
                    using var response = await client.GetAsync(new Uri(url, "/healthz")).ConfigureAwait(false);
                    if (response.StatusCode == HttpStatusCode.OK)
                    {
                        http = url;
                    }
                }
                catch (HttpRequestException)
                {
                    // The HTTP/2-only gRPC listener does not speak HTTP/1.1.
                }
            }

            var result = new ControlPlaneProcess(
                process, directory, http ?? throw new InvalidOperationException("no listener answered /healthz"), urls.Single(u => u != http));
            for (var attempt = 0; attempt < 600; attempt++)
            {
                using var ready = await client.GetAsync(new Uri(http, "/readyz")).ConfigureAwait(false);
                if (ready.StatusCode == HttpStatusCode.OK)
                {
                    return result;
                }

                await Task.Delay(100).ConfigureAwait(false);
            }

            throw new InvalidOperationException("the control plane never became ready");
        }
        catch
        {
            process.Kill(entireProcessTree: true);
            process.Dispose();
            throw;
        }
    }

    /// <summary>A loopback URL nothing listens on (a port just released).</summary>
    public static Uri UnusedUrl()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return new Uri($"http://127.0.0.1:{port.ToString(CultureInfo.InvariantCulture)}");
    }

    public void WriteMembership(string yaml)
    {
        var temporary = MembershipPath + ".tmp";
        File.WriteAllText(temporary, yaml);
        File.Move(temporary, MembershipPath, overwrite: true);
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30)).ConfigureAwait(false);
            }
        }
        finally
        {
            _process.Dispose();
            try
            {
                Directory.Delete(_directory, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}

/// <summary>Runs the built <c>shardctl</c> as a process, so exit code, stdout and stderr are what a user sees.</summary>
internal sealed class ShardCtlProcess : IDisposable
{
    private static readonly TimeSpan ExitTimeout = TimeSpan.FromSeconds(120);
    private readonly Process _process;
    private readonly StringBuilder _stdout = new();
    private readonly StringBuilder _stderr = new();
    private readonly TaskCompletionSource _firstLine = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private ShardCtlProcess(params string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(Locate());
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        _process = Process.Start(info) ?? throw new InvalidOperationException("dotnet did not start");
        _process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                return;
            }

            lock (_stdout)
            {
                _stdout.Append(e.Data).Append('\n');
            }

            _firstLine.TrySetResult();
        };
        _process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (_stderr)
                {
                    _stderr.Append(e.Data).Append('\n');
                }
            }
        };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public static ShardCtlProcess Start(params string[] args) => new(args);

    /// <summary>
    /// The CLI's own build output (its deps.json and every dependency beside it), as a user runs it; the copy in this test folder
    /// lacks the dependencies that only its own folder has (Microsoft.Extensions.Logging.Abstractions for <c>watch</c>).
    /// </summary>
    private static string Locate()
    {
        var root = ComponentPaths.Locate().RepositoryRoot;
        var own = new DirectoryInfo(AppContext.BaseDirectory).Parent?.Name ?? "Debug";
        return new[] { own, "Debug", "Release" }
            .Select(c => Path.Combine(root, "controlplane", "Sharding.Cli", "bin", c, "net10.0", "shardctl.dll"))
            .FirstOrDefault(File.Exists) ?? throw new InvalidOperationException("shardctl.dll is not built: run `dotnet build controlplane/Sharding.Cli`");
    }

    public static async Task<(int Exit, string Out, string Err)> RunAsync(params string[] args)
    {
        using var shardctl = Start(args);
        return await shardctl.WaitForExitAsync().ConfigureAwait(false);
    }

    /// <summary>Completes when the first stdout line arrived.</summary>
    public Task FirstLine => _firstLine.Task;

    public async Task<(int Exit, string Out, string Err)> WaitForExitAsync()
    {
        try
        {
            await _process.WaitForExitAsync().WaitAsync(ExitTimeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            _process.Kill(entireProcessTree: true);
            throw;
        }

        // The parameterless WaitForExit also waits for the redirected streams to reach their end.
        _process.WaitForExit();
        lock (_stdout)
        {
            lock (_stderr)
            {
                return (_process.ExitCode, _stdout.ToString(), _stderr.ToString());
            }
        }
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }

        _process.Dispose();
    }
}

using System.Globalization;
using System.Security.Cryptography.X509Certificates;
using YamlDotNet.RepresentationModel;

namespace Sharding.Kubernetes;

/// <summary>Where the API server is and how to authenticate to it: in-cluster (service account) or from a kubeconfig.</summary>
public sealed record KubernetesClientConfiguration
{
    /// <summary>The service-account folder every pod gets.</summary>
    public const string ServiceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount";

    /// <summary>The API server, e.g. <c>https://10.96.0.1:443</c>.</summary>
    public required Uri Server { get; init; }

    /// <summary>The default namespace (service-account namespace file, or the kubeconfig context's namespace).</summary>
    public string? Namespace { get; init; }

    /// <summary>Bearer token source, if any.</summary>
    public BearerTokenSource? Token { get; init; }

    /// <summary>CA certificates the server's certificate must chain to; null means the system store.</summary>
    public X509Certificate2Collection? CertificateAuthorities { get; init; }

    /// <summary>Client certificate (with key) for mutual TLS.</summary>
    public X509Certificate2? ClientCertificate { get; init; }

    /// <summary>Skip server certificate validation (kubeconfig <c>insecure-skip-tls-verify</c>).</summary>
    public bool SkipTlsVerify { get; init; }

    /// <summary>Whether the process runs in a pod: <c>KUBERNETES_SERVICE_HOST</c> and the token file exist.</summary>
    /// <returns>True in a pod.</returns>
    public static bool IsInCluster() =>
        !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("KUBERNETES_SERVICE_HOST"))
        && File.Exists(Path.Combine(ServiceAccountDirectory, "token"));

    /// <summary>In-cluster: <c>KUBERNETES_SERVICE_HOST</c>/<c>PORT</c>, the service-account token (re-read as it rotates), CA and namespace.</summary>
    /// <param name="timeProvider">Clock for token re-reads.</param>
    /// <param name="serviceAccountDirectory">The service-account folder (tests point it elsewhere).</param>
    /// <param name="host">The API host; defaults to <c>KUBERNETES_SERVICE_HOST</c>.</param>
    /// <param name="port">The API port; defaults to <c>KUBERNETES_SERVICE_PORT</c>.</param>
    /// <returns>The configuration.</returns>
    /// <exception cref="InvalidOperationException">Not running in a pod.</exception>
    public static KubernetesClientConfiguration InCluster(
        TimeProvider? timeProvider = null, string serviceAccountDirectory = ServiceAccountDirectory, string? host = null, string? port = null)
    {
        host ??= Environment.GetEnvironmentVariable("KUBERNETES_SERVICE_HOST");
        port ??= Environment.GetEnvironmentVariable("KUBERNETES_SERVICE_PORT");
        if (string.IsNullOrEmpty(host) || string.IsNullOrEmpty(port))
        {
            throw new InvalidOperationException(
                "not running in a pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (use a kubeconfig outside a cluster)");
        }

        var tokenPath = Path.Combine(serviceAccountDirectory, "token");
        if (!File.Exists(tokenPath))
        {
            throw new InvalidOperationException($"service-account token {tokenPath} is missing: is automountServiceAccountToken false?");
        }

        var caPath = Path.Combine(serviceAccountDirectory, "ca.crt");
        X509Certificate2Collection? ca = null;
        if (File.Exists(caPath))
        {
            ca = [];
            ca.ImportFromPemFile(caPath);
        }

        var namespacePath = Path.Combine(serviceAccountDirectory, "namespace");
        var ns = File.Exists(namespacePath) ? File.ReadAllText(namespacePath).Trim() : null;

        // IPv6 hosts need brackets in a URI.
        var authority = host.Contains(':', StringComparison.Ordinal) ? $"[{host}]" : host;
        return new KubernetesClientConfiguration
        {
            Server = new Uri($"https://{authority}:{port}"),
            Namespace = ns,
            Token = BearerTokenSource.FromFile(tokenPath, timeProvider ?? TimeProvider.System),
            CertificateAuthorities = ca,
        };
    }

    /// <summary>Loads a kubeconfig file: the named context, else <c>current-context</c>.</summary>
    /// <param name="path">The kubeconfig path; defaults to <c>$KUBECONFIG</c> (first entry) or <c>~/.kube/config</c>.</param>
    /// <param name="context">A context name, or null for the current context.</param>
    /// <param name="timeProvider">Clock for token-file re-reads.</param>
    /// <returns>The configuration.</returns>
    /// <exception cref="InvalidOperationException">The file, the context, its cluster or user is missing.</exception>
    public static KubernetesClientConfiguration FromKubeconfig(string? path = null, string? context = null, TimeProvider? timeProvider = null)
    {
        path ??= DefaultKubeconfigPath();
        if (!File.Exists(path))
        {
            throw new InvalidOperationException($"kubeconfig {path} not found");
        }

        using var reader = new StreamReader(path);
        return ParseKubeconfig(reader, Path.GetDirectoryName(Path.GetFullPath(path))!, context, timeProvider ?? TimeProvider.System, path);
    }

    /// <summary>Parses kubeconfig YAML.</summary>
    /// <param name="reader">The YAML text.</param>
    /// <param name="baseDirectory">Folder that relative file paths start from (the kubeconfig's folder).</param>
    /// <param name="context">A context name, or null for the current context.</param>
    /// <param name="timeProvider">Clock for token-file re-reads.</param>
    /// <param name="source">Name used in error messages.</param>
    /// <returns>The configuration.</returns>
    public static KubernetesClientConfiguration ParseKubeconfig(
        TextReader reader, string baseDirectory, string? context = null, TimeProvider? timeProvider = null, string source = "kubeconfig")
    {
        var yaml = new YamlStream();
        yaml.Load(reader);
        if (yaml.Documents.Count == 0 || yaml.Documents[0].RootNode is not YamlMappingNode root)
        {
            throw new InvalidOperationException($"{source} is empty or not a mapping");
        }

        context ??= Scalar(root, "current-context")
            ?? throw new InvalidOperationException($"{source} has no current-context; pass a context name");
        var contextNode = Named(root, "contexts", context, "context")
            ?? throw new InvalidOperationException($"{source} has no context named '{context}'");
        var clusterName = Scalar(contextNode, "cluster") ?? throw new InvalidOperationException($"context '{context}' names no cluster");
        var cluster = Named(root, "clusters", clusterName, "cluster")
            ?? throw new InvalidOperationException($"{source} has no cluster named '{clusterName}'");
        var userName = Scalar(contextNode, "user");
        var user = userName is null ? null : Named(root, "users", userName, "user");

        var server = Scalar(cluster, "server") ?? throw new InvalidOperationException($"cluster '{clusterName}' has no server");
        X509Certificate2Collection? ca = null;
        if (Scalar(cluster, "certificate-authority-data") is { } caData)
        {
            ca = [];
            ca.ImportFromPem(System.Text.Encoding.UTF8.GetString(Convert.FromBase64String(caData)));
        }
        else if (Scalar(cluster, "certificate-authority") is { } caFile)
        {
            ca = [];
            ca.ImportFromPemFile(Resolve(baseDirectory, caFile));
        }

        BearerTokenSource? token = null;
        X509Certificate2? clientCertificate = null;
        if (user is not null)
        {
            if (Scalar(user, "token") is { } tokenText)
            {
                token = BearerTokenSource.FromValue(tokenText);
            }
            else if (Scalar(user, "tokenFile") is { } tokenFile)
            {
                token = BearerTokenSource.FromFile(Resolve(baseDirectory, tokenFile), timeProvider ?? TimeProvider.System);
            }

            var certPem = Scalar(user, "client-certificate-data") is { } certData
                ? System.Text.Encoding.UTF8.GetString(Convert.FromBase64String(certData))
                : Scalar(user, "client-certificate") is { } certFile ? File.ReadAllText(Resolve(baseDirectory, certFile)) : null;
            var keyPem = Scalar(user, "client-key-data") is { } keyData
                ? System.Text.Encoding.UTF8.GetString(Convert.FromBase64String(keyData))
                : Scalar(user, "client-key") is { } keyFile ? File.ReadAllText(Resolve(baseDirectory, keyFile)) : null;
            if (certPem is not null && keyPem is not null)
            {
                clientCertificate = X509Certificate2.CreateFromPem(certPem, keyPem);
            }
        }

        return new KubernetesClientConfiguration
        {
            Server = new Uri(server),
            Namespace = Scalar(contextNode, "namespace") ?? "default",
            Token = token,
            CertificateAuthorities = ca,
            ClientCertificate = clientCertificate,
            SkipTlsVerify = bool.TryParse(Scalar(cluster, "insecure-skip-tls-verify"), out var skip) && skip,
        };
    }

    /// <summary>In a pod: <see cref="InCluster"/>; else <see cref="FromKubeconfig"/>.</summary>
    /// <param name="timeProvider">Clock for token re-reads.</param>
    /// <returns>The configuration.</returns>
    public static KubernetesClientConfiguration Load(TimeProvider? timeProvider = null) =>
        IsInCluster() ? InCluster(timeProvider) : FromKubeconfig(timeProvider: timeProvider);

    private static string DefaultKubeconfigPath()
    {
        var fromEnvironment = Environment.GetEnvironmentVariable("KUBECONFIG");
        if (!string.IsNullOrEmpty(fromEnvironment))
        {
            return fromEnvironment.Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)[0];
        }

        return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".kube", "config");
    }

    private static string Resolve(string baseDirectory, string path) => Path.IsPathRooted(path) ? path : Path.Combine(baseDirectory, path);

    private static string? Scalar(YamlMappingNode node, string key) =>
        node.Children.TryGetValue(new YamlScalarNode(key), out var value) && value is YamlScalarNode scalar
            ? scalar.Value?.ToString(CultureInfo.InvariantCulture)
            : null;

    private static YamlMappingNode? Named(YamlMappingNode root, string listKey, string name, string innerKey)
    {
        if (!root.Children.TryGetValue(new YamlScalarNode(listKey), out var list) || list is not YamlSequenceNode sequence)
        {
            return null;
        }

        foreach (var entry in sequence.Children.OfType<YamlMappingNode>())
        {
            if (Scalar(entry, "name") == name)
            {
                return entry.Children.TryGetValue(new YamlScalarNode(innerKey), out var inner) && inner is YamlMappingNode mapping
                    ? mapping
                    : new YamlMappingNode();
            }
        }

        return null;
    }
}

/// <summary>A bearer token: fixed, or read from a file and re-read as it rotates (bound service-account tokens rotate hourly).</summary>
public sealed class BearerTokenSource
{
    /// <summary>How long a read token is used before the file is read again: one minute, as client-go's cached token source.</summary>
    public static readonly TimeSpan RefreshInterval = TimeSpan.FromMinutes(1);

    private readonly string? _path;
    private readonly TimeProvider _timeProvider;
    private readonly Lock _gate = new();
    private string? _token;
    private long _readAt;
    private bool _stale;

    private BearerTokenSource(string? token, string? path, TimeProvider timeProvider)
    {
        _token = token;
        _path = path;
        _timeProvider = timeProvider;
    }

    /// <summary>A fixed token.</summary>
    /// <param name="token">The token.</param>
    /// <returns>The source.</returns>
    public static BearerTokenSource FromValue(string token) => new(token, null, TimeProvider.System);

    /// <summary>A token file, re-read every <see cref="RefreshInterval"/> and after a 401.</summary>
    /// <param name="path">The file.</param>
    /// <param name="timeProvider">Clock.</param>
    /// <returns>The source.</returns>
    public static BearerTokenSource FromFile(string path, TimeProvider timeProvider) => new(null, path, timeProvider);

    /// <summary>The current token.</summary>
    /// <returns>The token, or null if the file is unreadable.</returns>
    public string? GetToken()
    {
        if (_path is null)
        {
            return _token;
        }

        lock (_gate)
        {
            if (_token is null || _stale || _timeProvider.GetElapsedTime(_readAt) >= RefreshInterval)
            {
                Reload();
            }

            return _token;
        }
    }

    /// <summary>
    /// Makes the next call read the file again (after a 401). The last token is kept until a read succeeds: going out without one
    /// would get 403 for <c>system:anonymous</c>, which reads as a missing RBAC rule rather than a token problem.
    /// </summary>
    public void Invalidate()
    {
        if (_path is null)
        {
            return;
        }

        lock (_gate)
        {
            _stale = true;
        }
    }

    private void Reload()
    {
        try
        {
            _token = File.ReadAllText(_path!).Trim();
            _readAt = _timeProvider.GetTimestamp();
            _stale = false;
        }
        catch (IOException)
        {
            // Keep the old token: kubelet swaps the file atomically, a failed read is transient.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

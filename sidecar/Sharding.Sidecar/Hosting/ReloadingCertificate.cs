using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Sharding.Sidecar.Hosting;

/// <summary>
/// The data port's TLS certificate, read again from its file when the file changes (checked at most once a second, by a
/// handshake): a renewed certificate (cert-manager rewriting a Kubernetes secret volume) is served to new connections without
/// a restart, so a long-lived pod does not go on presenting one that has expired. Handshakes get the options through
/// Kestrel's TLS callback (<see cref="Options"/>), built once per load.
/// </summary>
/// <remarks>
/// A file that does not load (a rotation half written, a wrong password) keeps the last good certificate and is tried again
/// a second later. The first load happens at construction, so a bad file still fails the start as before. Replaced
/// certificates are not disposed: a handshake may still hold one.
/// </remarks>
internal sealed class ReloadingCertificate
{
    private const long CheckIntervalMilliseconds = 1000;

    private readonly string _path;
    private readonly string? _password;
    private readonly Lock _gate = new();
    private SslServerAuthenticationOptions _options;
    private DateTime _writeTime;
    private long _nextCheck;

    public ReloadingCertificate(string path, string? password)
    {
        _path = path;
        _password = password;
        _writeTime = File.GetLastWriteTimeUtc(path);
        _options = CreateOptions(X509CertificateLoader.LoadPkcs12FromFile(path, password));
        _nextCheck = Environment.TickCount64 + CheckIntervalMilliseconds;
    }

    /// <summary>The TLS options for a handshake now: the certificate with its chain built once per load (a per-handshake
    /// certificate selector would build it on every handshake), ALPN h2 then http/1.1. Shared: SslStream copies them.</summary>
    public SslServerAuthenticationOptions Options
    {
        get
        {
            var now = Environment.TickCount64;
            if (now >= Volatile.Read(ref _nextCheck))
            {
                Refresh(now);
            }

            return Volatile.Read(ref _options);
        }
    }

    private static SslServerAuthenticationOptions CreateOptions(X509Certificate2 certificate) => new()
    {
        ServerCertificateContext = SslStreamCertificateContext.Create(certificate, additionalCertificates: null),
        ApplicationProtocols = [SslApplicationProtocol.Http2, SslApplicationProtocol.Http11],
        ClientCertificateRequired = false,
        CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
    };

    private void Refresh(long now)
    {
        if (!_gate.TryEnter())
        {
            return; // another handshake is checking: this one presents the current certificate
        }

        try
        {
            if (now < _nextCheck)
            {
                return;
            }

            Volatile.Write(ref _nextCheck, now + CheckIntervalMilliseconds);
            var writeTime = File.GetLastWriteTimeUtc(_path);
            if (writeTime == _writeTime)
            {
                return;
            }

            var loaded = X509CertificateLoader.LoadPkcs12FromFile(_path, _password);
            var options = CreateOptions(loaded);
            _writeTime = writeTime;
            Volatile.Write(ref _options, options);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or CryptographicException)
        {
            // Keep the last good certificate; the next check tries again.
        }
        finally
        {
            _gate.Exit();
        }
    }
}

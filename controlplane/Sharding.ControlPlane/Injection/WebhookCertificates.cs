using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Options;

namespace Sharding.ControlPlane.Injection;

/// <summary>A self-signed CA and the webhook's serving certificate, generated at start (no cert-manager needed).</summary>
/// <remarks>
/// Each replica makes its own CA; the caBundle loop publishes the replica's CA into the webhook configuration, and the
/// Service may send an admission call to any replica, so the bundle holds every CA seen recently (see
/// <see cref="CaBundleSynchronizer"/>). The serving certificate names the Service's DNS forms.
/// </remarks>
internal sealed class WebhookCertificates : IDisposable
{
    public WebhookCertificates(IOptions<SidecarInjectionOptions> options, TimeProvider timeProvider)
    {
        var o = options.Value;
        var now = timeProvider.GetUtcNow();
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest($"CN=sharding-webhook-ca-{Guid.NewGuid():N}", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        caRequest.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(caRequest.PublicKey, false));
        Authority = caRequest.CreateSelfSigned(now.AddMinutes(-5), now.AddYears(10));

        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={o.ServiceName}.{o.ServiceNamespace}.svc", key, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        foreach (var name in DnsNames(o))
        {
            names.AddDnsName(name);
        }

        names.AddIpAddress(System.Net.IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        var serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7F;
        using var issued = request.Create(Authority, now.AddMinutes(-5), now.AddYears(1), serial);
        ServerCertificate = issued.CopyWithPrivateKey(key);
        CaBundlePem = Authority.ExportCertificatePem() + "\n";
    }

    /// <summary>The CA (public part is what goes into caBundle).</summary>
    public X509Certificate2 Authority { get; }

    /// <summary>The serving certificate with its key, for Kestrel.</summary>
    public X509Certificate2 ServerCertificate { get; }

    /// <summary>The CA as PEM.</summary>
    public string CaBundlePem { get; }

    public static IEnumerable<string> DnsNames(SidecarInjectionOptions o) =>
    [
        o.ServiceName,
        $"{o.ServiceName}.{o.ServiceNamespace}",
        $"{o.ServiceName}.{o.ServiceNamespace}.svc",
        $"{o.ServiceName}.{o.ServiceNamespace}.svc.cluster.local",
        "localhost",
    ];

    public void Dispose()
    {
        Authority.Dispose();
        ServerCertificate.Dispose();
    }
}

using System.Net;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Sharding.ControlPlane.Injection;

namespace Sharding.ControlPlane.Tests.Injection;

/// <summary><c>POST /mutate</c> on real Kestrel (127.0.0.1, plain HTTP: TLS is covered by KubernetesModeTests).</summary>
public sealed class SidecarInjectionEndpointTests : IAsyncLifetime
{
    private WebApplication? _app;
    private HttpClient? _client;

    public async Task InitializeAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Services.AddSingleton(new SidecarInjector(Options.Create(new SidecarInjectionOptions { Image = "sidecar:test" })));
        _app = builder.Build();
        _app.MapSidecarInjection();
        await _app.StartAsync();
        var address = _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        _client = new HttpClient { BaseAddress = new Uri(address) };
    }

    public async Task DisposeAsync()
    {
        _client?.Dispose();
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }

    [Theory]
    [InlineData("")]
    [InlineData("{\"kind\":[]}")]
    [InlineData("{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"uid\":{}}}")]
    [InlineData("{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"uid\":\"u\"},\"request\":{\"uid\":\"v\"}}")]
    public async Task Mutate_MalformedReview_Http400WithMessage(string body)
    {
        using var response = await _client!.PostAsync(new Uri("/mutate", UriKind.Relative), new StringContent(body, Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{(int)response.StatusCode}: {text}");
        Assert.False(string.IsNullOrWhiteSpace(text));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Mutate_BodyOverThreeMiB_Http413WithMessage(bool withLength)
    {
        var body = new byte[(3 * 1024 * 1024) + 1];
        body.AsSpan().Fill((byte)' ');
        HttpContent content = withLength ? new ByteArrayContent(body) : new StreamContent(new UnknownLengthStream(body));
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
        using var response = await _client!.PostAsync(new Uri("/mutate", UriKind.Relative), content);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Equal("the AdmissionReview is larger than 3145728 bytes", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Mutate_OptedInPodWithNoContainers_AllowedFalseNot500()
    {
        const string body = """
            {"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"u-1","operation":"CREATE",
             "object":{"kind":"Pod","metadata":{"generateName":"web-","labels":{"sharding.dev/inject":"true"}},"spec":{"containers":[]}}}}
            """;
        using var response = await _client!.PostAsync(new Uri("/mutate", UriKind.Relative), new StringContent(body, Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode}: {text}");
        var review = System.Text.Json.Nodes.JsonNode.Parse(text)!;
        Assert.Equal("u-1", (string?)review["response"]!["uid"]);
        Assert.False((bool)review["response"]!["allowed"]!);
    }

    // A body sent chunked (no Content-Length), as a stream that does not say its length.
    private sealed class UnknownLengthStream(byte[] data) : MemoryStream(data)
    {
        public override bool CanSeek => false;
    }
}

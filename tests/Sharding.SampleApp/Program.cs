using Sharding.SampleApp;
using Sharding.Sidecar.Hosting;

// The sample stateful app: per-key counters in memory, a watch stream per key (SSE), and a misroute detector that asks the
// sidecar beside it whether this pod owns each key it serves. Used by `shardctl demo` and the end-to-end tests.
// Every endpoint accepts HTTP/1.1 and h2c (HTTP/2 prior knowledge) on the same port, so the gRPC watch
// (sample.v1.Counter/Watch) works through a sidecar with its default AppProtocol (gRPC goes to the app as h2c).
var builder = WebApplication.CreateSlimBuilder(args);
builder.WebHost.ConfigureKestrel(static kestrel => kestrel.ConfigureEndpointDefaults(static listen => listen.UseHttp1AndHttp2PriorKnowledge()));
builder.Logging.SetMinimumLevel(LogLevel.Warning);
builder.Services.AddOptions<SampleAppOptions>().BindConfiguration(SampleAppOptions.Section).Configure(static o => o.ApplyEnvironment());
builder.Services.AddSingleton(TimeProvider.System);
builder.Services.AddSingleton<CounterStore>();
builder.Services.AddSingleton<OwnershipChecker>();
builder.Services.AddHttpClient(OwnershipChecker.HttpClientName);
builder.Services.ConfigureHttpJsonOptions(static o => o.SerializerOptions.TypeInfoResolverChain.Insert(0, SampleJsonContext.Default));

var app = builder.Build();
app.MapSampleEndpoints();
await app.RunAsync().ConfigureAwait(false);

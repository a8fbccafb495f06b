using Sharding.SampleApp;

// The sample stateful app: per-key counters in memory, a watch stream per key (SSE), and a misroute detector that asks the
// sidecar beside it whether this pod owns each key it serves. Used by `shardctl demo` and the end-to-end tests.
var builder = WebApplication.CreateSlimBuilder(args);
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

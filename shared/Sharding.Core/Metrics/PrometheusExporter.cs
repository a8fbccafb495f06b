using System.Diagnostics.Metrics;
using System.Globalization;
using System.Text;

namespace Sharding.Metrics;

/// <summary>
/// Collects <see cref="System.Diagnostics.Metrics"/> instruments of our meters and renders them in the Prometheus text
/// exposition format 0.0.4 (prometheus-net is not served here).
/// </summary>
/// <remarks>
/// <para>Naming: the instrument name with <c>.</c> and <c>-</c> turned into <c>_</c>, then the unit as a base-unit suffix
/// (<c>s</c> → <c>_seconds</c>, <c>By</c> → <c>_bytes</c>) unless already there, then <c>_total</c> for counters (and
/// <c>_value</c> for a gauge that would end in a histogram's <c>_count</c>, <c>_sum</c> or <c>_bucket</c>). So
/// <c>sharding.sidecar.requests</c> (Counter) is <c>sharding_sidecar_requests_total</c> and
/// <c>sharding.sidecar.forward.duration</c> (Histogram, unit s) is <c>sharding_sidecar_forward_duration_seconds</c>.</para>
/// <para>Types: Counter and ObservableCounter → counter; UpDownCounter, ObservableUpDownCounter, Gauge and ObservableGauge →
/// gauge; Histogram → histogram with the instrument's advised bucket boundaries or Prometheus' defaults.</para>
/// <para>Each instrument keeps at most <see cref="MaxSeriesPerInstrument"/> label sets; measurements beyond are dropped and
/// counted in <c>sharding_metrics_dropped_measurements_total</c>, so a label mistake cannot exhaust memory.</para>
/// </remarks>
public sealed class PrometheusExporter : IDisposable
{
    /// <summary>The content type of the exposition.</summary>
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    /// <summary>Label sets kept per instrument.</summary>
    public const int MaxSeriesPerInstrument = 1000;

    private static readonly double[] DefaultBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    /// <summary>The runtime's own meter (.NET 9+): process CPU time and memory, GC, JIT, thread pool, exceptions.</summary>
    public const string RuntimeMeterName = "System.Runtime";

    private readonly string _meterNamePrefix;
    private readonly bool _includeRuntime;
    private readonly object? _scope;
    private readonly MeterListener _listener;
    private readonly object _instrumentsGate = new();
    private readonly object _collectGate = new();
    private readonly List<InstrumentState> _instruments = [];
    private long _droppedMeasurements;

    /// <summary>Starts listening to every meter whose name starts with <paramref name="meterNamePrefix"/>.</summary>
    /// <param name="meterNamePrefix">E.g. <c>Sharding</c> for <c>Sharding.Sidecar</c> and <c>Sharding.ControlPlane</c>.</param>
    /// <param name="includeRuntime">Also export the <see cref="RuntimeMeterName"/> meter, e.g.
    /// <c>dotnet_process_cpu_time_seconds_total{cpu_mode="user"}</c> and <c>dotnet_gc_collections_total{gc_heap_generation="gen0"}</c>.</param>
    /// <param name="scope">Only the prefixed meters of this scope (a host's <c>IMeterFactory</c>, which a meter it creates
    /// names as its <see cref="Meter.Scope"/>): a process with several hosts (tests) then exports each host's own counts.
    /// Null: every prefixed meter in the process.</param>
    public PrometheusExporter(string meterNamePrefix = "Sharding", bool includeRuntime = false, object? scope = null)
    {
        _scope = scope;
        _meterNamePrefix = meterNamePrefix;
        _includeRuntime = includeRuntime;
        _listener = new MeterListener
        {
            InstrumentPublished = OnInstrumentPublished,
            MeasurementsCompleted = static (instrument, state) => ((InstrumentState)state!).Completed = true,
        };
        _listener.SetMeasurementEventCallback<long>(static (i, v, tags, state) => ((InstrumentState)state!).Record(v, tags));
        _listener.SetMeasurementEventCallback<int>(static (i, v, tags, state) => ((InstrumentState)state!).Record(v, tags));
        _listener.SetMeasurementEventCallback<short>(static (i, v, tags, state) => ((InstrumentState)state!).Record(v, tags));
        _listener.SetMeasurementEventCallback<byte>(static (i, v, tags, state) => ((InstrumentState)state!).Record(v, tags));
        _listener.SetMeasurementEventCallback<double>(static (i, v, tags, state) => ((InstrumentState)state!).Record(v, tags));
        _listener.SetMeasurementEventCallback<float>(static (i, v, tags, state) => ((InstrumentState)state!).Record(v, tags));
        _listener.SetMeasurementEventCallback<decimal>(static (i, v, tags, state) => ((InstrumentState)state!).Record((double)v, tags));
        _listener.Start();
    }

    /// <summary>Renders every instrument's current values.</summary>
    /// <returns>The exposition text.</returns>
    public string Collect()
    {
        lock (_collectGate)
        {
            return CollectCore();
        }
    }

    private string CollectCore()
    {
        InstrumentState[] instruments;
        lock (_instrumentsGate)
        {
            foreach (var state in _instruments)
            {
                if (state.IsObservable)
                {
                    state.BeginObservation();
                }
            }

            instruments = [.. _instruments];
        }

        // Observable instruments report their current values through the measurement callback.
        _listener.RecordObservableInstruments();

        var text = new StringBuilder(4096);
        var families = new Dictionary<string, List<InstrumentState>>(StringComparer.Ordinal);
        var order = new List<string>();
        foreach (var state in instruments)
        {
            if (state.Completed)
            {
                continue;
            }

            if (!families.TryGetValue(state.PrometheusName, out var list))
            {
                list = [];
                families[state.PrometheusName] = list;
                order.Add(state.PrometheusName);
            }

            list.Add(state);
        }

        // Instruments of the same name from several meters (e.g. two hosts in one test process) merge into one family.
        foreach (var name in order)
        {
            var list = families[name];
            var first = list[0];
            text.Append("# HELP ").Append(name).Append(' ').Append(EscapeHelp(first.Help)).Append('\n');
            text.Append("# TYPE ").Append(name).Append(' ').Append(first.TypeName).Append('\n');
            foreach (var state in list)
            {
                state.Render(text);
            }
        }

        text.Append("# HELP sharding_metrics_dropped_measurements_total Measurements dropped because an instrument exceeded its label-set limit.\n");
        text.Append("# TYPE sharding_metrics_dropped_measurements_total counter\n");
        text.Append("sharding_metrics_dropped_measurements_total ").Append(Interlocked.Read(ref _droppedMeasurements)).Append('\n');
        return text.ToString();
    }

    /// <inheritdoc />
    public void Dispose() => _listener.Dispose();

    /// <summary>The Prometheus family name of an instrument (see the remarks on <see cref="PrometheusExporter"/>).</summary>
    /// <param name="instrumentName">The dotted instrument name.</param>
    /// <param name="unit">The UCUM unit, if any.</param>
    /// <param name="isCounter">Whether the instrument is monotonic.</param>
    /// <returns>The family name.</returns>
    public static string PrometheusName(string instrumentName, string? unit, bool isCounter)
    {
        ArgumentNullException.ThrowIfNull(instrumentName);
        var name = new StringBuilder(instrumentName.Length + 16);
        foreach (var c in instrumentName)
        {
            name.Append(char.IsAsciiLetterOrDigit(c) || c == '_' || c == ':' ? char.ToLowerInvariant(c) : '_');
        }

        var suffix = unit switch
        {
            "s" => "_seconds",
            "ms" => "_milliseconds",
            "By" => "_bytes",
            "1" or null or "" => null,
            _ when unit.StartsWith('{') => null,
            _ => "_" + unit.ToLowerInvariant(),
        };
        if (suffix is not null && !name.ToString().EndsWith(suffix, StringComparison.Ordinal))
        {
            name.Append(suffix);
        }

        if (isCounter && !name.ToString().EndsWith("_total", StringComparison.Ordinal))
        {
            name.Append("_total");
        }
        else if (!isCounter && (name.ToString().EndsWith("_count", StringComparison.Ordinal) || name.ToString().EndsWith("_sum", StringComparison.Ordinal)
            || name.ToString().EndsWith("_bucket", StringComparison.Ordinal)))
        {
            name.Append("_value"); // those suffixes belong to histogram series (e.g. the runtime's dotnet.timer.count gauge)
        }

        return name.ToString();
    }

    private void OnInstrumentPublished(Instrument instrument, MeterListener listener)
    {
        var prefixed = instrument.Meter.Name.StartsWith(_meterNamePrefix, StringComparison.Ordinal);
        if ((!prefixed && !(_includeRuntime && string.Equals(instrument.Meter.Name, RuntimeMeterName, StringComparison.Ordinal)))
            || (prefixed && _scope is not null && !ReferenceEquals(instrument.Meter.Scope, _scope)))
        {
            return;
        }

        var state = new InstrumentState(this, instrument);
        lock (_instrumentsGate)
        {
            _instruments.Add(state);
        }

        listener.EnableMeasurementEvents(instrument, state);
    }

    private static string EscapeHelp(string? help) =>
        string.IsNullOrEmpty(help) ? "(no description)" : help.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    private static string EscapeLabelValue(string value) =>
        value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    private static string FormatDouble(double value) =>
        double.IsPositiveInfinity(value) ? "+Inf"
        : double.IsNegativeInfinity(value) ? "-Inf"
        : double.IsNaN(value) ? "NaN"
        : value.ToString("R", CultureInfo.InvariantCulture);

    private enum Kind
    {
        Counter,
        Gauge,
        Histogram,
    }

    /// <summary>One instrument's series (label sets) and their values.</summary>
    private sealed class InstrumentState
    {
        private readonly PrometheusExporter _owner;
        private readonly Kind _kind;
        private readonly bool _cumulativeObservation;
        private readonly double[] _buckets;
        private readonly List<Series> _series = [];

        public InstrumentState(PrometheusExporter owner, Instrument instrument)
        {
            _owner = owner;
            var type = instrument.GetType();
            var generic = type.IsGenericType ? type.GetGenericTypeDefinition() : type;
            IsObservable = instrument.IsObservable;
            _kind = generic == typeof(Counter<>) || generic == typeof(ObservableCounter<>) ? Kind.Counter
                : generic == typeof(Histogram<>) ? Kind.Histogram
                : Kind.Gauge;
            _cumulativeObservation = IsObservable;
            _buckets = _kind == Kind.Histogram ? AdvisedBuckets(instrument) ?? DefaultBuckets : [];
            PrometheusName = PrometheusExporter.PrometheusName(instrument.Name, instrument.Unit, _kind == Kind.Counter);
            Help = instrument.Description;
            TypeName = _kind switch { Kind.Counter => "counter", Kind.Histogram => "histogram", _ => "gauge" };
            Additive = generic == typeof(Counter<>) || generic == typeof(UpDownCounter<>);
        }

        public bool IsObservable { get; }

        public bool Completed { get; set; }

        public string PrometheusName { get; }

        public string? Help { get; }

        public string TypeName { get; }

        private bool Additive { get; }

        public void BeginObservation()
        {
            lock (_series)
            {
                // Observable instruments report absolute values: series not reported this time disappear.
                _series.Clear();
            }
        }

        public void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            lock (_series)
            {
                var series = Find(tags);
                if (series is null)
                {
                    if (_series.Count >= MaxSeriesPerInstrument)
                    {
                        Interlocked.Increment(ref _owner._droppedMeasurements);
                        return;
                    }

                    series = new Series(tags.ToArray(), _buckets.Length);
                    _series.Add(series);
                }

                switch (_kind)
                {
                    case Kind.Histogram:
                        series.Count++;
                        series.Value += value;
                        for (var i = 0; i < _buckets.Length; i++)
                        {
                            if (value <= _buckets[i])
                            {
                                series.BucketCounts[i]++;
                                break;
                            }
                        }

                        break;
                    default:
                        if (Additive && !_cumulativeObservation)
                        {
                            series.Value += value;
                        }
                        else
                        {
                            series.Value = value;
                        }

                        break;
                }
            }
        }

        public void Render(StringBuilder text)
        {
            lock (_series)
            {
                foreach (var series in _series)
                {
                    if (_kind != Kind.Histogram)
                    {
                        text.Append(PrometheusName);
                        AppendLabels(text, series.Tags, null);
                        text.Append(' ').Append(FormatDouble(series.Value)).Append('\n');
                        continue;
                    }

                    long cumulative = 0;
                    for (var i = 0; i < _buckets.Length; i++)
                    {
                        cumulative += series.BucketCounts[i];
                        text.Append(PrometheusName).Append("_bucket");
                        AppendLabels(text, series.Tags, FormatDouble(_buckets[i]));
                        text.Append(' ').Append(cumulative).Append('\n');
                    }

                    text.Append(PrometheusName).Append("_bucket");
                    AppendLabels(text, series.Tags, "+Inf");
                    text.Append(' ').Append(series.Count).Append('\n');
                    text.Append(PrometheusName).Append("_sum");
                    AppendLabels(text, series.Tags, null);
                    text.Append(' ').Append(FormatDouble(series.Value)).Append('\n');
                    text.Append(PrometheusName).Append("_count");
                    AppendLabels(text, series.Tags, null);
                    text.Append(' ').Append(series.Count).Append('\n');
                }
            }
        }

        private static void AppendLabels(StringBuilder text, KeyValuePair<string, object?>[] tags, string? le)
        {
            if (tags.Length == 0 && le is null)
            {
                return;
            }

            text.Append('{');
            var first = true;
            foreach (var tag in tags)
            {
                if (!first)
                {
                    text.Append(',');
                }

                first = false;
                foreach (var c in tag.Key)
                {
                    text.Append(char.IsAsciiLetterOrDigit(c) || c == '_' ? c : '_');
                }

                text.Append("=\"").Append(EscapeLabelValue(Convert.ToString(tag.Value, CultureInfo.InvariantCulture) ?? string.Empty)).Append('"');
            }

            if (le is not null)
            {
                text.Append(first ? string.Empty : ",").Append("le=\"").Append(le).Append('"');
            }

            text.Append('}');
        }

        private static double[]? AdvisedBuckets(Instrument instrument) => instrument switch
        {
            Histogram<double> h => h.Advice?.HistogramBucketBoundaries?.ToArray(),
            Histogram<long> h => h.Advice?.HistogramBucketBoundaries?.Select(static b => (double)b).ToArray(),
            Histogram<int> h => h.Advice?.HistogramBucketBoundaries?.Select(static b => (double)b).ToArray(),
            Histogram<float> h => h.Advice?.HistogramBucketBoundaries?.Select(static b => (double)b).ToArray(),
            _ => null,
        };

        private Series? Find(ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            foreach (var series in _series)
            {
                if (series.Matches(tags))
                {
                    return series;
                }
            }

            return null;
        }
    }

    /// <summary>One label set's value(s).</summary>
    private sealed class Series(KeyValuePair<string, object?>[] tags, int bucketCount)
    {
        public KeyValuePair<string, object?>[] Tags { get; } = tags;

        public long[] BucketCounts { get; } = new long[bucketCount];

        public double Value { get; set; }

        public long Count { get; set; }

        public bool Matches(ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            if (tags.Length != Tags.Length)
            {
                return false;
            }

            // Order-insensitive: callers may build tag lists in different orders.
            foreach (var tag in tags)
            {
                var found = false;
                foreach (var own in Tags)
                {
                    if (string.Equals(own.Key, tag.Key, StringComparison.Ordinal) && Equals(own.Value, tag.Value))
                    {
                        found = true;
                        break;
                    }
                }

                if (!found)
                {
                    return false;
                }
            }

            return true;
        }
    }
}

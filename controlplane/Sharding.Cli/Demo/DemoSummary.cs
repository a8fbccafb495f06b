using System.Globalization;
using System.Text;

namespace Sharding.Cli.Demo;

/// <summary>What the demo measured; <see cref="Passed"/> decides the exit code.</summary>
internal sealed class DemoSummary
{
    public long Requests { get; set; }

    public long Failed { get; set; }

    public long Retried { get; set; }

    public long Mismatched { get; set; }

    public long Verified { get; private set; }

    public long Misroutes { get; private set; }

    public long Unverified { get; private set; }

    public double MovedShare { get; set; } = double.NaN;

    public double IdealShare { get; set; } = double.NaN;

    public double ObservedMovedShare { get; set; } = double.NaN;

    public int StreamsMovedOnScaleOut { get; set; }

    public long StreamsEndedOnScaleOut { get; set; }

    public long StreamsEnded { get; set; }

    public long StreamsReopenedOnOwner { get; set; }

    public long StreamsReopenedElsewhere { get; set; }

    public double FailoverSeconds { get; set; } = double.NaN;

    public long FailedDuringFailover { get; set; }

    public bool GenerationsGrewAcrossFailover { get; set; }

    public int ProcessesStarted { get; set; }

    public int ProcessesExited { get; set; }

    /// <summary>Every process id the demo started, so a caller can check that none is left.</summary>
    public IReadOnlyList<int> ProcessIds { get; set; } = [];

    public bool Interrupted { get; set; }

    public string? Error { get; set; }

    public Dictionary<string, long> ServedBy { get; set; } = new(StringComparer.Ordinal);

    public List<string> FailureSamples { get; set; } = [];

    /// <summary>Keys moved on scale-out within 1/N + 2 % of the ideal share.</summary>
    public bool MovedWithinBound => !double.IsNaN(MovedShare) && MovedShare <= IdealShare + 0.02;

    public bool Passed =>
        Error is null && !Interrupted && Requests > 0 && Failed == 0 && Misroutes == 0 && Mismatched == 0
        && MovedWithinBound && !double.IsNaN(FailoverSeconds) && GenerationsGrewAcrossFailover && ProcessesExited == ProcessesStarted;

    public void Absorb(AppStats? stats)
    {
        if (stats is null)
        {
            return;
        }

        Verified += stats.Verified;
        Misroutes += stats.Misroutes;
        Unverified += stats.Unverified;
    }

    public void Print(TextWriter stdout)
    {
        var text = new StringBuilder();
        void Row(string name, string value) => text.Append(CultureInfo.InvariantCulture, $"  {name,-44} {value}\n");
        text.Append("\nsummary\n");
        Row("requests (ok + failed)", Requests.ToString(CultureInfo.InvariantCulture));
        Row("failed requests", Failed.ToString(CultureInfo.InvariantCulture));
        Row("503 + Retry-After answered and retried", Retried.ToString(CultureInfo.InvariantCulture));
        Row("served by pod", string.Join(", ", ServedBy.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key} {p.Value}")));
        Row("misroutes (app checked ownership)", $"{Misroutes} (verified {Verified}, unverifiable during a change {Unverified})");
        Row("replies whose server was not the named owner", Mismatched.ToString(CultureInfo.InvariantCulture));
        Row("keys moved on scale-out (100,000 keys)", string.Create(CultureInfo.InvariantCulture, $"{MovedShare:P2} (ideal {IdealShare:P2}, bound ideal + 2 %)"));
        Row("keys requested before and after that moved", double.IsNaN(ObservedMovedShare) ? "n/a" : ObservedMovedShare.ToString("P2", CultureInfo.InvariantCulture));
        Row("watch streams with a new owner on scale-out", $"{StreamsMovedOnScaleOut}, ended by the sidecars: {StreamsEndedOnScaleOut}");
        Row("watch streams ended / reopened on owner / elsewhere", $"{StreamsEnded} / {StreamsReopenedOnOwner} / {StreamsReopenedElsewhere}");
        Row("leader failover", double.IsNaN(FailoverSeconds) ? "not done" : string.Create(CultureInfo.InvariantCulture, $"{FailoverSeconds:F2} s, failed requests meanwhile {FailedDuringFailover}"));
        Row("generations grew after failover", GenerationsGrewAcrossFailover ? "yes" : "no");
        Row("processes started / exited", $"{ProcessesStarted} / {ProcessesExited}");
        foreach (var sample in FailureSamples)
        {
            Row("failure sample", sample);
        }

        if (Error is not null)
        {
            Row("error", Error);
        }

        text.Append(CultureInfo.InvariantCulture,
            $"demo: result={(Passed ? "PASS" : "FAIL")} requests={Requests} failed={Failed} misroutes={Misroutes} mismatched={Mismatched} moved={MovedShare:F4} ideal={IdealShare:F4} failover_seconds={FailoverSeconds:F3} streams_ended={StreamsEnded} processes_started={ProcessesStarted} processes_exited={ProcessesExited} pids={string.Join(',', ProcessIds)}\n");
        stdout.Write(text.ToString());
    }
}

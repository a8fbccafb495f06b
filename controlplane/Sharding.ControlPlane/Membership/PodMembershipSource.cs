using System.Collections.Immutable;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.Extensions.Options;
using Sharding.Hashing;
using Sharding.Keys;
using Sharding.Kubernetes;
using Sharding.Mapping;

namespace Sharding.ControlPlane.Membership;

/// <summary>Membership from the pods labelled <c>sharding.dev/service</c>, through an informer.</summary>
/// <remarks>
/// A pod is a member under its pod name, at <c>podIP:sidecar-port</c>, once it is Ready and has an IP. A member that stops
/// being Ready keeps its keys for <see cref="PodMembershipOptions.NotReadyGracePeriod"/> (measured on our monotonic clock from
/// the event that showed it), so a flapping probe does not reshuffle shards; a pod that was never Ready does not join. A pod
/// with a <c>deletionTimestamp</c> leaves at once. Service settings come from <c>sharding.dev/*</c> annotations: when pods
/// disagree, the oldest pod (creationTimestamp, then name) wins and the disagreement is logged once. Snapshots are yielded
/// after the first full list and then on every change.
/// </remarks>
internal sealed partial class PodMembershipSource : IMembershipSource
{
    internal const string KeyAnnotation = "sharding.dev/key";
    internal const string AppPortAnnotation = "sharding.dev/app-port";
    internal const string TableSizeAnnotation = "sharding.dev/table-size";
    internal const string AlgorithmAnnotation = "sharding.dev/algorithm";
    internal const string SidecarPortAnnotation = "sharding.dev/sidecar-port";
    internal const string HashKeyAnnotation = "sharding.dev/hash-key";
    internal const string WeightAnnotation = "sharding.dev/weight";
    internal const string NoKeyAnnotation = "sharding.dev/no-key";
    internal const string FallbackMemberAnnotation = "sharding.dev/fallback-member";
    internal const string MaxBodyBytesAnnotation = "sharding.dev/max-body-bytes";

    private static readonly string[] ServiceWideAnnotations =
        [KeyAnnotation, NoKeyAnnotation, FallbackMemberAnnotation, MaxBodyBytesAnnotation, TableSizeAnnotation, AlgorithmAnnotation, HashKeyAnnotation, AppPortAnnotation];
    private readonly IListWatchSource<Pod> _source;
    private readonly PodMembershipOptions _options;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly ResourceInformerOptions? _informerOptions;
    private readonly HashSet<string> _reported = new(StringComparer.Ordinal);

    public PodMembershipSource(
        IListWatchSource<Pod> source, IOptions<PodMembershipOptions> options, TimeProvider timeProvider, ILogger<PodMembershipSource> logger,
        ResourceInformerOptions? informerOptions = null)
    {
        _source = source;
        _options = options.Value;
        _timeProvider = timeProvider;
        _logger = logger;
        _informerOptions = informerOptions;
    }

    public async IAsyncEnumerable<MembershipSnapshot> WatchAsync([EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var inbox = Channel.CreateUnbounded<InformerEvent<Pod>?>();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var informer = new ResourceInformer<Pod>(_source, _informerOptions, _timeProvider, _logger);
        var pump = Task.Run(
            async () =>
            {
                try
                {
                    await foreach (var change in informer.RunAsync(stop.Token).ConfigureAwait(false))
                    {
                        inbox.Writer.TryWrite(change);
                    }
                }
                catch (OperationCanceledException)
                {
                }
                finally
                {
                    inbox.Writer.TryComplete();
                }
            },
            CancellationToken.None);

        // A null item is a grace-period tick.
        using var graceTimer = _timeProvider.CreateTimer(static s => ((Channel<InformerEvent<Pod>?>)s!).Writer.TryWrite(null), inbox, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        var pods = new Dictionary<string, PodState>(StringComparer.Ordinal);
        var synced = false;
        MembershipSnapshot? last = null;
        try
        {
            await foreach (var item in inbox.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                var now = _timeProvider.GetTimestamp();
                if (item is { } change)
                {
                    if (change.Kind == InformerEventKind.Synced)
                    {
                        synced = true;
                    }
                    else
                    {
                        Apply(pods, change, now);
                    }
                }

                if (!synced || inbox.Reader.Count > 0)
                {
                    // Fold a burst (a relist) into one snapshot.
                    continue;
                }

                var (snapshot, nextExpiry) = Compute(pods, now);
                graceTimer.Change(nextExpiry ?? Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                if (last is null || !SameSnapshot(last, snapshot))
                {
                    last = snapshot;
                    var memberCount = snapshot.Services.Values.Sum(static s => s.Members.Length);
                    LogSnapshot(snapshot.Services.Count, memberCount);
                    yield return snapshot;
                }
            }
        }
        finally
        {
            await stop.CancelAsync().ConfigureAwait(false);
            await pump.ConfigureAwait(false);
        }
    }

    private void Apply(Dictionary<string, PodState> pods, InformerEvent<Pod> change, long now)
    {
        var pod = change.Item!;
        var key = pod.Metadata.Namespace + "/" + pod.Metadata.Name;
        if (change.Kind == InformerEventKind.Deleted)
        {
            if (pods.Remove(key))
            {
                LogPodLeft(pod.Metadata.Name!, "deleted");
            }

            return;
        }

        pods.TryGetValue(key, out var state);
        state ??= new PodState();
        state.Pod = pod;
        if (pod.Metadata.DeletionTimestamp is not null)
        {
            if (state.WasMember)
            {
                LogPodLeft(pod.Metadata.Name!, "terminating");
            }

            state.WasMember = false;
            state.NotReadySince = null;
        }
        else if (pod.IsReady && !string.IsNullOrEmpty(pod.Status?.PodIP))
        {
            state.WasMember = true;
            state.NotReadySince = null;
        }
        else if (state.WasMember && state.NotReadySince is null)
        {
            state.NotReadySince = now;
            LogPodNotReady(pod.Metadata.Name!, _options.NotReadyGracePeriod);
        }

        pods[key] = state;
    }

    private (MembershipSnapshot Snapshot, TimeSpan? NextExpiry) Compute(Dictionary<string, PodState> pods, long now)
    {
        TimeSpan? nextExpiry = null;
        var services = ImmutableDictionary.CreateBuilder<string, ServiceMembership>(StringComparer.Ordinal);
        var byService = pods.Values
            .Where(static p => p.Pod.Metadata.DeletionTimestamp is null && p.Pod.Metadata.Labels?.ContainsKey(PodMembershipOptions.ServiceLabel) == true)
            .GroupBy(static p => p.Pod.Metadata.Labels![PodMembershipOptions.ServiceLabel], StringComparer.Ordinal);
        foreach (var group in byService)
        {
            var ordered = group
                .OrderBy(static p => p.Pod.Metadata.CreationTimestamp ?? DateTimeOffset.MaxValue)
                .ThenBy(static p => p.Pod.Metadata.Name, StringComparer.Ordinal)
                .ToList();
            var members = ImmutableArray.CreateBuilder<ShardMember>();
            foreach (var state in ordered)
            {
                if (state.NotReadySince is { } since)
                {
                    var left = _options.NotReadyGracePeriod - _timeProvider.GetElapsedTime(since, now);
                    if (left <= TimeSpan.Zero)
                    {
                        state.WasMember = false;
                        state.NotReadySince = null;
                        LogPodLeft(state.Pod.Metadata.Name!, "not Ready for the whole grace period");
                    }
                    else
                    {
                        nextExpiry = nextExpiry is null || left < nextExpiry ? left : nextExpiry;
                    }
                }

                if (!state.WasMember || string.IsNullOrEmpty(state.Pod.Status?.PodIP))
                {
                    continue;
                }

                members.Add(new ShardMember(state.Pod.Metadata.Name!, Address(state.Pod), Weight(group.Key, state.Pod)));
            }

            services[group.Key] = Settings(group.Key, ordered.Select(static s => s.Pod).ToList(), members.ToImmutable().Sort(static (a, b) => string.CompareOrdinal(a.Name, b.Name)));
        }

        return (new MembershipSnapshot(services.ToImmutable()), nextExpiry);
    }

    private ServiceMembership Settings(string service, List<Pod> oldestFirst, ImmutableArray<ShardMember> members)
    {
        var chosen = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var annotation in ServiceWideAnnotations)
        {
            string? value = null;
            string? from = null;
            foreach (var pod in oldestFirst)
            {
                if (pod.Metadata.Annotations?.TryGetValue(annotation, out var v) != true)
                {
                    continue;
                }

                if (value is null)
                {
                    value = v;
                    from = pod.Metadata.Name;
                }
                else if (!string.Equals(value, v, StringComparison.Ordinal) && _reported.Add($"{service}|{annotation}|{pod.Metadata.Name}|{v}"))
                {
                    LogConflictingAnnotation(service, annotation, pod.Metadata.Name!, v!, from!, value);
                }
            }

            if (value is not null)
            {
                chosen[annotation] = value;
            }
        }

        var policy = ShardKeyPolicy.Default;
        if (chosen.TryGetValue(KeyAnnotation, out var keyText))
        {
            var rules = ImmutableArray.CreateBuilder<ShardKeyRule>();
            foreach (var part in keyText.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            {
                if (ShardKeyRule.TryParse(part, out var rule, out var error))
                {
                    rules.Add(rule);
                }
                else
                {
                    Invalid(service, KeyAnnotation, keyText, error);
                }
            }

            if (rules.Count > 0)
            {
                policy = ShardKeyPolicy.Default with { Rules = rules.ToImmutable() };
            }
        }

        if (chosen.TryGetValue(NoKeyAnnotation, out var noKeyText))
        {
            if (TryParseNoKey(noKeyText, chosen.ContainsKey(FallbackMemberAnnotation), out var noKey, out var why))
            {
                policy = policy with { NoKey = noKey, FallbackMember = noKey == NoKeyAction.FixedMember ? chosen[FallbackMemberAnnotation] : null };
            }
            else
            {
                Invalid(service, NoKeyAnnotation, noKeyText, why);
            }
        }

        if (chosen.TryGetValue(MaxBodyBytesAnnotation, out var maxBodyText))
        {
            if (TryParseMaxBodyBytes(maxBodyText, out var maxBody, out var why))
            {
                policy = policy with { MaxBodyBytes = maxBody };
            }
            else
            {
                Invalid(service, MaxBodyBytesAnnotation, maxBodyText, why);
            }
        }

        var algorithm = ShardAlgorithm.Maglev;
        if (chosen.TryGetValue(AlgorithmAnnotation, out var algorithmText) && !TryParseAlgorithm(algorithmText, out algorithm, out var algorithmWhy))
        {
            Invalid(service, AlgorithmAnnotation, algorithmText, algorithmWhy);
            algorithm = ShardAlgorithm.Maglev;
        }

        var table = ShardTableOptions.Default;
        if (chosen.TryGetValue(TableSizeAnnotation, out var sizeText))
        {
            if (TryParseTableSize(sizeText, out var size, out var why))
            {
                table = table with { MaglevTableSize = size };
            }
            else
            {
                Invalid(service, TableSizeAnnotation, sizeText, why);
            }
        }

        var hashKey = HashKeySource.Name;
        if (chosen.TryGetValue(HashKeyAnnotation, out var hashKeyText) && !TryParseHashKey(hashKeyText, out hashKey, out var hashKeyWhy))
        {
            Invalid(service, HashKeyAnnotation, hashKeyText, hashKeyWhy);
        }

        return new ServiceMembership(service, members, algorithm, table, policy, hashKey);
    }

    private string Address(Pod pod)
    {
        var port = _options.DefaultSidecarPort;
        if (pod.Metadata.Annotations?.TryGetValue(SidecarPortAnnotation, out var text) == true)
        {
            if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var p) && p is > 0 and < 65536)
            {
                port = p;
            }
            else
            {
                Invalid(pod.Metadata.Name!, SidecarPortAnnotation, text, "must be a port number 1-65535");
            }
        }

        var ip = pod.Status!.PodIP!;
        return ip.Contains(':', StringComparison.Ordinal) ? $"[{ip}]:{port}" : $"{ip}:{port}";
    }

    private uint Weight(string service, Pod pod)
    {
        if (pod.Metadata.Annotations?.TryGetValue(WeightAnnotation, out var text) != true)
        {
            return 1;
        }

        if (TryParseWeight(text!, out var weight, out var why))
        {
            return weight;
        }

        Invalid(service, WeightAnnotation, text!, why);
        return 1;
    }

    // The annotation values' parsers, shared with the webhook's warnings (SidecarInjector): false says why the value is ignored.
    internal static bool TryParseNoKey(string text, bool hasFallbackMember, out NoKeyAction action, out string why)
    {
        why = !NoKeyActionNames.TryParse(text, out action) ? "use reject, serve-locally or fixed-member"
            : action == NoKeyAction.FixedMember && !hasFallbackMember ? $"fixed-member needs {FallbackMemberAnnotation} naming the pod that serves key-less requests"
            : string.Empty;
        return why.Length == 0;
    }

    internal static bool TryParseMaxBodyBytes(string text, out int bytes, out string why)
    {
        var ok = int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out bytes) && bytes is >= 1 and <= ShardKeyPolicy.MaxBodyBytesLimit;
        why = ok ? string.Empty : $"must be a number of bytes 1-{ShardKeyPolicy.MaxBodyBytesLimit}, e.g. 65536";
        return ok;
    }

    internal static bool TryParseAlgorithm(string text, out ShardAlgorithm algorithm, out string why)
    {
        var ok = ShardAlgorithmNames.TryParse(text, out algorithm);
        why = ok ? string.Empty : "use maglev, ring or modulo";
        return ok;
    }

    internal static bool TryParseTableSize(string text, out int size, out string why)
    {
        var ok = int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out size) && size <= ShardTableOptions.MaxMaglevTableSize && Primes.IsPrime(size);
        why = ok ? string.Empty : $"must be a prime at most {ShardTableOptions.MaxMaglevTableSize} (Envoy's limit), e.g. 65537";
        return ok;
    }

    internal static bool TryParseHashKey(string text, out HashKeySource source, out string why)
    {
        var ok = HashKeySourceNames.TryParse(text, out source);
        why = ok ? string.Empty : "use name or address";
        return ok;
    }

    internal static bool TryParseWeight(string text, out uint weight, out string why)
    {
        var ok = uint.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out weight);
        why = ok ? string.Empty : "must be a whole number (0 keeps the pod a member that owns no keys)";
        return ok;
    }

    private void Invalid(string service, string annotation, string value, string why)
    {
        if (_reported.Add($"invalid|{service}|{annotation}|{value}"))
        {
            LogInvalidAnnotation(service, annotation, value, why);
        }
    }

    internal static bool SameSnapshot(MembershipSnapshot a, MembershipSnapshot b)
    {
        if (a.Services.Count != b.Services.Count)
        {
            return false;
        }

        foreach (var (name, service) in a.Services)
        {
            if (!b.Services.TryGetValue(name, out var other)
                || !service.Members.SequenceEqual(other.Members)
                || service.Algorithm != other.Algorithm
                || service.TableOptions != other.TableOptions
                || !service.KeyPolicy.Equals(other.KeyPolicy)
                || service.HashKeySource != other.HashKeySource)
            {
                return false;
            }
        }

        return true;
    }

    [LoggerMessage(EventId = 201, EventName = "PodMembershipSnapshot", Level = LogLevel.Information, Message = "Membership changed: {ServiceCount} services, {MemberCount} members")]
    private partial void LogSnapshot(int serviceCount, int memberCount);

    [LoggerMessage(EventId = 202, EventName = "PodNotReady", Level = LogLevel.Information, Message = "Pod {PodName} is not Ready; it keeps its keys for {GracePeriod}")]
    private partial void LogPodNotReady(string podName, TimeSpan gracePeriod);

    [LoggerMessage(EventId = 203, EventName = "PodLeft", Level = LogLevel.Information, Message = "Pod {PodName} left the map: {Reason}")]
    private partial void LogPodLeft(string podName, string reason);

    [LoggerMessage(EventId = 204, EventName = "ConflictingAnnotation", Level = LogLevel.Warning, Message = "Service {Service}: pod {PodName} has {Annotation}={Value}, but the oldest pod {ChosenPod} has {ChosenValue}; using the oldest pod's")]
    private partial void LogConflictingAnnotation(string service, string annotation, string podName, string value, string chosenPod, string chosenValue);

    [LoggerMessage(EventId = 205, EventName = "InvalidAnnotation", Level = LogLevel.Warning, Message = "{Owner}: annotation {Annotation}={Value} is invalid ({Reason}); using the default")]
    private partial void LogInvalidAnnotation(string owner, string annotation, string value, string reason);

    private sealed class PodState
    {
        public Pod Pod { get; set; } = null!;

        public bool WasMember { get; set; }

        public long? NotReadySince { get; set; }
    }
}

using System.Collections.Immutable;

namespace Sharding.Keys;

/// <summary>What the sidecar does with a request in which no rule found a key.</summary>
public enum NoKeyAction
{
    /// <summary>Answer 400 with a message naming the rules tried. The default: never guess for a stateful key.</summary>
    Reject = 0,

    /// <summary>Serve it on the pod that received it.</summary>
    ServeLocally = 1,

    /// <summary>Send it to one fixed member (<see cref="ShardKeyPolicy.FallbackMember"/>).</summary>
    FixedMember = 2,
}

/// <summary>The names of <see cref="NoKeyAction"/> in files and annotations.</summary>
public static class NoKeyActionNames
{
    /// <summary>
    /// Parses <c>reject</c>, <c>serveLocally</c> or <c>fixedMember</c>, case-insensitively, also spelled <c>serve-locally</c> and
    /// <c>fixed-member</c> (the membership file's style): the same words work in the sidecar's map file and the control plane's
    /// membership file. Numbers are not names (<see cref="Enum.TryParse{TEnum}(string, out TEnum)"/> would take "7").
    /// </summary>
    /// <param name="text">The name.</param>
    /// <param name="action">The action when the name is known.</param>
    /// <returns>Whether the name is known.</returns>
    public static bool TryParse(ReadOnlySpan<char> text, out NoKeyAction action)
    {
        action = Is(text, "serveLocally", "serve-locally") ? NoKeyAction.ServeLocally
            : Is(text, "fixedMember", "fixed-member") ? NoKeyAction.FixedMember
            : NoKeyAction.Reject;
        return action != NoKeyAction.Reject || text.Equals("reject", StringComparison.OrdinalIgnoreCase);
    }

    private static bool Is(ReadOnlySpan<char> text, string camel, string kebab) =>
        text.Equals(camel, StringComparison.OrdinalIgnoreCase) || text.Equals(kebab, StringComparison.OrdinalIgnoreCase);
}

/// <summary>How a service's shard key is found: ordered rules, the no-key fallback and the body-buffering limit.</summary>
public sealed record ShardKeyPolicy
{
    /// <summary>Default body limit for JSON body rules: 64 KiB (a key sits near the top of small JSON documents).</summary>
    public const int DefaultMaxBodyBytes = 64 * 1024;

    /// <summary>
    /// The highest <see cref="MaxBodyBytes"/> a file accepts: 16 MiB, what a sidecar may buffer per request to find a key. The
    /// sidecar's map file and the control plane's membership file share it.
    /// </summary>
    public const int MaxBodyBytesLimit = 16 * 1024 * 1024;

    /// <summary>The default policy: header <c>x-shard-key</c>, reject when missing.</summary>
    public static ShardKeyPolicy Default { get; } = new();

    /// <summary>Rules, tried in order.</summary>
    /// <value>Just <c>header:x-shard-key</c>.</value>
    public ImmutableArray<ShardKeyRule> Rules { get; init; } = [ShardKeyRule.Default];

    /// <summary>What to do when no rule finds a key.</summary>
    /// <value><see cref="NoKeyAction.Reject"/>: a 400 naming the rules tried.</value>
    public NoKeyAction NoKey { get; init; } = NoKeyAction.Reject;

    /// <summary>The member that receives key-less requests when <see cref="NoKey"/> is <see cref="NoKeyAction.FixedMember"/>.</summary>
    public string? FallbackMember { get; init; }

    /// <summary>How many body bytes a JSON body rule may buffer before answering 413.</summary>
    /// <value>64 KiB.</value>
    public int MaxBodyBytes { get; init; } = DefaultMaxBodyBytes;

    /// <summary>The rules in text form, comma separated, as the 400 message names them.</summary>
    /// <returns>E.g. <c>header:x-shard-key, path:/docs/{key}</c>.</returns>
    public string DescribeRules() => string.Join(", ", Rules);

    /// <inheritdoc />
    public bool Equals(ShardKeyPolicy? other) =>
        other is not null && NoKey == other.NoKey && MaxBodyBytes == other.MaxBodyBytes
        && string.Equals(FallbackMember, other.FallbackMember, StringComparison.Ordinal) && Rules.SequenceEqual(other.Rules);

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(NoKey, MaxBodyBytes, Rules.Length);
}

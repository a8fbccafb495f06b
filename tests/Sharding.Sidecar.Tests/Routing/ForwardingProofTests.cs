using System.Text;
using Microsoft.Extensions.Options;
using Sharding.Sidecar.Hosting;
using Sharding.Sidecar.Routing;

namespace Sharding.Sidecar.Tests.Routing;

public sealed class ForwardingProofTests
{
    private static ForwardingProof Proof(string secret, TimeProvider? time = null) =>
        new(Options.Create(new SidecarOptions { ForwardingSecret = secret }), time ?? TimeProvider.System);

    private sealed class FixedTime(DateTimeOffset now) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => now;
    }

    [Fact]
    public void Write_MatchesCreate_AndVerifies()
    {
        var proof = Proof("secret-a-0123456789abcdef", new FixedTime(TimeProvider.System.GetUtcNow()));
        Span<byte> bytes = stackalloc byte[ForwardingProof.MaxLength];
        var text = Encoding.ASCII.GetString(bytes[..proof.Write("k-1", 7, 1, bytes)]);

        Assert.Equal(proof.Create("k-1", 7, 1), text);
        Assert.Equal(ProofResult.Valid, proof.Verify(text, "k-1", 7, 1));
        Assert.Equal(ProofResult.Mismatch, proof.Verify(text, "k-2", 7, 1));
        Assert.Equal(ProofResult.Mismatch, proof.Verify(text, "k-1", 8, 1));
        Assert.Equal(ProofResult.Mismatch, proof.Verify(text, "k-1", 7, 2));
    }

    [Fact]
    public void TwoSecretsOnOneThread_EachVerifiesOnlyItsOwn()
    {
        // The keyed HMAC is cached per thread: alternating secrets must not reuse the other's key.
        var a = Proof("secret-a-0123456789abcdef");
        var b = Proof("secret-b-0123456789abcdef");
        for (var i = 0; i < 3; i++)
        {
            var fromA = a.Create("key", 1, 1);
            var fromB = b.Create("key", 1, 1);
            Assert.NotEqual(fromA, fromB);
            Assert.Equal(ProofResult.Valid, a.Verify(fromA, "key", 1, 1));
            Assert.Equal(ProofResult.Mismatch, a.Verify(fromB, "key", 1, 1));
            Assert.Equal(ProofResult.Valid, b.Verify(fromB, "key", 1, 1));
            Assert.Equal(ProofResult.Mismatch, b.Verify(fromA, "key", 1, 1));
        }
    }

    [Fact]
    public async Task ManyThreads_EveryProofVerifies()
    {
        var proof = Proof("secret-a-0123456789abcdef");
        var failures = 0;
        await Parallel.ForAsync(0, 2_000, (i, _) =>
        {
            var key = $"key-{i}";
            if (proof.Verify(proof.Create(key, i, 1), key, i, 1) != ProofResult.Valid || proof.Verify(proof.Create(key, i, 1), key + "x", i, 1) == ProofResult.Valid)
            {
                Interlocked.Increment(ref failures);
            }

            return ValueTask.CompletedTask;
        });
        Assert.Equal(0, failures);
    }

    [Theory]
    [InlineData("account-42", "account-42")]
    [InlineData("~tilde", "~fnRpbGRl")]
    [InlineData("с пробелом", "~0YEg0L_RgNC-0LHQtdC70L7QvA")]
    [InlineData("a b", "~YSBi")]
    public void KeyHeader_WriteMatchesEncode_AndDecodesBack(string key, string expected)
    {
        Assert.Equal(expected, KeyHeader.Encode(key));
        Span<byte> bytes = stackalloc byte[KeyHeader.MaxEncodedLength(key.Length)];
        Assert.Equal(expected, Encoding.ASCII.GetString(bytes[..KeyHeader.Write(key, bytes)]));

        Span<char> decoded = stackalloc char[64];
        Assert.True(KeyHeader.TryDecode(expected, decoded, out var length));
        Assert.Equal(key, decoded[..length].ToString());
    }

    [Fact]
    public void KeyHeader_EmptyValue_IsNoKey()
    {
        // What a no-key (fixedMember) forward carried before: refusing it made every such forward a 403.
        Span<char> decoded = stackalloc char[64];
        Assert.True(KeyHeader.TryDecode(string.Empty, decoded, out var length));
        Assert.Equal(0, length);
    }
}

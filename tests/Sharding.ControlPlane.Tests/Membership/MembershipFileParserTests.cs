using System.Text.RegularExpressions;
using Sharding.ControlPlane.Membership;
using Sharding.Hashing;
using Sharding.Keys;
using Sharding.Mapping;

namespace Sharding.ControlPlane.Tests.Membership;

/// <summary>The local-mode membership file (docs/local-mode.md): what it accepts, and a named error for everything else.</summary>
public sealed partial class MembershipFileParserTests
{
    [Fact]
    public void Parse_TheDocumentedExample_GivesWhatItsCommentsSay()
    {
        var docs = File.ReadAllText(Path.Combine(RepositoryRoot(), "docs", "local-mode.md"));
        var example = MembershipExample().Match(docs[docs.IndexOf("## The membership file", StringComparison.Ordinal)..]);
        Assert.True(example.Success, "docs/local-mode.md has no yaml block under 'The membership file'");

        var snapshot = MembershipFileParser.Parse(example.Groups[1].Value, "membership.yaml");

        var service = snapshot.Services["sharded-svc"];
        Assert.Equal(ShardAlgorithm.Maglev, service.Algorithm);
        Assert.Equal(HashKeySource.Name, service.HashKeySource);
        Assert.Equal(["header:x-shard-key", "path:/docs/{key}", "query:tenant", "cookie:session", "json:$.account.id"], service.KeyPolicy.Rules.Select(r => r.ToString()));
        Assert.Equal(NoKeyAction.Reject, service.KeyPolicy.NoKey);
        Assert.Equal(65536, service.KeyPolicy.MaxBodyBytes);
        Assert.Equal(["sharded-svc-0", "sharded-svc-1", "sharded-svc-2"], service.Members.Select(m => m.Name));
        Assert.Equal("127.0.0.1:15101", service.Members[0].Address);
        Assert.True(snapshot.Services.ContainsKey("other-svc"));
    }

    [Theory]
    [InlineData("[fd00::1]:15100")]
    [InlineData("sharded-svc-0.sharded-svc.shop.svc:15100")]
    [InlineData("127.0.0.1:1")]
    public void Parse_HostPortAddresses_AreTaken(string address)
    {
        var snapshot = MembershipFileParser.Parse($"services:\n  s: {{members: [{{name: a, address: '{address}'}}]}}\n", "membership.yaml");
        Assert.Equal(address, snapshot.Services["s"].Members.Single().Address);
    }

    [Theory]
    [InlineData("noKey: serve-locally", NoKeyAction.ServeLocally)]
    [InlineData("noKey: serveLocally", NoKeyAction.ServeLocally)] // the sidecar map file's spelling
    [InlineData("noKey: SERVE-LOCALLY", NoKeyAction.ServeLocally)]
    [InlineData("noKey: fixed-member\n    fallbackMember: a", NoKeyAction.FixedMember)]
    [InlineData("noKey: fixedMember\n    fallbackMember: a", NoKeyAction.FixedMember)]
    [InlineData("noKey: reject", NoKeyAction.Reject)]
    public void Parse_NoKeyNames_EitherSpelling(string lines, NoKeyAction expected)
    {
        var snapshot = MembershipFileParser.Parse(Service(lines), "membership.yaml");
        Assert.Equal(expected, snapshot.Services["s"].KeyPolicy.NoKey);
    }

    [Theory]
    [InlineData("noKey: maybe", "services.s.noKey: 'maybe' is not reject, serve-locally or fixed-member")]
    [InlineData("noKey: 2", "services.s.noKey: '2' is not reject, serve-locally or fixed-member")]
    [InlineData("noKey: fixed-member", "services.s.fallbackMember is required when noKey is fixed-member")]
    [InlineData("keyRules: header:x", "services.s.keyRules must be a list such as [\"header:x-shard-key\", \"path:/docs/{key}\"]")]
    [InlineData("keyRules: [\"body:$.a\"]", "services.s.keyRules[0]: key rule 'body:$.a' has unknown kind 'body'")]
    [InlineData("maxBodyBytes: 16777217", "services.s.maxBodyBytes must be an integer between 1 and 16777216 (got \"16777217\")")]
    [InlineData("maxBodyBytes: 0", "services.s.maxBodyBytes must be an integer between 1 and 16777216 (got \"0\")")]
    [InlineData("hashKey: ip", "services.s.hashKey: 'ip' is not name or address")]
    [InlineData("algorithm: fancy", "services.s.algorithm: unknown algorithm 'fancy' (use maglev, ring or modulo)")]
    [InlineData("tableSize: 65536", "services.s: ")]
    public void Parse_BadServiceSetting_NamesIt(string lines, string expected)
    {
        var error = Assert.Throws<FormatException>(() => MembershipFileParser.Parse(Service(lines), "membership.yaml"));
        Assert.StartsWith(expected, error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("services:\n  s:\n    members: [{name: a, address: 'h:1'}]\n    members: [{name: b, address: 'h:2'}]\n", "membership.yaml", "Encountered duplicate key members")]
    [InlineData("services:\n  s: {members: [{name: a, address: 'h:1'}]}\n  s: {members: [{name: b, address: 'h:2'}]}\n", "membership.yaml", "Encountered duplicate key s")]
    [InlineData("{\"services\": {\"s\": {\"members\": [{\"name\": \"a\", \"address\": \"x\"}], \"members\": []}}}", "membership.json", "not valid JSON")]
    [InlineData("services:\n  s: {members: [{name: a, address: 'h:1'}, {name: a, address: 'h:2'}]}\n", "membership.yaml", "services.s.members[1].name: 'a' is listed twice")]
    [InlineData("services:\n  s: {members: [{address: 'h:1'}]}\n", "membership.yaml", "services.s.members[0].name is required")]
    [InlineData("members: []\n", "membership.yaml", "the file needs a top-level 'services' mapping")]
    [InlineData("services: [unclosed\n", "membership.yaml", "not valid YAML at line ")]
    [InlineData("{\"services\": {\"s\": {\"keyRules\": [7]}}}", "membership.json", "services.s.keyRules[0]: must be a string")]
    [InlineData("services:\n  s: {members: [{name: a, address: '10.0.0.7:15100#x'}]}\n", "membership.yaml", "services.s.members[0].address: '10.0.0.7:15100#x' is not host:port")]
    [InlineData("services:\n  s: {members: [{name: a, address: 'fd00::1:15100'}]}\n", "membership.yaml", "services.s.members[0].address: 'fd00::1:15100' is not host:port")]
    public void Parse_BadFile_NamesTheProblem(string text, string fileName, string expected)
    {
        var error = Assert.Throws<FormatException>(() => MembershipFileParser.Parse(text, fileName));
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
    }

    private static string Service(string lines) => $"services:\n  s:\n    {lines}\n    members: [{{name: a, address: 'h:1'}}]\n";

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Sharding.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("Sharding.sln not found above " + AppContext.BaseDirectory);
    }

    [GeneratedRegex("```yaml\\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex MembershipExample();
}

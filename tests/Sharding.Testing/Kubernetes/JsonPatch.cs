using System.Text.Json.Nodes;

namespace Sharding.Testing.Kubernetes;

/// <summary>Small RFC 6902 (JSON Patch) and RFC 7386 (JSON Merge Patch) appliers for tests and the fake API server.</summary>
public static class JsonPatch
{
    /// <summary>Applies an RFC 6902 patch to a copy of <paramref name="document"/>.</summary>
    /// <exception cref="InvalidOperationException">An operation does not apply (missing path, failed test...).</exception>
    public static JsonNode Apply(JsonNode document, JsonArray patch)
    {
        var root = document.DeepClone();
        foreach (var operationNode in patch)
        {
            var operation = operationNode as JsonObject ?? throw new InvalidOperationException("patch operation is not an object");
            var op = (string?)operation["op"] ?? throw new InvalidOperationException("patch operation without op");
            var path = (string?)operation["path"] ?? throw new InvalidOperationException($"{op} without path");
            switch (op)
            {
                case "add":
                    root = Add(root, path, Value(operation));
                    break;
                case "remove":
                    Remove(root, path);
                    break;
                case "replace":
                    _ = Get(root, path) ?? throw new InvalidOperationException($"replace operation does not apply: doc is missing path: {path}");
                    Remove(root, path);
                    root = Add(root, path, Value(operation));
                    break;
                case "test":
                    var actual = Get(root, path);
                    if (!JsonNode.DeepEquals(actual, operation["value"]))
                    {
                        throw new InvalidOperationException($"test operation failed at {path}");
                    }

                    break;
                case "move":
                case "copy":
                    var from = (string?)operation["from"] ?? throw new InvalidOperationException($"{op} without from");
                    var value = (Get(root, from) ?? throw new InvalidOperationException($"{op}: missing from {from}")).DeepClone();
                    if (op == "move")
                    {
                        Remove(root, from);
                    }

                    root = Add(root, path, value);
                    break;
                default:
                    throw new InvalidOperationException($"unknown op {op}");
            }
        }

        return root;
    }

    /// <summary>Applies an RFC 7386 merge patch (lists are replaced whole, null removes) to a copy.</summary>
    public static JsonNode Merge(JsonNode? target, JsonNode? patch)
    {
        if (patch is not JsonObject patchObject)
        {
            return patch?.DeepClone()!;
        }

        var result = target is JsonObject targetObject ? (JsonObject)targetObject.DeepClone() : [];
        foreach (var (name, value) in patchObject)
        {
            if (value is null)
            {
                result.Remove(name);
            }
            else
            {
                result[name] = Merge(result[name], value);
            }
        }

        return result;
    }

    /// <summary>Decodes a JSON Pointer segment (RFC 6901: ~1 is "/", ~0 is "~").</summary>
    public static string Unescape(string segment) => segment.Replace("~1", "/", StringComparison.Ordinal).Replace("~0", "~", StringComparison.Ordinal);

    /// <summary>The node at a JSON Pointer, or null.</summary>
    public static JsonNode? Get(JsonNode root, string path)
    {
        if (path.Length == 0)
        {
            return root;
        }

        JsonNode? current = root;
        foreach (var raw in path[1..].Split('/'))
        {
            var segment = Unescape(raw);
            current = current switch
            {
                JsonObject o => o.TryGetPropertyValue(segment, out var v) ? v : null,
                JsonArray a when int.TryParse(segment, out var i) && i >= 0 && i < a.Count => a[i],
                _ => null,
            };
            if (current is null)
            {
                return null;
            }
        }

        return current;
    }

    private static JsonNode? Value(JsonObject operation) =>
        operation.TryGetPropertyValue("value", out var value) ? value?.DeepClone() : throw new InvalidOperationException("operation without value");

    private static (JsonNode Parent, string Last) Parent(JsonNode root, string path)
    {
        if (!path.StartsWith('/'))
        {
            throw new InvalidOperationException($"path '{path}' must start with /");
        }

        var cut = path.LastIndexOf('/');
        var parent = Get(root, path[..cut]) ?? throw new InvalidOperationException($"add operation does not apply: doc is missing path: {path[..cut]}");
        return (parent, Unescape(path[(cut + 1)..]));
    }

    private static JsonNode Add(JsonNode root, string path, JsonNode? value)
    {
        if (path.Length == 0)
        {
            return value!;
        }

        var (parent, last) = Parent(root, path);
        switch (parent)
        {
            case JsonObject o:
                o[last] = value;
                break;
            case JsonArray a:
                if (last == "-")
                {
                    a.Add(value);
                }
                else if (int.TryParse(last, out var index) && index >= 0 && index <= a.Count)
                {
                    a.Insert(index, value);
                }
                else
                {
                    throw new InvalidOperationException($"add operation does not apply: bad index {last} in {path}");
                }

                break;
            default:
                throw new InvalidOperationException($"add operation does not apply: parent of {path} is not a container");
        }

        return root;
    }

    private static void Remove(JsonNode root, string path)
    {
        var (parent, last) = Parent(root, path);
        switch (parent)
        {
            case JsonObject o when o.ContainsKey(last):
                o.Remove(last);
                break;
            case JsonArray a when int.TryParse(last, out var index) && index >= 0 && index < a.Count:
                a.RemoveAt(index);
                break;
            default:
                throw new InvalidOperationException($"remove operation does not apply: doc is missing path: {path}");
        }
    }
}

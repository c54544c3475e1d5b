using System.Globalization;
using System.Text.Json;
using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>
/// The configuration of one attention layer: the JSON keys of variants.md as typed properties. Each variant has its own
/// subclass; <see cref="Parse"/> reads a JSON object and refuses missing, unknown and ill-typed keys together in one error.
/// </summary>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public abstract record LayerConfig
{
    /// <summary>The variant name of variants.md (<c>mha</c>, <c>gqa</c>, …).</summary>
    public abstract string Variant { get; }

    /// <summary>The model width, <c>d_model</c>.</summary>
    public required int DModel { get; init; }

    /// <summary>The number of attention heads, <c>n_heads</c>.</summary>
    public required int Heads { get; init; }

    /// <summary>The variant names <see cref="Parse"/> understands.</summary>
    public static IReadOnlyList<string> Variants { get; } = ["mha", "gqa", "mqa", "mla", "tpa", "sas", "agent", "flatten", "transnormer", "mfa"];

    /// <summary>
    /// KV-cache elements per token per layer by the formula of variants.md: null for the non-causal variants (no cache), 0 for
    /// a constant-size state (transnormer). Bytes = elements × dtype size.
    /// </summary>
    public abstract long? CacheElementsPerToken { get; }

    /// <summary>Checks every constraint of variants.md; throws <see cref="ArgumentException"/> naming the key, expected and actual.</summary>
    public abstract void Validate();

    /// <summary>The JSON object of this config (every key, defaults written out).</summary>
    public string ToJson()
    {
        using var stream = new MemoryStream();
        using (var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            writer.WriteStartObject();
            foreach (var (key, value) in Keys())
            {
                writer.WritePropertyName(key);
                switch (value)
                {
                    case bool b: writer.WriteBooleanValue(b); break;
                    case int i: writer.WriteNumberValue(i); break;
                    case double d: writer.WriteNumberValue(d); break;
                    case RopeScaling scaling: WriteScaling(writer, scaling); break;
                    case DBNull: writer.WriteNullValue(); break;
                    default: writer.WriteStringValue(Convert.ToString(value, CultureInfo.InvariantCulture)); break;
                }
            }
            writer.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>The config's keys and values in variants.md order.</summary>
    public abstract IEnumerable<KeyValuePair<string, object>> Keys();

    /// <summary>Reads the config of <paramref name="variant"/> from a JSON object and validates it.</summary>
    public static LayerConfig Parse(string variant, string json)
    {
        ArgumentNullException.ThrowIfNull(variant);
        ArgumentNullException.ThrowIfNull(json);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json);
        }
        catch (JsonException e)
        {
            throw new ArgumentException($"json: expected a JSON object of {variant} config keys, actual invalid JSON ({e.Message})", nameof(json), e);
        }
        using (document)
        {
            var reader = new ConfigReader(variant, document.RootElement);
            LayerConfig config = variant switch
            {
                "mha" or "gqa" or "mqa" => GqaConfig.Read(variant, reader),
                "mla" => MlaConfig.Read(reader),
                "tpa" => TpaConfig.Read(reader),
                "sas" => SasConfig.Read(reader),
                "agent" => VisionGridKeys.Selected(reader) ? AgentVisionConfig.Read(reader) : AgentConfig.Read(reader),
                "flatten" => VisionGridKeys.Selected(reader) ? FlattenVisionConfig.Read(reader) : FlattenConfig.Read(reader),
                "transnormer" => TransNormerConfig.Read(reader),
                "mfa" => MfaConfig.Read(reader),
                _ => throw new ArgumentException($"variant: expected one of {string.Join(", ", Variants)}, actual '{variant}'", nameof(variant)),
            };
            reader.Finish();
            config.Validate();
            return config;
        }
    }

    private protected static void Require(bool condition, string key, string expected, object actual)
    {
        if (!condition)
        {
            throw new ArgumentException($"{key}: expected {expected}, actual {Convert.ToString(actual, CultureInfo.InvariantCulture)}", key);
        }
    }

    private protected static void Positive(int value, string key) => Require(value > 0, key, "a positive integer", value);

    /// <summary>
    /// A width the layer derives from config values (a product or sum, e.g. <c>n_heads·head_dim</c>) is one tensor axis, an
    /// <see cref="int"/>: computed wide so it cannot wrap (65536·65536 would be 0 in 32 bits), and refused naming the key.
    /// </summary>
    private protected static void Axis(string key, string formula, Int128 value) =>
        Require(value <= int.MaxValue, key, $"{formula} ≤ {int.MaxValue} (one tensor axis)", value);

    private protected static string StyleName(RopeStyle style) => style == RopeStyle.Half ? "half" : "interleaved";

    // rope_scaling (variants.md "RoPE scaling"), shared by every variant with RoPE: read with ConfigReader.Scaling, checked
    // with ValidateScaling, written by listing ScalingKey in Keys().

    /// <summary>The <c>rope_scaling</c> entry of <see cref="Keys"/>: the scaling object, or JSON null when there is none.</summary>
    private protected static KeyValuePair<string, object> ScalingKey(RopeScaling? scaling) => new(RopeScaling.Key, (object?)scaling ?? DBNull.Value);

    /// <summary>Checks a <c>rope_scaling</c> (when set) like every other key: the key named, expected and actual; it needs RoPE on.</summary>
    private protected static void ValidateScaling(RopeScaling? scaling, bool rope = true)
    {
        Require(scaling is null || rope, RopeScaling.Key, "null when rope is false (nothing to scale)", "an object");
        scaling?.Validate();
    }

    /// <summary>The softmax scale's factor under <paramref name="scaling"/>: μ(s, m_a)², or 1 without scaling.</summary>
    internal static double SoftmaxScaleFactor(RopeScaling? scaling) => scaling?.SoftmaxScaleFactor ?? 1.0;

    private static void WriteScaling(Utf8JsonWriter writer, RopeScaling scaling)
    {
        writer.WriteStartObject();
        writer.WriteString("type", "yarn");
        writer.WriteNumber("factor", scaling.Factor);
        writer.WriteNumber("original_max_position_embeddings", scaling.OriginalMaxPositions);
        writer.WriteNumber("beta_fast", scaling.BetaFast);
        writer.WriteNumber("beta_slow", scaling.BetaSlow);
        writer.WriteNumber("mscale", scaling.MScale);
        writer.WriteNumber("mscale_all_dim", scaling.MScaleAllDim);
        writer.WriteEndObject();
    }
}

/// <summary>Reads typed keys from a config object, collecting every problem before reporting them together.</summary>
internal sealed class ConfigReader
{
    private readonly string _variant;
    private readonly string _prefix;
    private readonly Dictionary<string, JsonElement> _values = new(StringComparer.Ordinal);
    private readonly HashSet<string> _read = new(StringComparer.Ordinal);
    private readonly List<string> _missing = [];
    private readonly List<string> _problems = [];

    public ConfigReader(string variant, JsonElement root)
        : this(variant, root, prefix: "")
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new ArgumentException($"json: expected a JSON object of {variant} config keys, actual a {root.ValueKind}");
        }
    }

    // A nested object (rope_scaling): its keys are reported as "prefix.key"; the caller checks that root is an object.
    private ConfigReader(string variant, JsonElement root, string prefix)
    {
        _variant = variant;
        _prefix = prefix;
        if (root.ValueKind != JsonValueKind.Object)
        {
            return;
        }
        foreach (var property in root.EnumerateObject())
        {
            if (!_values.TryAdd(property.Name, property.Value))
            {
                _problems.Add($"key '{prefix}{property.Name}' appears twice");
            }
        }
    }

    public int Int(string key, int? fallback = null)
    {
        if (!Take(key, out var value))
        {
            return Missing(key, fallback);
        }
        if (value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out int result))
        {
            return result;
        }
        _problems.Add($"{_prefix}{key}: expected an integer, actual {value.GetRawText()}");
        return 0;
    }

    public double Double(string key, double? fallback = null)
    {
        if (!Take(key, out var value))
        {
            return Missing(key, fallback);
        }
        if (value.ValueKind == JsonValueKind.Number)
        {
            return value.GetDouble();
        }
        _problems.Add($"{_prefix}{key}: expected a number, actual {value.GetRawText()}");
        return 0;
    }

    public bool Bool(string key, bool? fallback = null)
    {
        if (!Take(key, out var value))
        {
            return Missing(key, fallback);
        }
        if (value.ValueKind is JsonValueKind.True or JsonValueKind.False)
        {
            return value.GetBoolean();
        }
        _problems.Add($"{_prefix}{key}: expected true or false, actual {value.GetRawText()}");
        return false;
    }

    public RopeStyle Style(string key)
    {
        if (!Take(key, out var value))
        {
            return RopeStyle.Half;
        }
        string? text = value.ValueKind == JsonValueKind.String ? value.GetString() : null;
        switch (text)
        {
            case "half": return RopeStyle.Half;
            case "interleaved": return RopeStyle.Interleaved;
            default:
                _problems.Add($"{_prefix}{key}: expected \"half\" or \"interleaved\", actual {value.GetRawText()}");
                return RopeStyle.Half;
        }
    }

    /// <summary>
    /// <c>rope_scaling</c> (variants.md "RoPE scaling"): absent or null for none, else an object of type <c>"yarn"</c> (the key
    /// <c>type</c>, or <c>rope_type</c> as Hugging Face configs spell it) with <c>factor</c>, <c>original_max_position_embeddings</c>
    /// and the optional <c>beta_fast</c> (32), <c>beta_slow</c> (1), <c>mscale</c> (1), <c>mscale_all_dim</c> (0). Its problems
    /// are reported with the others, as <c>rope_scaling.key</c>; the values are checked by <see cref="RopeScaling.Validate"/>.
    /// </summary>
    public RopeScaling? Scaling()
    {
        const string key = RopeScaling.Key;
        if (!Take(key, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return null;
        }
        if (value.ValueKind != JsonValueKind.Object)
        {
            _problems.Add($"{_prefix}{key}: expected null or an object {{\"type\": \"yarn\", \"factor\": …, \"original_max_position_embeddings\": …}}, actual {value.GetRawText()}");
            return null;
        }
        var inner = new ConfigReader(_variant, value, $"{_prefix}{key}.");
        string? type = inner.Text("type"), ropeType = inner.Text("rope_type");
        if (!inner.Has("type") && !inner.Has("rope_type"))
        {
            inner._missing.Add($"{inner._prefix}type");
        }
        foreach (var (name, text) in new[] { ("type", type), ("rope_type", ropeType) })
        {
            if (text is not null and not "yarn")
            {
                inner._problems.Add($"{inner._prefix}{name}: expected \"yarn\" (the only scaling implemented), actual \"{text}\"");
            }
        }
        var scaling = new RopeScaling(
            inner.Double("factor"), inner.Int("original_max_position_embeddings"), inner.Double("beta_fast", 32), inner.Double("beta_slow", 1),
            inner.Double("mscale", 1), inner.Double("mscale_all_dim", 0));
        var problems = inner.Problems();
        _problems.AddRange(problems);
        return problems.Count == 0 ? scaling : null;
    }

    public bool Has(string key) => _values.ContainsKey(key);

    /// <summary>Throws one <see cref="ArgumentException"/> listing missing keys, unknown keys and ill-typed values.</summary>
    public void Finish()
    {
        var problems = Problems();
        if (problems.Count > 0)
        {
            throw new ArgumentException($"config: invalid {_variant} config: {string.Join("; ", problems)}", "config");
        }
    }

    private List<string> Problems()
    {
        var problems = new List<string>();
        if (_missing.Count > 0)
        {
            problems.Add($"missing keys: {string.Join(", ", _missing)}");
        }
        var unknown = _values.Keys.Where(k => !_read.Contains(k)).Select(k => _prefix + k).ToList();
        if (unknown.Count > 0)
        {
            problems.Add($"unknown keys: {string.Join(", ", unknown)}");
        }
        problems.AddRange(_problems);
        return problems;
    }

    // A string value, or null when absent (a non-string is reported).
    public string? Text(string key)
    {
        if (!Take(key, out var value))
        {
            return null;
        }
        if (value.ValueKind == JsonValueKind.String)
        {
            return value.GetString();
        }
        _problems.Add($"{_prefix}{key}: expected a string, actual {value.GetRawText()}");
        return null;
    }

    private bool Take(string key, out JsonElement value)
    {
        _read.Add(key);
        return _values.TryGetValue(key, out value);
    }

    private T Missing<T>(string key, T? fallback)
        where T : struct
    {
        if (fallback is { } f)
        {
            return f;
        }
        _missing.Add(_prefix + key);
        return default;
    }
}

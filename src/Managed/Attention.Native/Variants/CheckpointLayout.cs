using System.Globalization;
using System.Text.Json;

namespace Attention.Native.Variants;

/// <summary>
/// How an official implementation names and stores a variant's weights, and which conventions it uses (variants.md,
/// "Checkpoint layouts"). <see cref="AttentionLayer.LoadParameters(IReadOnlyDictionary{string, Tensor}, CheckpointLayout, string)"/>
/// takes a checkpoint under the official names as it is; <see cref="Export(AttentionLayer)"/> writes parameters (or gradients) back under
/// them. Every official tensor is the concatenation, in row-major order, of spec tensors (a fused projection's row
/// chunks, or one spec tensor under another name and shape), each possibly with some rows negated; such a map is a signed
/// permutation, so loading and exporting are exact (bit for bit in every dtype) and gradients map exactly as the
/// parameters do.
/// </summary>
/// <remarks>Thread safety: immutable; safe to share between threads. Stream rules: <c>Export</c> and <c>ExportGradients</c> return CPU tensors, reading the layer's tensors back, which waits for the work queued before on its backend; loading a checkpoint follows <see cref="AttentionLayer"/>'s rules.</remarks>
public abstract class CheckpointLayout
{
    private protected CheckpointLayout()
    {
    }

    /// <summary>The layout of variants.md's own names (no renaming).</summary>
    public static CheckpointLayout Spec { get; } = new SpecLayout();

    /// <summary>HF transformers' LLaMA attention (mha/gqa/mqa): <c>q_proj, k_proj, v_proj, o_proj</c>, RoPE <c>half</c>.</summary>
    public static CheckpointLayout Llama { get; } = new LlamaLayout();

    /// <summary>DeepSeek-V2/V3's MLA as in the HF checkpoints (mla): RoPE <c>interleaved</c>, YaRN from the config.</summary>
    public static CheckpointLayout DeepSeek { get; } = new DeepSeekLayout();

    /// <summary>T6's tensor product attention (tpa): <c>c_qkv.W_A_q … c_proj</c>, its RoPE turning by −θ, optional <c>subln</c>.</summary>
    public static CheckpointLayout T6 { get; } = new T6Layout();

    /// <summary>The official SAS module (sas).</summary>
    public static CheckpointLayout Sas { get; } = new SasLayout();

    /// <summary>TransNormerLLM's NormLinearAttention (transnormer): fused <c>qkvu_proj</c>, <c>out_proj</c>, <c>lrpe.theta</c>.</summary>
    public static CheckpointLayout TransNormer { get; } = new TransNormerLayout();

    /// <summary>StepFun Step-3's attention (mfa): <c>q_proj, inter_norm, wq, k_proj, v_proj, o_proj</c>.</summary>
    public static CheckpointLayout Step3 { get; } = new Step3Layout();

    /// <summary>Agent Attention's PVT module (agent, 2-D form): <c>q, kv, proj, an_bias … wa_bias, dwc</c> (and <c>sr, norm</c>) as they are.</summary>
    public static CheckpointLayout AgentPvt { get; } = new AgentPvtLayout();

    /// <summary>FLatten's PVT module (flatten, 2-D form): <c>q, kv, proj, scale, positional_encoding, dwc</c> (and <c>sr, norm</c>) as they are.</summary>
    public static CheckpointLayout FlattenPvt { get; } = new FlattenPvtLayout();

    /// <summary>Agent Attention's Swin module (agent, 2-D form <c>swin</c>): <c>qkv, proj, an_bias … wa_bias, dwc</c> as they are, one window per batch entry.</summary>
    public static CheckpointLayout AgentSwin { get; } = new AgentSwinLayout();

    /// <summary>Agent Attention's DeiT module (agent, 2-D form <c>deit</c>): <c>qkv, proj, an_bias … wa_bias, ac_bias, ca_bias, dwc</c> as they are.</summary>
    public static CheckpointLayout AgentDeit { get; } = new AgentDeitLayout();

    /// <summary>FLatten's Swin module (flatten, 2-D form <c>swin</c>): <c>qkv, proj, scale, positional_encoding, dwc</c> as they are.</summary>
    public static CheckpointLayout FlattenSwin { get; } = new FlattenSwinLayout();

    /// <summary>Every layout, <see cref="Spec"/> first.</summary>
    public static IReadOnlyList<CheckpointLayout> All { get; } = [Spec, Llama, DeepSeek, T6, Sas, TransNormer, Step3, AgentPvt, AgentSwin, AgentDeit, FlattenPvt, FlattenSwin];

    /// <summary>The layout's name (<c>spec</c>, <c>llama</c>, <c>deepseek</c>, <c>t6</c>, <c>sas</c>, <c>transnormer</c>, <c>step3</c>, <c>agent-pvt</c>, <c>agent-swin</c>, <c>agent-deit</c>, <c>flatten-pvt</c>, <c>flatten-swin</c>).</summary>
    public abstract string Name { get; }

    /// <summary>The variants whose weights the layout describes (every variant for <see cref="Spec"/>).</summary>
    public abstract IReadOnlyList<string> Variants { get; }

    /// <summary>The layout named <paramref name="name"/>; <see cref="ArgumentException"/> lists the known names otherwise.</summary>
    public static CheckpointLayout Get(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return All.FirstOrDefault(l => l.Name == name)
            ?? throw new ArgumentException($"layout: expected one of {string.Join(", ", All.Select(l => l.Name))}, actual '{name}'", nameof(name));
    }

    /// <summary>
    /// <paramref name="config"/> with the conventions the official module has (e.g. DeepSeek's interleaved RoPE); a config
    /// made from the official config file (<see cref="ReadConfig"/>) has them already.
    /// </summary>
    public virtual LayerConfig WithConventions(LayerConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return config;
    }

    /// <summary>
    /// Why a layer of <paramref name="config"/> cannot hold this layout's checkpoint (another variant, or a convention the
    /// official module does not have); empty when it fits.
    /// </summary>
    public IReadOnlyList<string> Misfits(LayerConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (!Variants.Contains(config.Variant))
        {
            return [$"layout {Name} holds {string.Join("/", Variants)} weights, not {config.Variant}"];
        }
        return ConventionMisfits(config).ToList();
    }

    /// <summary>
    /// Builds the layer config from the official config's own keys (a HF <c>config.json</c> or the module's arguments, as
    /// the layout's documentation lists); keys that do not concern one attention layer are ignored, and a key whose value
    /// the official module would honour but this library cannot is refused. <paramref name="layerIndex"/> is the layer's
    /// index where the variant depends on it (TransNormerLLM's decay).
    /// </summary>
    public LayerConfig ReadConfig(string json, int layerIndex = 0)
    {
        ArgumentNullException.ThrowIfNull(json);
        ArgumentOutOfRangeException.ThrowIfNegative(layerIndex);
        System.Text.Json.JsonDocument document;
        try
        {
            document = System.Text.Json.JsonDocument.Parse(json);
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new ArgumentException($"json: expected the JSON object of a {Name} config, actual invalid JSON ({e.Message})", nameof(json), e);
        }
        using (document)
        {
            if (document.RootElement.ValueKind != System.Text.Json.JsonValueKind.Object)
            {
                throw new ArgumentException($"json: expected the JSON object of a {Name} config, actual a {document.RootElement.ValueKind}", nameof(json));
            }
            var official = new OfficialConfig(Name, ConfigRoot(document.RootElement));
            var (variant, specKeys) = TranslateConfig(official, layerIndex);
            official.Finish();
            return LayerConfig.Parse(variant, specKeys);
        }
    }

    /// <summary>The official tensors (names and shapes) a checkpoint of this layout holds for a layer of <paramref name="layer"/>'s config.</summary>
    public IReadOnlyList<ParameterSpec> OfficialSpecs(AttentionLayer layer)
    {
        ArgumentNullException.ThrowIfNull(layer);
        return Map(layer).Select(t => new ParameterSpec(t.Name, t.Shape, Learnable: t.Learnable)).ToList();
    }

    /// <summary>
    /// <paramref name="layer"/>'s parameters under this layout's names, as new CPU tensors in the layer's dtype (save them
    /// with <see cref="IO.SafeTensors"/>); exact: loading them back gives the same bits.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> Export(AttentionLayer layer)
    {
        ArgumentNullException.ThrowIfNull(layer);
        return Export(layer, layer.Parameters, learnableOnly: false);
    }

    /// <summary>
    /// Gradients by spec name (<see cref="LayerGradients.Parameters"/>) under this layout's names, as new CPU tensors in the
    /// gradients' dtype: the gradient of each official tensor of <paramref name="layer"/> (official tensors of
    /// non-learnable parameters only are left out).
    /// </summary>
    public IReadOnlyDictionary<string, Tensor> ExportGradients(AttentionLayer layer, IReadOnlyDictionary<string, Tensor> gradients)
    {
        ArgumentNullException.ThrowIfNull(layer);
        ArgumentNullException.ThrowIfNull(gradients);
        return Export(layer, gradients, learnableOnly: true);
    }

    /// <summary>The official tensors of <paramref name="layer"/>, each made of spec tensors.</summary>
    internal abstract IReadOnlyList<OfficialTensor> Map(AttentionLayer layer);

    /// <summary>Convention problems of <paramref name="config"/> (its variant fits).</summary>
    private protected virtual IEnumerable<string> ConventionMisfits(LayerConfig config) => [];

    /// <summary>The object holding the attention layer's keys (a multimodal config nests them, e.g. under <c>text_config</c>).</summary>
    private protected virtual System.Text.Json.JsonElement ConfigRoot(System.Text.Json.JsonElement root) => root;

    /// <summary>The variant and the spec config JSON of an official config.</summary>
    private protected abstract (string Variant, string Json) TranslateConfig(OfficialConfig official, int layerIndex);

    /// <summary>
    /// The spec parameter values of a checkpoint under this layout's names (prefixed by <paramref name="prefix"/>; other
    /// tensors are ignored when a prefix is given): one <see cref="ArgumentException"/> lists every problem.
    /// </summary>
    internal Dictionary<string, double[]> Import(AttentionLayer layer, IReadOnlyDictionary<string, Tensor> tensors, string prefix)
    {
        var problems = new List<string>(Misfits(layer.Config));
        if (problems.Count > 0)
        {
            throw new ArgumentException($"layout: {Name} does not fit this {layer.Variant} layer ({string.Join("; ", problems)})");
        }
        var map = Map(layer);
        var present = tensors.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal))
            .ToDictionary(k => k[prefix.Length..], k => tensors[k], StringComparer.Ordinal);
        var missing = map.Where(t => !present.ContainsKey(t.Name)).Select(t => prefix + t.Name).ToList();
        var expected = map.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var unexpected = present.Keys.Where(k => !expected.Contains(k)).Select(k => prefix + k).Order(StringComparer.Ordinal).ToList();
        var misshapen = map.Where(t => present.TryGetValue(t.Name, out var tensor) && tensor.Shape != t.Shape)
            .Select(t => $"{prefix}{t.Name} expected {t.Shape} actual {present[t.Name].Shape}").ToList();
        if (missing.Count + unexpected.Count + misshapen.Count > 0)
        {
            var parts = new List<string>();
            if (missing.Count > 0)
            {
                parts.Add($"missing: {string.Join(", ", missing)}");
            }
            if (unexpected.Count > 0)
            {
                parts.Add($"unexpected: {Ops.Check.Listing(unexpected)}");
                if (unexpected.Any(n => n.EndsWith(".weight_scale_inv", StringComparison.Ordinal)))
                {
                    // DeepSeek-V3's released weights are fp8 with 128×128 block scales.
                    parts.Add("fp8 block-quantised weights (*.weight_scale_inv) are not read: dequantise them to bf16 or fp32 first");
                }
            }
            if (misshapen.Count > 0)
            {
                parts.Add($"wrong shape: {string.Join("; ", misshapen)}");
            }
            string where = Name == "spec" ? "" : $" in layout {Name}";
            throw new ArgumentException($"tensors: the weights do not match the {layer.Variant} layer{where} ({string.Join(" | ", parts)})", nameof(tensors));
        }
        var values = new Dictionary<string, double[]>(StringComparer.Ordinal);
        foreach (var official in map)
        {
            var source = present[official.Name].ToDoubleArray();
            long at = 0;
            foreach (var piece in official.Pieces)
            {
                var spec = layer.ParameterSpecs.First(s => s.Name == piece.Spec);
                var target = new double[spec.Shape.ElementCount];
                Array.Copy(source, at, target, 0, target.Length);
                piece.ApplySigns(target, spec.Shape);
                values.Add(piece.Spec, target);
                at += target.Length;
            }
        }
        return values;
    }

    private Dictionary<string, Tensor> Export(AttentionLayer layer, IReadOnlyDictionary<string, Tensor> specTensors, bool learnableOnly)
    {
        layer.ThrowIfDisposed();
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var official in Map(layer))
            {
                if (learnableOnly && !official.Learnable)
                {
                    continue;
                }
                var values = new double[official.Shape.ElementCount];
                long at = 0;
                DType? dtype = null;
                foreach (var piece in official.Pieces)
                {
                    if (!specTensors.TryGetValue(piece.Spec, out var tensor))
                    {
                        throw new ArgumentException($"gradients: expected a tensor named {piece.Spec} (for {official.Name}), actual none", nameof(specTensors));
                    }
                    var part = tensor.ToDoubleArray();
                    // The map is a signed permutation: applying the signs again undoes them.
                    piece.ApplySigns(part, tensor.Shape);
                    Array.Copy(part, 0, values, at, part.Length);
                    at += part.Length;
                    dtype ??= tensor.DType;
                }
                result.Add(official.Name, Backend.Cpu.FromArray(values, official.Shape, dtype ?? layer.DType));
            }
        }
        catch
        {
            foreach (var t in result.Values)
            {
                t.Dispose();
            }
            throw;
        }
        return result;
    }

    private protected static string Json(params (string Key, object? Value)[] pairs)
    {
        using var stream = new MemoryStream();
        using (var writer = new System.Text.Json.Utf8JsonWriter(stream))
        {
            writer.WriteStartObject();
            foreach (var (key, value) in pairs)
            {
                switch (value)
                {
                    case null: break;
                    case bool b: writer.WriteBoolean(key, b); break;
                    case string text: writer.WriteString(key, text); break;
                    case int i: writer.WriteNumber(key, i); break;
                    case double d: writer.WriteNumber(key, d); break;
                    case RawJson raw:
                        writer.WritePropertyName(key);
                        writer.WriteRawValue(raw.Text);
                        break;
                    default: throw new ArgumentException($"pairs: expected numbers, bools, strings or raw JSON, actual {value.GetType().Name} for {key}", nameof(pairs));
                }
            }
            writer.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(stream.ToArray());
    }
}

/// <summary>JSON text passed through as it is (a nested object such as <c>rope_scaling</c>).</summary>
internal sealed record RawJson(string Text);

/// <summary>One official tensor: its name, shape, and the spec tensors it is made of in row-major order.</summary>
internal sealed record OfficialTensor(string Name, Shape Shape, IReadOnlyList<Piece> Pieces, bool Learnable = true)
{
    /// <summary>An official tensor that is one spec tensor under another name (and maybe another shape of the same size).</summary>
    public static OfficialTensor Renamed(string name, string spec, Shape shape, bool learnable = true) => new(name, shape, [new Piece(spec)], learnable);
}

/// <summary>
/// One spec tensor inside an official tensor. <see cref="NegatedRows"/>, when set, says which rows (first axis) of the spec
/// tensor are stored negated in the official one: an exact, self-inverse transform.
/// </summary>
internal sealed record Piece(string Spec, Func<long, bool>? NegatedRows = null)
{
    public void ApplySigns(double[] values, Shape shape)
    {
        if (NegatedRows is null || values.Length == 0)
        {
            return;
        }
        long rowLength = values.Length / shape[0];
        for (long row = 0; row < shape[0]; row++)
        {
            if (NegatedRows(row))
            {
                for (long i = row * rowLength; i < (row + 1) * rowLength; i++)
                {
                    values[i] = -values[i];
                }
            }
        }
    }
}

/// <summary>Reads an official config's keys: records missing required keys and refused values, reported together.</summary>
internal sealed class OfficialConfig
{
    private readonly string _layout;
    private readonly System.Text.Json.JsonElement _root;
    private readonly List<string> _missing = [];
    private readonly List<string> _problems = [];

    public OfficialConfig(string layout, System.Text.Json.JsonElement root)
    {
        _layout = layout;
        _root = root;
    }

    public bool Has(string key) => _root.TryGetProperty(key, out var v) && v.ValueKind != System.Text.Json.JsonValueKind.Null;

    public int? Int(string key, bool required = true)
    {
        if (!Has(key) && required)
        {
            _missing.Add(key);
        }
        return Read<int?>(key, "an integer", v => v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : null);
    }

    public double? Double(string key) => Read<double?>(key, "a number", v => v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null);

    public bool? Bool(string key) => Read<bool?>(key, "true or false", v => v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null);

    public string? String(string key) => Read<string?>(key, "a string", v => v.ValueKind == JsonValueKind.String ? v.GetString() : null);

    public IReadOnlyList<int>? IntList(string key) => Read<IReadOnlyList<int>?>(key, "a list of integers", v =>
        v.ValueKind == JsonValueKind.Array && v.EnumerateArray().All(e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out _))
            ? v.EnumerateArray().Select(e => e.GetInt32()).ToList()
            : (IReadOnlyList<int>?)null);

    /// <summary>A window size given as an integer (square) or as a pair <c>[height, width]</c>, as Swin's modules take it.</summary>
    public (int Height, int Width)? IntOrPair(string key) => Read<(int, int)?>(key, "an integer or a pair of integers", v =>
        v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int side) ? (side, side)
        : v.ValueKind == JsonValueKind.Array && v.GetArrayLength() == 2 && v.EnumerateArray().All(e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out _))
            ? (v[0].GetInt32(), v[1].GetInt32())
            : null);

    public JsonElement? Object(string key) => Read<JsonElement?>(key, "an object", v => v.ValueKind == JsonValueKind.Object ? v : (JsonElement?)null);

    // The value of a present, non-null key as convert reads it; a value convert refuses is recorded as a problem.
    private TValue? Read<TValue>(string key, string expected, Func<JsonElement, TValue?> convert)
    {
        if (!Has(key))
        {
            return default;
        }
        var value = _root.GetProperty(key);
        var result = convert(value);
        if (result is null)
        {
            _problems.Add($"{key}: expected {expected}, actual {value.GetRawText()}");
        }
        return result;
    }

    /// <summary>Records that the official module would honour <paramref name="key"/>'s value but this library cannot.</summary>
    public void Refuse(string key, string expected)
    {
        _problems.Add($"{key}: expected {expected}, actual {_root.GetProperty(key).GetRawText()}");
    }

    public void Finish()
    {
        var parts = new List<string>();
        if (_missing.Count > 0)
        {
            parts.Add($"missing keys: {string.Join(", ", _missing)}");
        }
        parts.AddRange(_problems);
        if (parts.Count > 0)
        {
            throw new ArgumentException($"config: invalid {_layout} config: {string.Join("; ", parts)}", "config");
        }
    }
}

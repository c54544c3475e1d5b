using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>
/// HF transformers' <c>LlamaAttention</c> (and the many models that copy it): <c>q_proj, k_proj, v_proj, o_proj</c>, no biases,
/// RoPE on every head in the <c>half</c> pairing (<c>rotate_half</c>). Config: <c>hidden_size, num_attention_heads,
/// num_key_value_heads, head_dim, rope_theta</c>.
/// </summary>
internal sealed class LlamaLayout : CheckpointLayout
{
    public override string Name => "llama";

    public override IReadOnlyList<string> Variants { get; } = ["mha", "gqa", "mqa"];

    public override LayerConfig WithConventions(LayerConfig config) =>
        config is GqaConfig c ? c with { Rope = true, RopeStyle = RopeStyle.Half } : base.WithConventions(config);

    private protected override IEnumerable<string> ConventionMisfits(LayerConfig config)
    {
        var c = (GqaConfig)config;
        if (!c.Rope || c.RopeStyle != RopeStyle.Half)
        {
            yield return $"llama rotates every head with rope_style half, the config has rope {(c.Rope ? "true" : "false")}, rope_style {(c.RopeStyle == RopeStyle.Half ? "half" : "interleaved")}";
        }
    }

    internal override IReadOnlyList<OfficialTensor> Map(AttentionLayer layer) =>
    [
        Renamed("q_proj.weight", "w_q", layer), Renamed("k_proj.weight", "w_k", layer),
        Renamed("v_proj.weight", "w_v", layer), Renamed("o_proj.weight", "w_o", layer),
    ];

    private protected override (string Variant, string Json) TranslateConfig(OfficialConfig official, int layerIndex)
    {
        int? hidden = official.Int("hidden_size"), heads = official.Int("num_attention_heads");
        int? kvHeads = official.Int("num_key_value_heads", required: false) ?? heads;
        int? headDim = official.Int("head_dim", required: false) ?? (hidden / Math.Max(1, heads ?? 1));
        if (official.Bool("attention_bias") == true)
        {
            official.Refuse("attention_bias", "false (this library's projections have no bias)");
        }
        if (official.Double("partial_rotary_factor") is { } partial && partial != 1)
        {
            official.Refuse("partial_rotary_factor", "1 (RoPE on the whole head)");
        }
        string variant = kvHeads == heads ? "mha" : kvHeads == 1 ? "mqa" : "gqa";
        return (variant, Json(
            ("d_model", hidden), ("n_heads", heads), ("n_kv_heads", kvHeads), ("head_dim", headDim),
            ("rope", true), ("rope_base", RopeScalingJson.Theta(official)), ("rope_style", "half"),
            ("rope_scaling", RopeScalingJson.From(official))));
    }

    internal static OfficialTensor Renamed(string name, string spec, AttentionLayer layer) =>
        OfficialTensor.Renamed(name, spec, layer.ParameterSpecs.First(s => s.Name == spec).Shape);
}

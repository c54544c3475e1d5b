using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>
/// StepFun Step-3's attention as its checkpoint names it (vLLM <c>step3_text.py</c>, <c>Step3TextAttention</c>, which fuses
/// q, k, v into its runtime <c>qkv_proj</c> only when loading): <c>q_proj</c> [C_q, d_model] → <c>inter_norm</c> (RMSNorm with
/// <c>rms_norm_eps</c>) → <c>wq</c> [H·d, C_q]; one key/value head <c>k_proj</c>, <c>v_proj</c> [d, d_model]; <c>o_proj</c>.
/// RoPE neox-style (<c>half</c>) on the whole head. Config: Step-3's <c>config.json</c> (its text keys may sit under
/// <c>text_config</c>): <c>hidden_size, num_attention_heads, head_dim, share_q_dim, rope_theta, rms_norm_eps</c>, and
/// <c>num_attention_groups</c> must be 1.
/// </summary>
internal sealed class Step3Layout : CheckpointLayout
{
    public override string Name => "step3";

    public override IReadOnlyList<string> Variants { get; } = ["mfa"];

    public override LayerConfig WithConventions(LayerConfig config) =>
        config is MfaConfig c ? c with { Rope = true, RopeStyle = RopeStyle.Half, Causal = true } : base.WithConventions(config);

    private protected override IEnumerable<string> ConventionMisfits(LayerConfig config)
    {
        var c = (MfaConfig)config;
        if (!c.Rope || c.RopeStyle != RopeStyle.Half)
        {
            yield return "step3 rotates every head neox-style: the config needs rope true, rope_style half";
        }
        if (!c.Causal)
        {
            yield return "step3 is causal: the config needs causal true";
        }
    }

    internal override IReadOnlyList<OfficialTensor> Map(AttentionLayer layer) =>
    [
        LlamaLayout.Renamed("q_proj.weight", "w_q_a", layer), LlamaLayout.Renamed("inter_norm.weight", "q_norm", layer),
        LlamaLayout.Renamed("wq.weight", "w_q_b", layer), LlamaLayout.Renamed("k_proj.weight", "w_k", layer),
        LlamaLayout.Renamed("v_proj.weight", "w_v", layer), LlamaLayout.Renamed("o_proj.weight", "w_o", layer),
    ];

    // Step-3's released config.json is the vision-language wrapper: the text model's keys are under text_config.
    private protected override System.Text.Json.JsonElement ConfigRoot(System.Text.Json.JsonElement root) =>
        root.TryGetProperty("text_config", out var text) && text.ValueKind == System.Text.Json.JsonValueKind.Object ? text : root;

    private protected override (string Variant, string Json) TranslateConfig(OfficialConfig official, int layerIndex)
    {
        if (official.Int("num_attention_groups", required: false) is { } groups && groups != 1)
        {
            official.Refuse("num_attention_groups", "1 (Step-3's attention has one key/value head)");
        }
        int? headDim = official.Int("head_dim");
        return ("mfa", Json(
            ("d_model", official.Int("hidden_size")), ("n_heads", official.Int("num_attention_heads")), ("head_dim", headDim),
            ("q_lora_dim", official.Int("share_q_dim", required: false) ?? headDim), ("causal", true), ("rope", true),
            ("rope_base", RopeScalingJson.Theta(official)), ("rope_style", "half"), ("norm_eps", official.Double("rms_norm_eps") ?? 1e-5),
            ("rope_scaling", RopeScalingJson.From(official))));
    }
}

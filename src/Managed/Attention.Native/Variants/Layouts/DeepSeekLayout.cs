using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>
/// DeepSeek-V2/V3's MLA under the names of the HF checkpoints (<c>modeling_deepseek.py</c>; DeepSeek-V3's
/// <c>inference/convert.py</c> maps these same names to its own): <c>q_a_proj, q_a_layernorm, q_b_proj</c> (or
/// <c>q_proj</c> when <c>q_lora_rank</c> is null), <c>kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj</c>. The row
/// orders are the spec's ([q_nope | q_pe] per head, [c | k_pe], [k_nope | v] per head). RoPE pairs (2j, 2j+1)
/// (<c>interleaved</c>; HF de-interleaves q and k alike before <c>rotate_half</c>, which leaves every score the same), and the
/// config's <c>rope_scaling</c> (YaRN) also scales the softmax.
/// </summary>
internal sealed class DeepSeekLayout : CheckpointLayout
{
    public override string Name => "deepseek";

    public override IReadOnlyList<string> Variants { get; } = ["mla"];

    public override LayerConfig WithConventions(LayerConfig config) =>
        config is MlaConfig c ? c with { RopeStyle = RopeStyle.Interleaved } : base.WithConventions(config);

    private protected override IEnumerable<string> ConventionMisfits(LayerConfig config)
    {
        if (((MlaConfig)config).RopeStyle != RopeStyle.Interleaved)
        {
            yield return "deepseek rotates pairs (2j, 2j+1): the config needs rope_style interleaved (WithConventions sets it)";
        }
    }

    internal override IReadOnlyList<OfficialTensor> Map(AttentionLayer layer)
    {
        var c = (MlaConfig)layer.Config;
        var map = new List<OfficialTensor>();
        if (c.QLoraRank > 0)
        {
            map.Add(LlamaLayout.Renamed("q_a_proj.weight", "w_q_a", layer));
            map.Add(LlamaLayout.Renamed("q_a_layernorm.weight", "q_norm", layer));
            map.Add(LlamaLayout.Renamed("q_b_proj.weight", "w_q_b", layer));
        }
        else
        {
            map.Add(LlamaLayout.Renamed("q_proj.weight", "w_q", layer));
        }
        map.Add(LlamaLayout.Renamed("kv_a_proj_with_mqa.weight", "w_kv_a", layer));
        map.Add(LlamaLayout.Renamed("kv_a_layernorm.weight", "kv_norm", layer));
        map.Add(LlamaLayout.Renamed("kv_b_proj.weight", "w_kv_b", layer));
        map.Add(LlamaLayout.Renamed("o_proj.weight", "w_o", layer));
        return map;
    }

    private protected override (string Variant, string Json) TranslateConfig(OfficialConfig official, int layerIndex)
    {
        if (official.Bool("attention_bias") == true)
        {
            official.Refuse("attention_bias", "false (this library's projections have no bias)");
        }
        // Newer HF configs say whether q and k are rotated interleaved; DeepSeek's own checkpoints are.
        bool interleaved = official.Bool("rope_interleave") ?? true;
        return ("mla", Json(
            ("d_model", official.Int("hidden_size")), ("n_heads", official.Int("num_attention_heads")),
            ("q_lora_rank", official.Int("q_lora_rank", required: false) ?? 0), ("kv_lora_rank", official.Int("kv_lora_rank")),
            ("qk_nope_head_dim", official.Int("qk_nope_head_dim")), ("qk_rope_head_dim", official.Int("qk_rope_head_dim")),
            ("v_head_dim", official.Int("v_head_dim")), ("rope_base", RopeScalingJson.Theta(official)),
            ("rope_style", interleaved ? "interleaved" : "half"), ("rope_scaling", RopeScalingJson.From(official))));
    }
}

namespace Attention.Native.Variants;

/// <summary>
/// TransNormerLLM's <c>NormLinearAttention</c> (OpenNLPLab <c>modeling_transnormer.py</c>): one fused <c>qkvu_proj</c> whose
/// output is chunked into q, k, v, u in that order (so its rows are <c>w_q, w_k, w_v, w_u</c> stacked), <c>out_proj</c>, and
/// with LRPE <c>lrpe.theta [H, 1, d]</c> (the spec's <c>lrpe_theta [H, d]</c>, same order). The norm is SimpleRMSNorm (no gain).
/// </summary>
internal sealed class TransNormerLayout : CheckpointLayout
{
    public override string Name => "transnormer";

    public override IReadOnlyList<string> Variants { get; } = ["transnormer"];

    internal override IReadOnlyList<OfficialTensor> Map(AttentionLayer layer)
    {
        var c = (TransNormerConfig)layer.Config;
        int hd = c.Heads * c.HeadDim;
        var map = new List<OfficialTensor>
        {
            new("qkvu_proj.weight", new Shape(4 * hd, c.DModel), [new Piece("w_q"), new Piece("w_k"), new Piece("w_v"), new Piece("w_u")]),
            LlamaLayout.Renamed("out_proj.weight", "w_o", layer),
        };
        if (c.Lrpe)
        {
            map.Add(OfficialTensor.Renamed("lrpe.theta", "lrpe_theta", new Shape(c.Heads, 1, c.HeadDim)));
        }
        return map;
    }

    /// <summary>
    /// <c>TransnormerConfig</c>'s keys: <c>decoder_embed_dim, hidden_dim</c> (= H·d), <c>decoder_attention_heads,
    /// decoder_layers</c>, and LRPE per layer from <c>linear_use_lrpe_list[layer]</c>; <c>norm_type</c> must be
    /// <c>simplermsnorm</c>, <c>linear_act_fun</c> <c>silu</c>, <c>bias</c> false.
    /// </summary>
    private protected override (string Variant, string Json) TranslateConfig(OfficialConfig official, int layerIndex)
    {
        int? dModel = official.Int("decoder_embed_dim"), heads = official.Int("decoder_attention_heads");
        int? hidden = official.Int("hidden_dim", required: false) ?? dModel;
        if (official.String("norm_type") is { } norm && norm != "simplermsnorm")
        {
            official.Refuse("norm_type", "\"simplermsnorm\" (the gainless RMSNorm of variants.md §7)");
        }
        if (official.String("linear_act_fun") is { } act && act != "silu")
        {
            official.Refuse("linear_act_fun", "\"silu\"");
        }
        if (official.Bool("bias") == true)
        {
            official.Refuse("bias", "false (this library's projections have no bias)");
        }
        bool lrpe = official.IntList("linear_use_lrpe_list") is { } list && layerIndex < list.Count && list[layerIndex] != 0;
        if (lrpe && hidden != dModel)
        {
            // The official Lrpe is sized by decoder_embed_dim / H while q and k heads are hidden_dim / H.
            official.Refuse("hidden_dim", $"decoder_embed_dim ({dModel}) in a layer with LRPE");
        }
        return ("transnormer", Json(
            ("d_model", dModel), ("n_heads", heads), ("head_dim", hidden / Math.Max(1, heads ?? 1)),
            ("layer_idx", layerIndex), ("num_layers", official.Int("decoder_layers")), ("lrpe", lrpe)));
    }
}

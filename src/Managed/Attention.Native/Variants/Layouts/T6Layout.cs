using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>
/// T6's tensor product attention as its training module stores it (tensorgi/T6 <c>model/T6.py</c>, class
/// <c>CausalSelfAttention</c>): <c>c_qkv.W_A_q/W_A_k/W_A_v/W_B_q/W_B_k/W_B_v</c> (A rows head-major <c>h·R + r</c>, B rows
/// rank-major <c>r·d + i</c>, as the spec), <c>c_proj</c>, and with <c>using_groupnorm</c> the per-head output RMSNorm
/// <c>subln</c> (gain [d], ε 1e-5). k and v share one <c>rank</c>. Its RoPE pairs halves (j, j + d/2) with base 10000 but turns
/// by −θ: <c>y₁ = x₁cos + x₂sin</c>, <c>y₂ = −x₁sin + x₂cos</c>. With P negating the second half of a vector,
/// R(−θ) = P·R(θ)·P, so loading stores the rows <c>r·d + i</c>, i ≥ d/2, of <c>W_B_q</c> and <c>W_B_k</c> negated: the layer's
/// rotated q and k are then P times T6's, and every score q·k is T6's exactly (P is orthogonal and applied to both). The
/// negation is exact, and export negates back.
/// </summary>
internal sealed class T6Layout : CheckpointLayout
{
    public override string Name => "t6";

    public override IReadOnlyList<string> Variants { get; } = ["tpa"];

    public override LayerConfig WithConventions(LayerConfig config) =>
        config is TpaConfig c ? c with { Rope = true, RopeStyle = RopeStyle.Half, RopeBase = 10000, Causal = true } : base.WithConventions(config);

    private protected override IEnumerable<string> ConventionMisfits(LayerConfig config)
    {
        var c = (TpaConfig)config;
        if (!c.Rope || c.RopeStyle != RopeStyle.Half || c.RopeBase != 10000)
        {
            yield return "t6 rotates B_q and B_k in halves with base 10000: the config needs rope true, rope_style half, rope_base 10000";
        }
        if (!c.Causal)
        {
            yield return "t6 is causal: the config needs causal true";
        }
        if (c.KRank != c.VRank)
        {
            yield return $"t6 has one rank for k and v: the config needs k_rank = v_rank, actual {c.KRank} and {c.VRank}";
        }
    }

    internal override IReadOnlyList<OfficialTensor> Map(AttentionLayer layer)
    {
        var c = (TpaConfig)layer.Config;
        int d = c.HeadDim;
        // Row r·d + i of a B weight gives coordinate i of rank row r: T6's −θ turn is undone by negating i ≥ d/2.
        bool SecondHalf(long row) => row % d >= d / 2;
        var map = new List<OfficialTensor>
        {
            LlamaLayout.Renamed("c_qkv.W_A_q.weight", "w_a_q", layer),
            LlamaLayout.Renamed("c_qkv.W_A_k.weight", "w_a_k", layer),
            LlamaLayout.Renamed("c_qkv.W_A_v.weight", "w_a_v", layer),
            new("c_qkv.W_B_q.weight", Shape("w_b_q", layer), [new Piece("w_b_q", SecondHalf)]),
            new("c_qkv.W_B_k.weight", Shape("w_b_k", layer), [new Piece("w_b_k", SecondHalf)]),
            LlamaLayout.Renamed("c_qkv.W_B_v.weight", "w_b_v", layer),
            LlamaLayout.Renamed("c_proj.weight", "w_o", layer),
        };
        if (c.Subln)
        {
            map.Add(LlamaLayout.Renamed("subln.weight", "subln", layer));
        }
        return map;
    }

    /// <summary>T6's <c>GPTConfig</c> fields: <c>n_embd, n_head, head_dim, q_rank, rank, using_groupnorm</c>.</summary>
    private protected override (string Variant, string Json) TranslateConfig(OfficialConfig official, int layerIndex)
    {
        int? rank = official.Int("rank");
        return ("tpa", Json(
            ("d_model", official.Int("n_embd")), ("n_heads", official.Int("n_head")), ("head_dim", official.Int("head_dim")),
            ("q_rank", official.Int("q_rank")), ("k_rank", rank), ("v_rank", rank), ("causal", true), ("rope", true),
            ("rope_base", 10000.0), ("rope_style", "half"), ("subln", official.Bool("using_groupnorm") ?? false)));
    }

    private static Shape Shape(string spec, AttentionLayer layer) => layer.ParameterSpecs.First(s => s.Name == spec).Shape;
}

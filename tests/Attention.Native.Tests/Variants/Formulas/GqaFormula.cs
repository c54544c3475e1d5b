using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary><c>mha</c>, <c>gqa</c>, <c>mqa</c> (variants.md §1) written out in F64, from the spec alone.</summary>
internal static class GqaFormula
{
    /// <summary>y [batch, tokens, d_model] for x [batch, tokens, d_model] and the parameters <paramref name="w"/>.</summary>
    public static double[] Forward(GqaConfig c, IReadOnlyDictionary<string, double[]> w, double[] x, int batch, int tokens)
    {
        int n = batch * tokens, h = c.Heads, g = c.KvHeads, d = c.HeadDim;
        // q = x w_qᵀ → [B,T,H,d];  k = x w_kᵀ, v = x w_vᵀ → [B,T,G,d]
        var q = FormulaKit.Dense(x, n, c.DModel, w["w_q"], null, h * d);
        var k = FormulaKit.Dense(x, n, c.DModel, w["w_k"], null, g * d);
        var v = FormulaKit.Dense(x, n, c.DModel, w["w_v"], null, g * d);
        if (c.Rope)
        {
            // q, k = RoPE(q), RoPE(k): each head's d-vector turns by its token's position.
            FormulaKit.Rope(q, batch, tokens, h, d, 0, d, c.RopeBase, c.RopeStyle, c.RopeScaling);
            FormulaKit.Rope(k, batch, tokens, g, d, 0, d, c.RopeBase, c.RopeStyle, c.RopeScaling);
        }
        // head i uses kv head g(i) = floor(i / (H/G));  o_i = softmax(q_i k_g(i)ᵀ / sqrt(d) · μ(s, m_a)² + mask) v_g(i)
        int groupSize = h / g;
        var o = FormulaKit.SoftmaxAttention(q, k, v, batch, tokens, h, g, d, d, i => i / groupSize, 1 / Math.Sqrt(d) * FormulaKit.SoftmaxScaleFactor(c.RopeScaling), c.Causal);
        // y = concat_i(o_i) w_oᵀ
        return FormulaKit.Dense(o, n, h * d, w["w_o"], null, c.DModel);
    }
}

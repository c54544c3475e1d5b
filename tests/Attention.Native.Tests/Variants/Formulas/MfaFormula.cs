using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary><c>mfa</c> (variants.md §8), Step-3's multi-matrix factorization attention, written out in F64 from the spec alone.</summary>
internal static class MfaFormula
{
    /// <summary>y [batch, tokens, d_model] for x [batch, tokens, d_model] and the parameters <paramref name="w"/>.</summary>
    public static double[] Forward(MfaConfig c, IReadOnlyDictionary<string, double[]> w, double[] x, int batch, int tokens)
    {
        int n = batch * tokens, h = c.Heads, d = c.HeadDim, cq = c.QLoraDim;
        // q = RMSNorm_eps(x w_q_aᵀ; q_norm) w_q_bᵀ → [B,T,H,d]   (norm_eps instead of 1e-6)
        var qa = FormulaKit.RmsNorm(FormulaKit.Dense(x, n, c.DModel, w["w_q_a"], null, cq), n, cq, w["q_norm"], c.NormEpsilon);
        var q = FormulaKit.Dense(qa, n, cq, w["w_q_b"], null, h * d);
        // k = x w_kᵀ, v = x w_vᵀ → [B,T,1,d]
        var k = FormulaKit.Dense(x, n, c.DModel, w["w_k"], null, d);
        var v = FormulaKit.Dense(x, n, c.DModel, w["w_v"], null, d);
        if (c.Rope)
        {
            // q, k = RoPE(q), RoPE(k) on the whole head width.
            FormulaKit.Rope(q, batch, tokens, h, d, 0, d, c.RopeBase, c.RopeStyle, c.RopeScaling);
            FormulaKit.Rope(k, batch, tokens, 1, d, 0, d, c.RopeBase, c.RopeStyle, c.RopeScaling);
        }
        // o_i = softmax(q_i kᵀ / sqrt(d) + mask) v: every query head reads the one key/value head.
        var o = FormulaKit.SoftmaxAttention(q, k, v, batch, tokens, h, 1, d, d, _ => 0, 1 / Math.Sqrt(d) * FormulaKit.SoftmaxScaleFactor(c.RopeScaling), c.Causal);
        // y = concat_i(o_i) w_oᵀ
        return FormulaKit.Dense(o, n, h * d, w["w_o"], null, c.DModel);
    }
}

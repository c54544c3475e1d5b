using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary><c>tpa</c> (variants.md §3), tensor product attention, written out in F64 with q, k and v materialised.</summary>
internal static class TpaFormula
{
    /// <summary>y [batch, tokens, d_model] for x [batch, tokens, d_model] and the parameters <paramref name="w"/>.</summary>
    public static double[] Forward(TpaConfig c, IReadOnlyDictionary<string, double[]> w, double[] x, int batch, int tokens)
    {
        int n = batch * tokens, h = c.Heads, d = c.HeadDim;
        // A_s = x w_a_sᵀ → [B,T,H,R_s] (head-major);  B_s = x w_b_sᵀ → [B,T,R_s,d];  B_q, B_k = RoPE(B_q), RoPE(B_k)
        // s[b,t,h,:] = (1/R_s) Σ_r A_s[b,t,h,r] · B_s[b,t,r,:]
        double[] Contract(string s, int rank, bool rotate)
        {
            var a = FormulaKit.Dense(x, n, c.DModel, w[$"w_a_{s}"], null, h * rank);
            var f = FormulaKit.Dense(x, n, c.DModel, w[$"w_b_{s}"], null, rank * d);
            if (rotate)
            {
                FormulaKit.Rope(f, batch, tokens, rank, d, 0, d, c.RopeBase, c.RopeStyle, c.RopeScaling);
            }
            var y = new double[n * h * d];
            for (int r = 0; r < n; r++)
            {
                for (int head = 0; head < h; head++)
                {
                    for (int col = 0; col < d; col++)
                    {
                        double sum = 0;
                        for (int u = 0; u < rank; u++)
                        {
                            sum += a[(((r * h) + head) * rank) + u] * f[(((r * rank) + u) * d) + col];
                        }
                        y[(((r * h) + head) * d) + col] = sum / rank;
                    }
                }
            }
            return y;
        }
        var q = Contract("q", c.QRank, c.Rope);
        var k = Contract("k", c.KRank, c.Rope);
        var v = Contract("v", c.VRank, false);
        // o_h = softmax(q_h k_hᵀ / sqrt(d) + mask) v_h;   y = concat_h(o_h) w_oᵀ
        var o = FormulaKit.SoftmaxAttention(q, k, v, batch, tokens, h, h, d, d, i => i, 1 / Math.Sqrt(d) * FormulaKit.SoftmaxScaleFactor(c.RopeScaling), c.Causal);
        return FormulaKit.Dense(o, n, h * d, w["w_o"], null, c.DModel);
    }
}

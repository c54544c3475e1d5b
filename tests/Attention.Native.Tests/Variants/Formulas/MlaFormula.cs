using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary><c>mla</c> (variants.md §2), multi-head latent attention, written out in F64 in its plain (non-absorbed) form.</summary>
internal static class MlaFormula
{
    /// <summary>y [batch, tokens, d_model] for x [batch, tokens, d_model] and the parameters <paramref name="w"/>.</summary>
    public static double[] Forward(MlaConfig c, IReadOnlyDictionary<string, double[]> w, double[] x, int batch, int tokens)
    {
        int n = batch * tokens, h = c.Heads, dn = c.QkNopeHeadDim, dr = c.QkRopeHeadDim, dv = c.VHeadDim, dc = c.KvLoraRank, qk = dn + dr;
        // q = RMSNorm(x w_q_aᵀ; q_norm) w_q_bᵀ   (or x w_qᵀ)  → [B,T,H,d_n+d_r]; per head [q_nope | q_pe]
        var q = c.QLoraRank > 0
            ? FormulaKit.Dense(FormulaKit.RmsNorm(FormulaKit.Dense(x, n, c.DModel, w["w_q_a"], null, c.QLoraRank), n, c.QLoraRank, w["q_norm"]),
                n, c.QLoraRank, w["w_q_b"], null, h * qk)
            : FormulaKit.Dense(x, n, c.DModel, w["w_q"], null, h * qk);
        // [c | k_pe] = x w_kv_aᵀ;  c = RMSNorm(c; kv_norm)
        var kva = FormulaKit.Dense(x, n, c.DModel, w["w_kv_a"], null, dc + dr);
        var latent = new double[n * dc];
        var kpe = new double[n * dr];
        for (int r = 0; r < n; r++)
        {
            Array.Copy(kva, r * (dc + dr), latent, r * dc, dc);
            Array.Copy(kva, (r * (dc + dr)) + dc, kpe, r * dr, dr);
        }
        latent = FormulaKit.RmsNorm(latent, n, dc, w["kv_norm"]);
        // q_pe = RoPE(q_pe);  k_pe = RoPE(k_pe)   (RoPE over the d_r columns only; rope_scaling on n = d_r)
        FormulaKit.Rope(q, batch, tokens, h, qk, dn, dr, c.RopeBase, c.RopeStyle, c.RopeScaling);
        FormulaKit.Rope(kpe, batch, tokens, 1, dr, 0, dr, c.RopeBase, c.RopeStyle, c.RopeScaling);
        // c w_kv_bᵀ → [B,T,H,d_n+d_v]; per head [k_nope | v];  k_i = [k_nope_i | k_pe]
        var kvb = FormulaKit.Dense(latent, n, dc, w["w_kv_b"], null, h * (dn + dv));
        var k = new double[n * h * qk];
        var v = new double[n * h * dv];
        for (int r = 0; r < n; r++)
        {
            for (int head = 0; head < h; head++)
            {
                int from = ((r * h) + head) * (dn + dv);
                Array.Copy(kvb, from, k, ((r * h) + head) * qk, dn);
                Array.Copy(kpe, r * dr, k, (((r * h) + head) * qk) + dn, dr);
                Array.Copy(kvb, from + dn, v, ((r * h) + head) * dv, dv);
            }
        }
        // o_i = softmax(q_i k_iᵀ / sqrt(d_n+d_r) · μ(s, m_a)² + mask) v_i;   y = concat_i(o_i) w_oᵀ
        var o = FormulaKit.SoftmaxAttention(q, k, v, batch, tokens, h, h, qk, dv, i => i, 1 / Math.Sqrt(qk) * FormulaKit.SoftmaxScaleFactor(c.RopeScaling), c.Causal);
        return FormulaKit.Dense(o, n, h * dv, w["w_o"], null, c.DModel);
    }
}

using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary><c>transnormer</c> (variants.md §7), gated linear attention with decay and optional LRPE, written out in F64.</summary>
internal static class TransNormerFormula
{
    /// <summary>
    /// λ_h = exp(−s_h), s_h = m_h · (1 − l/(L−1) + 1e-5) (factor 1 when L = 1), m_h the ALiBi slopes: 2^(−8(h+1)/H) for H a power
    /// of two; otherwise those of the largest power of two P ≤ H, then the even-indexed slopes of 2P, the first H − P of them.
    /// </summary>
    public static double[] Decay(TransNormerConfig c)
    {
        static double[] PowerOfTwo(int count)
        {
            var m = new double[count];
            for (int h = 0; h < count; h++)
            {
                m[h] = Math.Pow(2, -8.0 * (h + 1) / count);
            }
            return m;
        }
        int p = 1;
        while (p * 2 <= c.Heads)
        {
            p *= 2;
        }
        var slopes = new List<double>(PowerOfTwo(p));
        var doubled = PowerOfTwo(2 * p);
        for (int i = 0; slopes.Count < c.Heads; i += 2)
        {
            slopes.Add(doubled[i]);
        }
        double factor = c.NumLayers == 1 ? 1 : 1 - ((double)c.LayerIndex / (c.NumLayers - 1)) + 1e-5;
        return [.. slopes.Select(m => Math.Exp(-m * factor))];
    }

    /// <summary>y [batch, tokens, d_model] for x [batch, tokens, d_model] and the parameters <paramref name="w"/>.</summary>
    public static double[] Forward(TransNormerConfig c, IReadOnlyDictionary<string, double[]> w, double[] x, int batch, int tokens)
    {
        int n = batch * tokens, heads = c.Heads, d = c.HeadDim, hd = heads * d, dk = c.Lrpe ? 2 * d : d;
        static double Silu(double z) => z / (1 + Math.Exp(-z));
        // q = SiLU(x w_qᵀ), k = SiLU(x w_kᵀ), v = x w_vᵀ, u = x w_uᵀ → heads
        var q = FormulaKit.Dense(x, n, c.DModel, w["w_q"], null, hd).Select(Silu).ToArray();
        var k = FormulaKit.Dense(x, n, c.DModel, w["w_k"], null, hd).Select(Silu).ToArray();
        var v = FormulaKit.Dense(x, n, c.DModel, w["w_v"], null, hd);
        var u = FormulaKit.Dense(x, n, c.DModel, w["w_u"], null, hd);
        // if lrpe: q_t ← [q_t ⊙ cos(θ_h t) | q_t ⊙ sin(θ_h t)] (width 2d), likewise k;  θ_h = lrpe_theta[h]
        double[] Features(double[] a)
        {
            var y = new double[n * heads * dk];
            for (int row = 0; row < n; row++)
            {
                int t = row % tokens;
                for (int h = 0; h < heads; h++)
                {
                    for (int i = 0; i < d; i++)
                    {
                        double value = a[(row * hd) + (h * d) + i];
                        int at = ((row * heads) + h) * dk;
                        if (c.Lrpe)
                        {
                            double angle = w["lrpe_theta"][(h * d) + i] * t;
                            y[at + i] = value * Math.Cos(angle);
                            y[at + d + i] = value * Math.Sin(angle);
                        }
                        else
                        {
                            y[at + i] = value;
                        }
                    }
                }
            }
            return y;
        }
        var qf = Features(q);
        var kf = Features(k);
        // o_t = Σ_{s≤t} λ_h^(t−s) (q_t · k_s) v_s   (no scale, no normaliser)
        var lambda = Decay(c);
        var o = new double[n * hd];
        for (int b = 0; b < batch; b++)
        {
            for (int h = 0; h < heads; h++)
            {
                for (int t = 0; t < tokens; t++)
                {
                    for (int s = 0; s <= t; s++)
                    {
                        double dot = 0;
                        for (int i = 0; i < dk; i++)
                        {
                            dot += qf[(((((b * tokens) + t) * heads) + h) * dk) + i] * kf[(((((b * tokens) + s) * heads) + h) * dk) + i];
                        }
                        double weight = Math.Pow(lambda[h], t - s) * dot;
                        for (int j = 0; j < d; j++)
                        {
                            o[(((b * tokens) + t) * hd) + (h * d) + j] += weight * v[(((b * tokens) + s) * hd) + (h * d) + j];
                        }
                    }
                }
            }
        }
        // o = SRMSNorm(merge heads(o)) over all H·d;   y = (u ⊙ o) w_oᵀ
        var normed = FormulaKit.RmsNorm(o, n, hd, null);
        var gated = u.Zip(normed, (a, e) => a * e).ToArray();
        return FormulaKit.Dense(gated, n, hd, w["w_o"], null, c.DModel);
    }
}

using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary><c>flatten</c> (variants.md §6), focused linear attention in its 1-D form, written out in F64.</summary>
internal static class FlattenFormula
{
    /// <summary>y [batch, T, C] for x [batch, T, C] (T = seq_len) and the parameters <paramref name="w"/>.</summary>
    public static double[] Forward(FlattenConfig c, IReadOnlyDictionary<string, double[]> w, double[] x, int batch)
    {
        int t = c.SeqLen, dm = c.DModel, heads = c.Heads, d = c.HeadDim, n = batch * t;
        // q, k, v = x w_qᵀ+b_q, x w_kᵀ+b_k, x w_vᵀ+b_v;   k = k + pos_enc
        var q = FormulaKit.Dense(x, n, dm, w["w_q"], w["b_q"], dm);
        var k = FormulaKit.Dense(x, n, dm, w["w_k"], w["b_k"], dm);
        var v = FormulaKit.Dense(x, n, dm, w["w_v"], w["b_v"], dm);
        var posEnc = w["pos_enc"];
        for (int row = 0; row < n; row++)
        {
            for (int ch = 0; ch < dm; ch++)
            {
                k[(row * dm) + ch] += posEnc[((row % t) * dm) + ch];
            }
        }
        var sc = w["scale"].Select(s => Math.Log(1 + Math.Exp(s))).ToArray();
        // q = ReLU(q) + 1e-6;  q = q/sc;  per token over all C channels: qn = ‖q‖₂;  q = q^p;  q = q / ‖q‖₂ · qn   (likewise k)
        void Focus(double[] a)
        {
            for (int row = 0; row < n; row++)
            {
                var r = new double[dm];
                for (int ch = 0; ch < dm; ch++)
                {
                    r[ch] = (Math.Max(a[(row * dm) + ch], 0) + 1e-6) / sc[ch];
                }
                double norm = Math.Sqrt(r.Sum(e => e * e));
                var powered = r.Select(e => Math.Pow(e, c.FocusingFactor)).ToArray();
                double poweredNorm = Math.Sqrt(powered.Sum(e => e * e));
                for (int ch = 0; ch < dm; ch++)
                {
                    a[(row * dm) + ch] = powered[ch] / poweredNorm * norm;
                }
            }
        }
        Focus(q);
        Focus(k);
        // split heads;  z_t = 1 / (q_t · mean_T(k) + 1e-6);  kv = kᵀ v / T;  O_t = (q_t kv) · z_t
        var o = new double[n * dm];
        for (int b = 0; b < batch; b++)
        {
            for (int h = 0; h < heads; h++)
            {
                int Col(int p, int i) => (((b * t) + p) * dm) + (h * d) + i;
                var meanK = new double[d];
                var kv = new double[d * d];
                for (int p = 0; p < t; p++)
                {
                    for (int i = 0; i < d; i++)
                    {
                        meanK[i] += k[Col(p, i)] / t;
                        for (int j = 0; j < d; j++)
                        {
                            kv[(i * d) + j] += k[Col(p, i)] * v[Col(p, j)] / t;
                        }
                    }
                }
                for (int p = 0; p < t; p++)
                {
                    double denominator = 1e-6;
                    for (int i = 0; i < d; i++)
                    {
                        denominator += q[Col(p, i)] * meanK[i];
                    }
                    for (int j = 0; j < d; j++)
                    {
                        double sum = 0;
                        for (int i = 0; i < d; i++)
                        {
                            sum += q[Col(p, i)] * kv[(i * d) + j];
                        }
                        o[Col(p, j)] = sum / denominator;
                    }
                }
            }
        }
        // O = merge heads + DWC(v): a depthwise Conv1d over T on each head's d channels, its d filters shared across heads
        FormulaKit.AddDepthwiseConv(o, v, batch, t, dm, w["dwc_w"], w["dwc_b"], c.DwcKernel, ch => ch % d);
        // y = O w_oᵀ + b_o
        return FormulaKit.Dense(o, n, dm, w["w_o"], w["b_o"], dm);
    }
}

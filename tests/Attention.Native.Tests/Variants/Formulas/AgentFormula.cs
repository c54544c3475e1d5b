using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary><c>agent</c> (variants.md §5), agent attention in its 1-D form, written out in F64.</summary>
internal static class AgentFormula
{
    /// <summary>y [batch, T, C] for x [batch, T, C] (T = seq_len) and the parameters <paramref name="w"/>.</summary>
    public static double[] Forward(AgentConfig c, IReadOnlyDictionary<string, double[]> w, double[] x, int batch)
    {
        int t = c.SeqLen, dm = c.DModel, heads = c.Heads, d = c.HeadDim, agents = c.Agents, n = batch * t;
        double s = 1 / Math.Sqrt(d);
        // q, k, v = x w_qᵀ+b_q, x w_kᵀ+b_k, x w_vᵀ+b_v → [B,T,C]
        var q = FormulaKit.Dense(x, n, dm, w["w_q"], w["b_q"], dm);
        var k = FormulaKit.Dense(x, n, dm, w["w_k"], w["b_k"], dm);
        var v = FormulaKit.Dense(x, n, dm, w["w_v"], w["b_v"], dm);
        // A = AdaptiveAvgPool1d_n(q over T): agent i averages positions floor(iT/n) … ceil((i+1)T/n)-1 → [B,n,C]
        var a = new double[batch * agents * dm];
        for (int b = 0; b < batch; b++)
        {
            for (int i = 0; i < agents; i++)
            {
                int first = i * t / agents, last = (((i + 1) * t) + agents - 1) / agents;
                for (int ch = 0; ch < dm; ch++)
                {
                    double sum = 0;
                    for (int p = first; p < last; p++)
                    {
                        sum += q[(((b * t) + p) * dm) + ch];
                    }
                    a[(((b * agents) + i) * dm) + ch] = sum / (last - first);
                }
            }
        }
        var biasAk = w["bias_ak"];
        var biasQa = w["bias_qa"];
        var o = new double[n * dm];
        for (int b = 0; b < batch; b++)
        {
            for (int h = 0; h < heads; h++)
            {
                // Head h of a token row is its channels h·d … h·d+d-1.
                double Dot(double[] left, int leftRow, double[] right, int rightRow)
                {
                    double sum = 0;
                    for (int col = 0; col < d; col++)
                    {
                        sum += left[(leftRow * dm) + (h * d) + col] * right[(rightRow * dm) + (h * d) + col];
                    }
                    return sum;
                }
                // P1 = softmax_over_T((A·s) kᵀ + bias_ak);  V_A = P1 v → [n, d]
                var agentValues = new double[agents * d];
                for (int i = 0; i < agents; i++)
                {
                    var p1 = Softmax(Enumerable.Range(0, t).Select(p => (s * Dot(a, (b * agents) + i, k, (b * t) + p)) + biasAk[(((h * agents) + i) * t) + p]).ToArray());
                    for (int p = 0; p < t; p++)
                    {
                        for (int col = 0; col < d; col++)
                        {
                            agentValues[(i * d) + col] += p1[p] * v[(((b * t) + p) * dm) + (h * d) + col];
                        }
                    }
                }
                // P2 = softmax_over_n((q·s) Aᵀ + bias_qa);  O = P2 V_A → [T, d]
                for (int p = 0; p < t; p++)
                {
                    var p2 = Softmax(Enumerable.Range(0, agents).Select(i => (s * Dot(q, (b * t) + p, a, (b * agents) + i)) + biasQa[(((h * t) + p) * agents) + i]).ToArray());
                    for (int i = 0; i < agents; i++)
                    {
                        for (int col = 0; col < d; col++)
                        {
                            o[(((b * t) + p) * dm) + (h * d) + col] += p2[i] * agentValues[(i * d) + col];
                        }
                    }
                }
            }
        }
        // O = merge heads + DWC(v): a depthwise Conv1d over T per channel of C, zero padding (k-1)/2, with dwc_b
        FormulaKit.AddDepthwiseConv(o, v, batch, t, dm, w["dwc_w"], w["dwc_b"], c.DwcKernel, ch => ch);
        // y = O w_oᵀ + b_o
        return FormulaKit.Dense(o, n, dm, w["w_o"], w["b_o"], dm);
    }

    private static double[] Softmax(double[] scores)
    {
        double max = scores.Max();
        var e = scores.Select(v => Math.Exp(v - max)).ToArray();
        double total = e.Sum();
        return [.. e.Select(v => v / total)];
    }
}

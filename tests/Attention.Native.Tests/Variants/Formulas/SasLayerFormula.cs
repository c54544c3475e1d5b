using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>
/// <c>sas</c> (variants.md §4), the whole layer written out in F64: the per-token head simulation of <see cref="SasFormula"/>
/// (plain loops too), then RoPE on the expanded q̃, k̃, softmax attention over the H' simulated heads, PEAA and w_o, b_o.
/// </summary>
internal static class SasLayerFormula
{
    /// <summary>y [batch, tokens, d_model] for x [batch, tokens, d_model] and the parameters <paramref name="w"/>.</summary>
    public static double[] Forward(SasConfig c, IReadOnlyDictionary<string, double[]> w, double[] x, int batch, int tokens)
    {
        int n = batch * tokens, h = c.Heads, d = c.HeadDim, hs = c.SimHeads, ds = c.SimHeadDim, r = hs / h;
        // q̃, k̃ [B·T, H', D'] and ṽ [B·T, H', D]
        double[] Stream(string s) => SasFormula.Stream(c, name => w[name], x, n, s).Simulated;
        var q = Stream("q");
        var k = Stream("k");
        var v = Stream("v");
        if (c.Rope)
        {
            // q̃, k̃ = RoPE(q̃), RoPE(k̃) on the expanded D'-vectors
            FormulaKit.Rope(q, batch, tokens, hs, ds, 0, ds, c.RopeBase, c.RopeStyle, c.RopeScaling);
            FormulaKit.Rope(k, batch, tokens, hs, ds, 0, ds, c.RopeBase, c.RopeStyle, c.RopeScaling);
        }
        // o_h = softmax(q̃_h k̃_hᵀ / sqrt(D') + mask) ṽ_h for h = 0 … H'-1  → [B,T,H',D]
        var o = FormulaKit.SoftmaxAttention(q, k, v, batch, tokens, hs, hs, ds, d, i => i, 1 / Math.Sqrt(ds) * FormulaKit.SoftmaxScaleFactor(c.RopeScaling), c.Causal);
        // PEAA: group g = heads g·H … g·H+H-1, O_g = concat(o_gH … o_gH+H-1);  y = ((1/r) Σ_g O_g) w_oᵀ + b_o
        var aggregated = new double[n * h * d];
        for (int row = 0; row < n; row++)
        {
            for (int g = 0; g < r; g++)
            {
                for (int col = 0; col < h * d; col++)
                {
                    aggregated[(row * h * d) + col] += o[(row * hs * d) + (g * h * d) + col] / r;
                }
            }
        }
        return FormulaKit.Dense(aggregated, n, h * d, w["w_o"], w["b_o"], c.DModel);
    }
}

using Attention.Native.Variants;

namespace Attention.Native.Tests.TorchReference;

using TorchSharp;
using F = TorchSharp.torch.nn.functional;

/// <summary>
/// transnormer (variants.md §7) against torch: the decayed linear attention written as its full causal sum
/// o_t = Σ_{s≤t} λ_h^(t−s) (q_t · k_s) v_s (a [T, T] decay matrix per head), not as the chunked recurrence the layer runs.
/// </summary>
public class TransNormerTorchTests : TorchReferenceFixture
{
    private const int Batch = 2;

    /// <summary>ALiBi slopes m_h: 2^(−8(h+1)/H) for H a power of two; else those of P ≤ H and the even-indexed ones of 2P.</summary>
    private static double[] Slopes(int heads)
    {
        static double[] PowerOfTwo(int n) => [.. Enumerable.Range(0, n).Select(h => Math.Pow(2, -8.0 * (h + 1) / n))];
        int p = 1;
        while (p * 2 <= heads)
        {
            p *= 2;
        }
        var slopes = PowerOfTwo(p).ToList();
        var doubled = PowerOfTwo(2 * p);
        for (int i = 0; slopes.Count < heads; i += 2)
        {
            slopes.Add(doubled[i]);
        }
        return [.. slopes];
    }

    private static TorchKit.Composition Composition(TransNormerConfig c) => (x, w) =>
    {
        long h = c.Heads, d = c.HeadDim, tokens = x.shape[1];
        // q = SiLU(x w_qᵀ), k = SiLU(x w_kᵀ), v = x w_vᵀ, u = x w_uᵀ → heads [B,H,T,d]
        var q = TorchKit.Heads(F.silu(F.linear(x, w["w_q"])), h).transpose(1, 2);
        var k = TorchKit.Heads(F.silu(F.linear(x, w["w_k"])), h).transpose(1, 2);
        var v = TorchKit.Heads(F.linear(x, w["w_v"]), h).transpose(1, 2);
        var u = F.linear(x, w["w_u"]);
        if (c.Lrpe)
        {
            // q_t ← [q_t ⊙ cos(θ_h t) | q_t ⊙ sin(θ_h t)], likewise k: angles [H, T, d]
            var positions = torch.arange(tokens, x.dtype).reshape(1, tokens, 1);
            var angle = w["lrpe_theta"].unsqueeze(1) * positions;
            q = TorchKit.Cat(q * angle.cos(), q * angle.sin());
            k = TorchKit.Cat(k * angle.cos(), k * angle.sin());
        }
        // λ_h = exp(−s_h), s_h = m_h (1 − l/(L−1) + 1e-5) (factor 1 when L = 1); decay[h,t,s] = λ_h^(t−s) for s ≤ t, else 0.
        var slopes = Slopes(c.Heads);
        double factor = c.NumLayers == 1 ? 1 : 1 - ((double)c.LayerIndex / (c.NumLayers - 1)) + 1e-5;
        var decay = new double[h * tokens * tokens];
        for (int head = 0; head < h; head++)
        {
            double lambda = Math.Exp(-slopes[head] * factor);
            for (int t = 0; t < tokens; t++)
            {
                for (int s = 0; s <= t; s++)
                {
                    decay[(((head * tokens) + t) * tokens) + s] = Math.Pow(lambda, t - s);
                }
            }
        }
        var o = (q.matmul(k.transpose(-2, -1)) * TorchKit.Constant(decay, [h, tokens, tokens], x)).matmul(v);
        // o = SRMSNorm(merge heads(o)) over all H·d;  y = (u ⊙ o) w_oᵀ
        var merged = TorchKit.RmsNorm(TorchKit.MergeHeads(o.transpose(1, 2)), null);
        return F.linear(u * merged, w["w_o"]);
    };

    [TestCase(4, 0, 2, false, 9, DType.F64)]
    [TestCase(3, 1, 3, true, 9, DType.F64)]
    [TestCase(6, 2, 4, true, 70, DType.F64)]
    [TestCase(2, 0, 1, false, 5, DType.F64)]
    [TestCase(4, 0, 2, false, 9, DType.F32)]
    [TestCase(3, 1, 3, true, 9, DType.F32)]
    [TestCase(6, 2, 4, true, 70, DType.F32)]
    [TestCase(2, 0, 1, false, 5, DType.F32)]
    public void Layer_equals_the_torch_composition(int heads, int layerIndex, int numLayers, bool lrpe, int tokens, DType dtype)
    {
        // 70 tokens: more than one of the layer's 64-token blocks, so its inter-block state is compared too.
        var config = new TransNormerConfig { DModel = 16, Heads = heads, HeadDim = 6, LayerIndex = layerIndex, NumLayers = numLayers, Lrpe = lrpe };
        TorchKit.AssertMatches(config, dtype, Batch, tokens, Composition(config));
    }
}

using Attention.Native.Ops;
using Attention.Native.Variants;

namespace Attention.Native.Tests.TorchReference;

using F = TorchSharp.torch.nn.functional;

/// <summary>mfa (variants.md §8) against torch: a low-rank normalised query, many heads over one shared key/value head.</summary>
public class MfaTorchTests : TorchReferenceFixture
{
    private const int Batch = 2, Tokens = 6;

    private static TorchKit.Composition Composition(MfaConfig c) => (x, w) =>
    {
        // q = RMSNorm_eps(x w_q_aᵀ; q_norm) w_q_bᵀ → [B,T,H,d];  k = x w_kᵀ, v = x w_vᵀ → [B,T,1,d]
        var q = TorchKit.Heads(F.linear(TorchKit.RmsNorm(F.linear(x, w["w_q_a"]), w["q_norm"], c.NormEpsilon), w["w_q_b"]), c.Heads);
        var k = F.linear(x, w["w_k"]).unsqueeze(2);
        var v = F.linear(x, w["w_v"]).unsqueeze(2);
        if (c.Rope)
        {
            q = TorchKit.Rope(q, c.RopeBase, c.RopeStyle, c.RopeScaling);
            k = TorchKit.Rope(k, c.RopeBase, c.RopeStyle, c.RopeScaling);
        }
        // o_i = softmax(q_i kᵀ / sqrt(d) + mask) v: the one key/value head broadcast over the query heads.
        double scale = TorchKit.SoftmaxScaleFactor(c.RopeScaling) / Math.Sqrt(c.HeadDim);
        var o = TorchKit.Attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale, c.Causal);
        return F.linear(TorchKit.MergeHeads(o.transpose(1, 2)), w["w_o"]);
    };

    [TestCase(RopeStyle.Half, true, true, false, 1e-5, DType.F64)]
    [TestCase(RopeStyle.Interleaved, true, true, true, 0.25, DType.F64)]
    [TestCase(RopeStyle.Half, false, false, false, 1e-5, DType.F64)]
    [TestCase(RopeStyle.Half, true, true, false, 1e-5, DType.F32)]
    [TestCase(RopeStyle.Interleaved, true, true, true, 0.25, DType.F32)]
    [TestCase(RopeStyle.Half, false, false, false, 1e-5, DType.F32)]
    public void Layer_equals_the_torch_composition(RopeStyle style, bool causal, bool rope, bool yarn, double normEps, DType dtype)
    {
        // A large norm_eps (0.25) moves the output well beyond the tolerance, so the epsilon itself is checked. It is exact in
        // float: the layer's RMSNorm takes its epsilon in single precision (MfaConfig), so in F64 an epsilon such as 0.3 differs
        // from the spec's by its float rounding (1.2e-8, 2e-9 relative in y here).
        var config = new MfaConfig
        {
            DModel = 16, Heads = 5, HeadDim = 8, QLoraDim = 6, Causal = causal, Rope = rope, RopeBase = 900, RopeStyle = style, NormEpsilon = normEps,
            RopeScaling = yarn ? new RopeScaling(Factor: 5, OriginalMaxPositions: 40, BetaFast: 10, BetaSlow: 1, MScale: 1, MScaleAllDim: 0.4) : null,
        };
        TorchKit.AssertMatches(config, dtype, Batch, Tokens, Composition(config));
    }
}

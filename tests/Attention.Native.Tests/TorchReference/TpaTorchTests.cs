using Attention.Native.Ops;
using Attention.Native.Variants;

namespace Attention.Native.Tests.TorchReference;

using F = TorchSharp.torch.nn.functional;
using Tensor = TorchSharp.torch.Tensor;

/// <summary>tpa (variants.md §3) against torch: the factors contracted into q, k, v, then softmax attention; with T6's subln.</summary>
public class TpaTorchTests : TorchReferenceFixture
{
    private const int Batch = 2, Tokens = 6;

    private static TorchKit.Composition Composition(TpaConfig c) => (x, w) =>
    {
        long h = c.Heads, d = c.HeadDim;
        // A = x w_aᵀ → [B,T,H,R] (head-major);  B = x w_bᵀ → [B,T,R,d];  RoPE on each rank row of B_q, B_k;
        // q[b,t,h,:] = (1/R) Σ_r A[b,t,h,r] · B[b,t,r,:]
        Tensor Factor(string s, int rank, bool rope)
        {
            var a = TorchKit.Heads(F.linear(x, w[$"w_a_{s}"]), h);
            var b = TorchKit.Heads(F.linear(x, w[$"w_b_{s}"]), rank);
            if (rope)
            {
                b = TorchKit.Rope(b, c.RopeBase, c.RopeStyle, c.RopeScaling);
            }
            return a.matmul(b) / rank;
        }
        var q = Factor("q", c.QRank, c.Rope);
        var k = Factor("k", c.KRank, c.Rope);
        var v = Factor("v", c.VRank, rope: false);
        double scale = TorchKit.SoftmaxScaleFactor(c.RopeScaling) / Math.Sqrt(d);
        var o = TorchKit.Attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale, c.Causal).transpose(1, 2);
        if (c.Subln)
        {
            // T6's subln: each head's output normalised over head_dim (eps 1e-5), one gain for all heads.
            o = TorchKit.RmsNorm(o, w["subln"], 1e-5);
        }
        return F.linear(TorchKit.MergeHeads(o), w["w_o"]);
    };

    [TestCase(RopeStyle.Half, true, false, false, DType.F64)]
    [TestCase(RopeStyle.Interleaved, true, true, true, DType.F64)]
    [TestCase(RopeStyle.Half, false, false, true, DType.F64)]
    [TestCase(RopeStyle.Half, true, false, false, DType.F32)]
    [TestCase(RopeStyle.Interleaved, true, true, true, DType.F32)]
    [TestCase(RopeStyle.Half, false, false, true, DType.F32)]
    public void Layer_equals_the_torch_composition(RopeStyle style, bool causal, bool yarn, bool subln, DType dtype)
    {
        var config = new TpaConfig
        {
            DModel = 16, Heads = 3, HeadDim = 8, QRank = 4, KRank = 2, VRank = 3, Causal = causal, RopeBase = 700, RopeStyle = style, Subln = subln,
            RopeScaling = yarn ? new RopeScaling(Factor: 3, OriginalMaxPositions: 48, BetaFast: 6, BetaSlow: 1.5, MScale: 1.1, MScaleAllDim: 0.5) : null,
        };
        TorchKit.AssertMatches(config, dtype, Batch, Tokens, Composition(config));
    }
}

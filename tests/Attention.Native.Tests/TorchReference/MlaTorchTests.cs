using Attention.Native.Ops;
using Attention.Native.Variants;

namespace Attention.Native.Tests.TorchReference;

using F = TorchSharp.torch.nn.functional;

/// <summary>mla (variants.md §2) against torch: with and without query compression, both RoPE styles, YaRN.</summary>
public class MlaTorchTests : TorchReferenceFixture
{
    private const int Batch = 2, Tokens = 6;

    private static TorchKit.Composition Composition(MlaConfig c) => (x, w) =>
    {
        long h = c.Heads, dn = c.QkNopeHeadDim, dr = c.QkRopeHeadDim, dc = c.KvLoraRank;
        // q = RMSNorm(x w_q_aᵀ; q_norm) w_q_bᵀ (or x w_qᵀ) → [B,T,H,d_n+d_r]; per head [q_nope | q_pe]
        var q = c.QLoraRank > 0
            ? F.linear(TorchKit.RmsNorm(F.linear(x, w["w_q_a"]), w["q_norm"]), w["w_q_b"])
            : F.linear(x, w["w_q"]);
        q = TorchKit.Heads(q, h);
        var qNope = q[.., .., .., ..(int)dn];
        var qPe = q[.., .., .., (int)dn..];
        // [c | k_pe] = x w_kv_aᵀ;  c = RMSNorm(c; kv_norm); k_pe one [B,T,1,d_r] for all heads
        var kvA = F.linear(x, w["w_kv_a"]);
        var latent = TorchKit.RmsNorm(kvA[.., .., ..(int)dc], w["kv_norm"]);
        var kPe = kvA[.., .., (int)dc..].unsqueeze(2);
        qPe = TorchKit.Rope(qPe, c.RopeBase, c.RopeStyle, c.RopeScaling);
        kPe = TorchKit.Rope(kPe, c.RopeBase, c.RopeStyle, c.RopeScaling);
        // c w_kv_bᵀ → [B,T,H,d_n+d_v]; per head [k_nope | v]
        var kvB = TorchKit.Heads(F.linear(latent, w["w_kv_b"]), h);
        var kNope = kvB[.., .., .., ..(int)dn];
        var v = kvB[.., .., .., (int)dn..];
        // k_i = [k_nope_i | k_pe];  q_i = [q_nope_i | q_pe_i]
        var k = TorchKit.Cat(kNope, kPe.expand(kNope.shape[0], kNope.shape[1], h, dr));
        var qFull = TorchKit.Cat(qNope, qPe);
        double scale = TorchKit.SoftmaxScaleFactor(c.RopeScaling) / Math.Sqrt(dn + dr);
        var o = TorchKit.Attention(qFull.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale, c.Causal);
        return F.linear(TorchKit.MergeHeads(o.transpose(1, 2)), w["w_o"]);
    };

    [TestCase(12, RopeStyle.Half, false, true, DType.F64)]
    [TestCase(0, RopeStyle.Interleaved, true, true, DType.F64)]
    [TestCase(12, RopeStyle.Interleaved, true, false, DType.F64)]
    [TestCase(0, RopeStyle.Half, false, false, DType.F64)]
    [TestCase(12, RopeStyle.Half, false, true, DType.F32)]
    [TestCase(0, RopeStyle.Interleaved, true, true, DType.F32)]
    [TestCase(12, RopeStyle.Interleaved, true, false, DType.F32)]
    [TestCase(0, RopeStyle.Half, false, false, DType.F32)]
    public void Layer_equals_the_torch_composition(int qLoraRank, RopeStyle style, bool yarn, bool causal, DType dtype)
    {
        var config = new MlaConfig
        {
            DModel = 16, Heads = 3, QLoraRank = qLoraRank, KvLoraRank = 10, QkNopeHeadDim = 6, QkRopeHeadDim = 4, VHeadDim = 5,
            Causal = causal, RopeBase = 300, RopeStyle = style,
            RopeScaling = yarn ? new RopeScaling(Factor: 4, OriginalMaxPositions: 32, BetaFast: 8, BetaSlow: 1, MScale: 0.8, MScaleAllDim: 0.7) : null,
        };
        TorchKit.AssertMatches(config, dtype, Batch, Tokens, Composition(config));
    }
}

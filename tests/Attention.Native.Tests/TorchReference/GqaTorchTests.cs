using Attention.Native.Ops;
using Attention.Native.Variants;
using TorchSharp;

namespace Attention.Native.Tests.TorchReference;

using static TorchSharp.torch;
using Tensor = TorchSharp.torch.Tensor;
using F = TorchSharp.torch.nn.functional;

/// <summary>
/// mha, gqa, mqa (variants.md §1) against torch: the attention core written out, and again as torch's own
/// scaled_dot_product_attention (KV heads repeated to H, contiguous groups: TorchSharp's binding has no enable_gqa).
/// </summary>
public class GqaTorchTests : TorchReferenceFixture
{
    private const int Batch = 2, Tokens = 6;

    private static GqaConfig Config(string kind, int heads, int kvHeads, bool causal, bool rope, RopeStyle style, bool yarn) => new()
    {
        Kind = kind, DModel = 16, Heads = heads, KvHeads = kvHeads, HeadDim = 8, Causal = causal, Rope = rope, RopeStyle = style, RopeBase = 500,
        // Small positions: a short original context and a factor that leaves part of the ramp in between.
        RopeScaling = yarn ? new RopeScaling(Factor: 4, OriginalMaxPositions: 64, BetaFast: 8, BetaSlow: 1, MScale: 0.9, MScaleAllDim: 0.6) : null,
    };

    /// <summary>
    /// The layer as variants.md writes it; <paramref name="sdpa"/>: the core is torch's scaled_dot_product_attention (its scale
    /// 1/sqrt(d); YaRN's extra factor μ(s, m_a)² goes into q).
    /// </summary>
    internal static TorchKit.Composition Composition(GqaConfig c, bool sdpa) => (x, w) =>
    {
        long h = c.Heads, g = c.KvHeads, d = c.HeadDim;
        // q = x w_qᵀ → [B,T,H,d];  k = x w_kᵀ, v = x w_vᵀ → [B,T,G,d]
        var q = TorchKit.Heads(F.linear(x, w["w_q"]), h);
        var k = TorchKit.Heads(F.linear(x, w["w_k"]), g);
        var v = TorchKit.Heads(F.linear(x, w["w_v"]), g);
        if (c.Rope)
        {
            q = TorchKit.Rope(q, c.RopeBase, c.RopeStyle, c.RopeScaling);
            k = TorchKit.Rope(k, c.RopeBase, c.RopeStyle, c.RopeScaling);
        }
        // [B,H,T,d]; head i uses kv head floor(i / (H/G)): each kv head repeated H/G times in place.
        q = q.transpose(1, 2);
        k = k.transpose(1, 2).repeat_interleave(h / g, 1);
        v = v.transpose(1, 2).repeat_interleave(h / g, 1);
        double factor = TorchKit.SoftmaxScaleFactor(c.RopeScaling);
        var o = sdpa
            ? F.scaled_dot_product_attention(q * factor, k, v, is_casual: c.Causal)
            : TorchKit.Attention(q, k, v, factor / Math.Sqrt(d), c.Causal);
        // y = concat_i(o_i) w_oᵀ
        return F.linear(TorchKit.MergeHeads(o.transpose(1, 2)), w["w_o"]);
    };

    private static readonly object[] Cases =
    [
        new object[] { "mha", 4, 4, true, true, RopeStyle.Half, false },
        new object[] { "mha", 4, 4, false, false, RopeStyle.Half, false },
        new object[] { "gqa", 4, 2, true, true, RopeStyle.Interleaved, false },
        new object[] { "gqa", 4, 2, false, true, RopeStyle.Half, false },
        new object[] { "gqa", 4, 2, true, true, RopeStyle.Half, true },
        new object[] { "mqa", 4, 1, true, true, RopeStyle.Half, false },
        new object[] { "mqa", 4, 1, true, true, RopeStyle.Interleaved, true },
    ];

    private static IEnumerable<TestCaseData> WithDtypes() =>
        from DType dtype in new[] { DType.F64, DType.F32 }
        from object[] c in Cases
        select new TestCaseData([.. c, dtype]);

    [TestCaseSource(nameof(WithDtypes))]
    public void Layer_equals_the_torch_composition(string kind, int heads, int kvHeads, bool causal, bool rope, RopeStyle style, bool yarn, DType dtype)
    {
        var config = Config(kind, heads, kvHeads, causal, rope, style, yarn);
        TorchKit.AssertMatches(config, dtype, Batch, Tokens, Composition(config, sdpa: false));
    }

    [TestCaseSource(nameof(WithDtypes))]
    public void Layer_equals_torch_scaled_dot_product_attention(string kind, int heads, int kvHeads, bool causal, bool rope, RopeStyle style, bool yarn, DType dtype)
    {
        var config = Config(kind, heads, kvHeads, causal, rope, style, yarn);
        TorchKit.AssertMatches(config, dtype, Batch, Tokens, Composition(config, sdpa: true), $"{kind} {dtype} (sdpa)");
    }
}

using Attention.Native.Ops;
using Attention.Native.Variants;

namespace Attention.Native.Tests.TorchReference;

using F = TorchSharp.torch.nn.functional;
using Tensor = TorchSharp.torch.Tensor;

/// <summary>sas (variants.md §4) against torch: head expansion by two Conv1d over heads, feature expansion by two Linear, PEAA.</summary>
public class SasTorchTests : TorchReferenceFixture
{
    private const int Batch = 2, Tokens = 5;

    private static TorchKit.Composition Composition(SasConfig c) => (x, w) =>
    {
        long n = x.shape[0] * x.shape[1], h = c.Heads, simHeads = c.SimHeads;
        // Conv(X; w, b) on X [N, C_in = heads, L = features], zero padding (k−1)/2.
        Tensor Expand(string s, bool features)
        {
            var t = F.linear(x, w[$"w_{s}"]).reshape(n, h, c.HeadDim);
            var x1 = TorchKit.Conv1d(t, w[$"sas_{s}_conv1_w"], w[$"sas_{s}_conv1_b"]);
            t = x1 + TorchKit.Conv1d(F.relu(x1), w[$"sas_{s}_conv2_w"], w[$"sas_{s}_conv2_b"]);
            if (features)
            {
                var y1 = F.linear(t, w[$"sas_{s}_fc1_w"], w[$"sas_{s}_fc1_b"]);
                t = y1 + F.linear(F.relu(y1), w[$"sas_{s}_fc2_w"], w[$"sas_{s}_fc2_b"]);
            }
            // [B·T, H', width] → [B, T, H', width]
            return t.reshape(x.shape[0], x.shape[1], simHeads, t.shape[^1]);
        }
        var q = Expand("q", features: true);
        var k = Expand("k", features: true);
        var v = Expand("v", features: false);
        if (c.Rope)
        {
            q = TorchKit.Rope(q, c.RopeBase, c.RopeStyle, c.RopeScaling);
            k = TorchKit.Rope(k, c.RopeBase, c.RopeStyle, c.RopeScaling);
        }
        double scale = TorchKit.SoftmaxScaleFactor(c.RopeScaling) / Math.Sqrt(c.SimHeadDim);
        var o = TorchKit.Attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale, c.Causal).transpose(1, 2);
        // PEAA: group g = heads g·H … g·H+H−1 concatenated → [B,T,H·D]; y = ((1/r) Σ_g O_g) w_oᵀ + b_o
        long r = simHeads / h;
        var groups = o.reshape(x.shape[0], x.shape[1], r, h * c.HeadDim);
        return F.linear(groups.sum([2L]) / r, w["w_o"], w["b_o"]);
    };

    [TestCase(3, RopeStyle.Half, true, true, false, DType.F64)]
    [TestCase(1, RopeStyle.Interleaved, true, true, true, DType.F64)]
    [TestCase(5, RopeStyle.Half, false, false, false, DType.F64)]
    [TestCase(3, RopeStyle.Half, true, true, false, DType.F32)]
    [TestCase(1, RopeStyle.Interleaved, true, true, true, DType.F32)]
    [TestCase(5, RopeStyle.Half, false, false, false, DType.F32)]
    public void Layer_equals_the_torch_composition(int kernel, RopeStyle style, bool causal, bool rope, bool yarn, DType dtype)
    {
        var config = new SasConfig
        {
            DModel = 16, Heads = 2, HeadDim = 6, SimHeads = 6, SimHeadDim = 8, KernelSize = kernel, Causal = causal, Rope = rope, RopeBase = 400, RopeStyle = style,
            RopeScaling = yarn ? new RopeScaling(Factor: 4, OriginalMaxPositions: 40, BetaFast: 8, BetaSlow: 1, MScale: 1, MScaleAllDim: 0.8) : null,
        };
        // Without RoPE, fc2's bias of k̃ is the same vector in every key: the softmax over keys does not see q̃·b.
        TorchKit.AssertMatches(config, dtype, Batch, Tokens, Composition(config), zeroGradients: rope ? null : ["sas_k_fc2_b"]);
    }
}

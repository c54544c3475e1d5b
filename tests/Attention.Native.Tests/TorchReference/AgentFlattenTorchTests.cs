using Attention.Native.Variants;

namespace Attention.Native.Tests.TorchReference;

using TorchSharp;
using F = TorchSharp.torch.nn.functional;
using Tensor = TorchSharp.torch.Tensor;

/// <summary>The non-causal linear-cost variants against torch: agent (variants.md §5) and flatten (§6), their 1-D forms.</summary>
public class AgentFlattenTorchTests : TorchReferenceFixture
{
    private const int Batch = 2;

    /// <summary>Depthwise Conv1d over the tokens of v [N, T, channels]: one filter per channel, zero padding (k − 1)/2.</summary>
    private static Tensor DepthwiseOverTokens(Tensor v, Tensor weight, Tensor bias) =>
        TorchKit.Conv1d(v.transpose(1, 2), weight, bias, depthwise: true).transpose(1, 2);

    private static TorchKit.Composition Agent(AgentConfig c) => (x, w) =>
    {
        long heads = c.Heads, b = x.shape[0], t = x.shape[1];
        double s = 1 / Math.Sqrt(c.HeadDim);
        var q = F.linear(x, w["w_q"], w["b_q"]);
        var k = F.linear(x, w["w_k"], w["b_k"]);
        var v = F.linear(x, w["w_v"], w["b_v"]);
        // A = AdaptiveAvgPool1d_n(q over T) → [B,n,C]
        var agents = F.adaptive_avg_pool1d(q.transpose(1, 2), c.Agents).transpose(1, 2);
        Tensor Split(Tensor z) => TorchKit.Heads(z, heads).transpose(1, 2);
        var (qh, kh, vh, ah) = (Split(q), Split(k), Split(v), Split(agents));
        // P1 = softmax_over_T((A·s) kᵀ + bias_ak);  V_A = P1 v;  P2 = softmax_over_n((q·s) Aᵀ + bias_qa);  O = P2 V_A
        var agentValues = F.softmax((ah * s).matmul(kh.transpose(-2, -1)) + w["bias_ak"], -1).matmul(vh);
        var o = F.softmax((qh * s).matmul(ah.transpose(-2, -1)) + w["bias_qa"], -1).matmul(agentValues);
        // O = merge heads + DWC(v) (per channel of C);  y = O w_oᵀ + b_o
        var merged = TorchKit.MergeHeads(o.transpose(1, 2)) + DepthwiseOverTokens(v, w["dwc_w"], w["dwc_b"]);
        return F.linear(merged, w["w_o"], w["b_o"]);
    };

    private static TorchKit.Composition Flatten(FlattenConfig c) => (x, w) =>
    {
        long heads = c.Heads, d = c.HeadDim, b = x.shape[0], t = x.shape[1];
        var q = F.linear(x, w["w_q"], w["b_q"]);
        var k = F.linear(x, w["w_k"], w["b_k"]) + w["pos_enc"];
        var v = F.linear(x, w["w_v"], w["b_v"]);
        // q = ReLU(q) + 1e-6, k likewise; both divided by softplus(scale)
        var sc = F.softplus(w["scale"]);
        q = (F.relu(q) + 1e-6) / sc;
        k = (F.relu(k) + 1e-6) / sc;
        // per token, over all C channels: n = ‖z‖₂;  z = z^p;  z = z / ‖z‖₂ · n
        Tensor Focus(Tensor z)
        {
            var norm = z.norm(-1, true);
            var powered = z.pow(c.FocusingFactor);
            return powered / powered.norm(-1, true) * norm;
        }
        q = Focus(q);
        k = Focus(k);
        Tensor Split(Tensor z) => TorchKit.Heads(z, heads).transpose(1, 2);
        var (qh, kh, vh) = (Split(q), Split(k), Split(v));
        // z_t = 1 / (q_t · mean_T(k) + 1e-6);  kv = kᵀ v / T;  O_t = (q_t kv) · z_t
        var z = 1 / (qh.matmul(kh.mean([-2L], keepdim: true).transpose(-2, -1)) + 1e-6);
        var kv = kh.transpose(-2, -1).matmul(vh) / t;
        var o = qh.matmul(kv) * z;
        // DWC over the tokens of each head's d channels, one filter set shared by the heads: heads folded into the batch.
        var vHeads = vh.reshape(b * heads, t, d);
        var dwc = DepthwiseOverTokens(vHeads, w["dwc_w"], w["dwc_b"]).reshape(b, heads, t, d);
        var merged = TorchKit.MergeHeads((o + dwc).transpose(1, 2));
        return F.linear(merged, w["w_o"], w["b_o"]);
    };

    [TestCase(8, 6, 3, DType.F64)]
    [TestCase(7, 3, 5, DType.F64)]
    [TestCase(8, 6, 3, DType.F32)]
    [TestCase(7, 3, 5, DType.F32)]
    public void Agent_layer_equals_the_torch_composition(int tokens, int agents, int kernel, DType dtype)
    {
        // 7 tokens over 3 agents: pooling windows that overlap (floor(iT/n) … ceil((i+1)T/n) − 1).
        var config = new AgentConfig { DModel = 16, Heads = 4, Agents = agents, SeqLen = tokens, DwcKernel = kernel };
        // b_k adds the same (A·s)·b_k to every key's score of an agent: P1's softmax over T does not see it.
        TorchKit.AssertMatches(config, dtype, Batch, tokens, Agent(config), zeroGradients: ["b_k"]);
    }

    [TestCase(8, 3.0, 5, DType.F64)]
    [TestCase(6, 2.5, 3, DType.F64)]
    [TestCase(8, 3.0, 5, DType.F32)]
    [TestCase(6, 2.5, 3, DType.F32)]
    public void Flatten_layer_equals_the_torch_composition(int tokens, double focusing, int kernel, DType dtype)
    {
        var config = new FlattenConfig { DModel = 16, Heads = 4, SeqLen = tokens, FocusingFactor = focusing, DwcKernel = kernel };
        TorchKit.AssertMatches(config, dtype, Batch, tokens, Flatten(config));
    }
}

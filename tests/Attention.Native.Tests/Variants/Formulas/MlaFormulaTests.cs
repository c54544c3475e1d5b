using Attention.Native.Ops;
using Attention.Native.Tests.Support;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>
/// mla layers against <see cref="MlaFormula"/>: the forward, and the cache's decode, which always runs the absorbed form
/// (<c>LatentAttention.Decode</c> over the cached <c>[c | k_pe]</c>, for prefill blocks and single tokens alike).
/// </summary>
public class MlaFormulaTests
{
    private const int Batch = 2, Tokens = 7, DModel = 10;

    // d_n 3 ≠ d_r 4 ≠ d_v 5, so a scale, split or width taken from the wrong part changes the result.
    private static MlaConfig Config(int qLora, bool causal, RopeStyle style, double ropeBase) => new()
    {
        DModel = DModel, Heads = 3, QLoraRank = qLora, KvLoraRank = 6, QkNopeHeadDim = 3, QkRopeHeadDim = 4, VHeadDim = 5,
        Causal = causal, RopeStyle = style, RopeBase = ropeBase,
    };

    [TestCase(6, true, RopeStyle.Half, 10000.0)]
    [TestCase(6, true, RopeStyle.Interleaved, 10000.0)]
    [TestCase(0, true, RopeStyle.Half, 500.0)]
    [TestCase(0, true, RopeStyle.Interleaved, 500.0)]
    [TestCase(6, false, RopeStyle.Half, 500.0)]
    [TestCase(0, false, RopeStyle.Interleaved, 10000.0)]
    public void Forward_and_absorbed_decode_equal_the_formula(int qLora, bool causal, RopeStyle style, double ropeBase)
    {
        var config = Config(qLora, causal, style, ropeBase);
        using var layer = FormulaKit.Layer(config);
        var x = TestData.Normal(29, Batch * Tokens * DModel);
        var expected = MlaFormula.Forward(config, FormulaKit.Weights(layer), x, Batch, Tokens);
        FormulaKit.AssertMatches(FormulaKit.Forward(layer, x, Batch, Tokens), expected, "forward");
        if (causal)
        {
            var cached = (CausalAttentionLayer)layer;
            FormulaKit.AssertMatches(FormulaKit.Decode(cached, x, Batch, Tokens, prompt: 0), expected, "absorbed decode, token by token");
            FormulaKit.AssertMatches(FormulaKit.Decode(cached, x, Batch, Tokens, prompt: 3), expected, "absorbed prefill 3, then decode");
        }
    }

    /// <summary>DeepSeek-V3's <c>rope_scaling</c> (its config.json): factor 40, L0 4096, β 32/1, mscale 1, mscale_all_dim 1.</summary>
    internal static readonly RopeScaling DeepSeekV3 = new(40, 4096, BetaFast: 32, BetaSlow: 1, MScale: 1, MScaleAllDim: 1);

    // V3's d_r 64 (so the ramp runs over pairs 10 … 23 and neither end is clamped) with the small other widths above, interleaved
    // as DeepSeek pairs. "mscale 1/0.5" has an amplitude μ(40, 1)/μ(40, 0.5) = 1.16 on the rotated parts too (V3's is 1).
    private static MlaConfig YarnConfig(int qLora, string scaling) => new()
    {
        DModel = DModel, Heads = 2, QLoraRank = qLora, KvLoraRank = 6, QkNopeHeadDim = 3, QkRopeHeadDim = 64, VHeadDim = 5, RopeStyle = RopeStyle.Interleaved,
        RopeScaling = scaling == "DeepSeek-V3" ? DeepSeekV3 : DeepSeekV3 with { MScaleAllDim = 0.5 },
    };

    [TestCase(6, "DeepSeek-V3")]
    [TestCase(0, "DeepSeek-V3")]
    [TestCase(0, "mscale 1/0.5")]
    public void Yarn_forward_and_absorbed_decode_equal_the_formula(int qLora, string scaling)
    {
        // 40 tokens, the last 8 decoded one by one after a 32-token prefill: positions up to 39, where the interpolated pairs
        // (θ⁰_j/40 for j ≥ 23) already turn 40 times less than unscaled.
        const int tokens = 40;
        var config = YarnConfig(qLora, scaling);
        using var layer = FormulaKit.Layer(config);
        var x = TestData.Normal(37, tokens * DModel);
        var weights = FormulaKit.Weights(layer);
        var expected = MlaFormula.Forward(config, weights, x, 1, tokens);
        FormulaKit.AssertMatches(FormulaKit.Forward(layer, x, 1, tokens), expected, "forward");
        FormulaKit.AssertMatches(FormulaKit.Decode((CausalAttentionLayer)layer, x, 1, tokens, prompt: 32), expected, "absorbed prefill 32, then decode");
        // The scaling is not a no-op at these sizes: without it (or without its softmax factor) the formula moves well past the tolerance.
        var unscaled = MlaFormula.Forward(config with { RopeScaling = null }, weights, x, 1, tokens);
        double moved = expected.Zip(unscaled, (a, b) => Math.Abs(a - b)).Max() / (1 + expected.Max(Math.Abs));
        Assert.That(moved, Is.GreaterThan(1e-4), "rope_scaling changes y");
    }

    [TestCase(6, "DeepSeek-V3", 2, 5)]
    [TestCase(0, "mscale 1/0.5", 1, 6)]
    public void Yarn_gradients_match_finite_differences(int qLora, string scaling, int batch, int tokens)
    {
        using var layer = VariantTestKit.Layer(YarnConfig(qLora, scaling));
        GradientCheck.AssertClose($"mla yarn {scaling} q_lora={qLora} B={batch} T={tokens}", VariantTestKit.GradientError(layer, batch, tokens));
    }
}

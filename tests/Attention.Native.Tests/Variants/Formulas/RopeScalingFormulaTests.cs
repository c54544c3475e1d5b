using Attention.Native.Ops;
using Attention.Native.Tests.Support;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>
/// <c>rope_scaling</c> (variants.md "RoPE scaling", YaRN) on the variants with RoPE other than mla (<see cref="MlaFormulaTests"/>):
/// forward and decode against their formulas, and finite-difference gradients. Head width 16 puts the ramp of L0 4096 over pairs
/// 2 … 6 of 8; mscale 1 with mscale_all_dim 0.5 makes both the amplitude (1.16) and the softmax factor (1.40) differ from 1.
/// </summary>
public class RopeScalingFormulaTests
{
    private const int Tokens = 12, DModel = 10;

    private static readonly RopeScaling Yarn = new(40, 4096, BetaFast: 32, BetaSlow: 1, MScale: 1, MScaleAllDim: 0.5);

    private static IEnumerable<TestCaseData> Configs()
    {
        yield return new TestCaseData(new GqaConfig { Kind = "gqa", DModel = DModel, Heads = 4, KvHeads = 2, HeadDim = 16, RopeScaling = Yarn }).SetName("gqa yarn");
        yield return new TestCaseData(new GqaConfig { Kind = "mqa", DModel = DModel, Heads = 2, KvHeads = 1, HeadDim = 16, RopeStyle = RopeStyle.Interleaved, RopeScaling = Yarn }).SetName("mqa yarn interleaved");
        // TPA's decode scores from the factors with a fixed 1/(R_q R_k sqrt(d)): the layer puts μ² on A_q there.
        yield return new TestCaseData(new TpaConfig { DModel = DModel, Heads = 3, HeadDim = 16, QRank = 2, KRank = 3, VRank = 2, RopeScaling = Yarn }).SetName("tpa yarn");
        yield return new TestCaseData(new MfaConfig { DModel = DModel, Heads = 3, HeadDim = 16, QLoraDim = 6, RopeStyle = RopeStyle.Interleaved, RopeScaling = Yarn }).SetName("mfa yarn");
        yield return new TestCaseData(new SasConfig { DModel = 8, Heads = 2, HeadDim = 4, SimHeads = 4, SimHeadDim = 16, KernelSize = 3, RopeScaling = Yarn }).SetName("sas yarn");
    }

    [TestCaseSource(nameof(Configs))]
    public void Forward_and_decode_equal_the_formula(LayerConfig config)
    {
        using var layer = FormulaKit.Layer(config);
        var x = TestData.Normal(41, Tokens * config.DModel);
        var weights = FormulaKit.Weights(layer);
        var expected = FormulaKit.ForwardOf(config, weights, x, 1, Tokens);
        FormulaKit.AssertMatches(FormulaKit.Forward(layer, x, 1, Tokens), expected, "forward");
        FormulaKit.AssertMatches(FormulaKit.Decode((CausalAttentionLayer)layer, x, 1, Tokens, prompt: 8), expected, "prefill 8, then decode");
        LayerConfig unscaled = config switch
        {
            GqaConfig c => c with { RopeScaling = null },
            TpaConfig c => c with { RopeScaling = null },
            SasConfig c => c with { RopeScaling = null },
            MfaConfig c => c with { RopeScaling = null },
            _ => throw new ArgumentException("not a RoPE variant", nameof(config)),
        };
        var plain = FormulaKit.ForwardOf(unscaled, weights, x, 1, Tokens);
        Assert.That(expected.Zip(plain, (a, b) => Math.Abs(a - b)).Max() / (1 + expected.Max(Math.Abs)), Is.GreaterThan(1e-4), "rope_scaling changes y");
    }

    [TestCase("gqa")]
    [TestCase("tpa")]
    public void Gradients_match_finite_differences(string variant)
    {
        LayerConfig config = variant == "gqa"
            ? new GqaConfig { Kind = "gqa", DModel = DModel, Heads = 4, KvHeads = 2, HeadDim = 16, RopeScaling = Yarn }
            : new TpaConfig { DModel = DModel, Heads = 3, HeadDim = 16, QRank = 2, KRank = 3, VRank = 2, RopeScaling = Yarn };
        using var layer = VariantTestKit.Layer(config);
        GradientCheck.AssertClose($"{variant} yarn", VariantTestKit.GradientError(layer, 2, 5));
    }
}

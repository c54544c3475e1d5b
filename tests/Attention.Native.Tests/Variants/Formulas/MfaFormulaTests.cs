using Attention.Native.Ops;
using Attention.Native.Tests.Support;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>mfa layers (forward and KV-cache decode) against <see cref="MfaFormula"/>.</summary>
public class MfaFormulaTests
{
    private const int Batch = 2, Tokens = 7, DModel = 12, HeadDim = 8, QLoraDim = 6;

    private static MfaConfig Config(int heads, bool causal, bool rope, RopeStyle style, double ropeBase, double normEps) => new()
    {
        DModel = DModel, Heads = heads, HeadDim = HeadDim, QLoraDim = QLoraDim, Causal = causal, Rope = rope, RopeStyle = style,
        RopeBase = ropeBase, NormEpsilon = normEps,
    };

    // norm_eps 0.25 is far from the 1e-6 of the other variants' RMSNorm: a layer that ignored it would miss by ~10%.
    [TestCase(5, true, true, RopeStyle.Half, 10000.0, 1e-5)]
    [TestCase(5, true, true, RopeStyle.Interleaved, 500.0, 1e-5)]
    [TestCase(4, false, true, RopeStyle.Half, 500.0, 0.25)]
    [TestCase(4, false, true, RopeStyle.Interleaved, 10000.0, 1e-5)]
    [TestCase(3, true, true, RopeStyle.Half, 10000.0, 0.25)]
    [TestCase(3, true, false, RopeStyle.Half, 10000.0, 1e-5)]
    public void Forward_and_decode_equal_the_formula(int heads, bool causal, bool rope, RopeStyle style, double ropeBase, double normEps)
    {
        var config = Config(heads, causal, rope, style, ropeBase, normEps);
        using var layer = FormulaKit.Layer(config);
        var x = TestData.Normal(29, Batch * Tokens * DModel);
        var expected = MfaFormula.Forward(config, FormulaKit.Weights(layer), x, Batch, Tokens);
        FormulaKit.AssertMatches(FormulaKit.Forward(layer, x, Batch, Tokens), expected, "forward");
        if (causal)
        {
            var cached = (CausalAttentionLayer)layer;
            FormulaKit.AssertMatches(FormulaKit.Decode(cached, x, Batch, Tokens, prompt: 0), expected, "token-by-token decode");
            FormulaKit.AssertMatches(FormulaKit.Decode(cached, x, Batch, Tokens, prompt: 3), expected, "prefill 3, then decode");
        }
    }
}

using Attention.Native.Ops;
using Attention.Native.Tests.Support;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>tpa layers (forward, and decode from the cached factors) against <see cref="TpaFormula"/>.</summary>
public class TpaFormulaTests
{
    private const int Batch = 2, Tokens = 7, DModel = 10;

    private static TpaConfig Config(int qRank, int kRank, int vRank, bool causal, RopeStyle style, double ropeBase) => new()
    {
        DModel = DModel, Heads = 3, HeadDim = 6, QRank = qRank, KRank = kRank, VRank = vRank, Causal = causal, Rope = true, RopeStyle = style, RopeBase = ropeBase,
    };

    [TestCase(3, 2, 2, true, RopeStyle.Half, 10000.0)]
    [TestCase(3, 2, 2, true, RopeStyle.Interleaved, 10000.0)]
    [TestCase(2, 3, 1, true, RopeStyle.Half, 500.0)]
    [TestCase(2, 3, 1, true, RopeStyle.Interleaved, 500.0)]
    [TestCase(3, 2, 3, false, RopeStyle.Half, 500.0)]
    [TestCase(1, 2, 2, false, RopeStyle.Interleaved, 10000.0)]
    public void Forward_and_factor_decode_equal_the_formula(int qRank, int kRank, int vRank, bool causal, RopeStyle style, double ropeBase)
    {
        var config = Config(qRank, kRank, vRank, causal, style, ropeBase);
        using var layer = FormulaKit.Layer(config);
        var x = TestData.Normal(31, Batch * Tokens * DModel);
        var expected = TpaFormula.Forward(config, FormulaKit.Weights(layer), x, Batch, Tokens);
        FormulaKit.AssertMatches(FormulaKit.Forward(layer, x, Batch, Tokens), expected, "forward");
        if (causal)
        {
            var cached = (CausalAttentionLayer)layer;
            FormulaKit.AssertMatches(FormulaKit.Decode(cached, x, Batch, Tokens, prompt: 0), expected, "decode from the factors, token by token");
            FormulaKit.AssertMatches(FormulaKit.Decode(cached, x, Batch, Tokens, prompt: 3), expected, "prefill 3, then decode from the factors");
        }
    }
}

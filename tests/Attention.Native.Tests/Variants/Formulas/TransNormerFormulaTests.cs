using Attention.Native.Tests.Support;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>transnormer layers (forward and the constant-size state's decode) against <see cref="TransNormerFormula"/>.</summary>
public class TransNormerFormulaTests
{
    private const int Batch = 2, Tokens = 7, DModel = 10;

    // H 4 (a power of two), H 3 and H 6 (the ALiBi interleave); depth factors 1 + 1e-5 (l 0 of 2), 1/2 + 1e-5 (l 1 of 3),
    // 1/3 + 1e-5 (l 2 of 4) and 1 (L 1); LRPE on, and once off.
    [TestCase(4, 1, 3, true)]
    [TestCase(3, 0, 2, true)]
    [TestCase(3, 0, 1, true)]
    [TestCase(4, 1, 3, false)]
    [TestCase(6, 2, 4, true)]
    public void Forward_and_decode_equal_the_formula(int heads, int layerIndex, int numLayers, bool lrpe)
    {
        var config = new TransNormerConfig { DModel = DModel, Heads = heads, HeadDim = 4, LayerIndex = layerIndex, NumLayers = numLayers, Lrpe = lrpe };
        using var layer = FormulaKit.Layer(config);
        var x = TestData.Normal(47, Batch * Tokens * DModel);
        var expected = TransNormerFormula.Forward(config, FormulaKit.Weights(layer), x, Batch, Tokens);
        FormulaKit.AssertMatches(FormulaKit.Forward(layer, x, Batch, Tokens), expected, "forward");
        var cached = (CausalAttentionLayer)layer;
        FormulaKit.AssertMatches(FormulaKit.Decode(cached, x, Batch, Tokens, prompt: 0), expected, "state decode, token by token");
        FormulaKit.AssertMatches(FormulaKit.Decode(cached, x, Batch, Tokens, prompt: 3), expected, "prefill 3, then state decode");
    }
}

using Attention.Native.Ops;
using Attention.Native.Tests.Support;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>sas layers (forward and KV-cache decode) against <see cref="SasLayerFormula"/>, RoPE on.</summary>
public class SasFormulaTests
{
    private const int Batch = 2, Tokens = 6, DModel = 8;

    private static SasConfig Config(int simHeads, int kernel, bool causal, RopeStyle style, double ropeBase) => new()
    {
        DModel = DModel, Heads = 2, HeadDim = 4, SimHeads = simHeads, SimHeadDim = 6, KernelSize = kernel, Causal = causal,
        Rope = true, RopeStyle = style, RopeBase = ropeBase,
    };

    [TestCase(4, 3, true, RopeStyle.Half, 10000.0)]
    [TestCase(4, 3, true, RopeStyle.Interleaved, 10000.0)]
    [TestCase(6, 1, true, RopeStyle.Half, 500.0)]
    [TestCase(6, 5, true, RopeStyle.Interleaved, 500.0)]
    [TestCase(4, 3, false, RopeStyle.Half, 500.0)]
    [TestCase(2, 3, false, RopeStyle.Interleaved, 10000.0)]
    public void Forward_and_decode_equal_the_formula(int simHeads, int kernel, bool causal, RopeStyle style, double ropeBase)
    {
        var config = Config(simHeads, kernel, causal, style, ropeBase);
        using var layer = FormulaKit.Layer(config);
        var x = TestData.Normal(37, Batch * Tokens * DModel);
        var expected = SasLayerFormula.Forward(config, FormulaKit.Weights(layer), x, Batch, Tokens);
        FormulaKit.AssertMatches(FormulaKit.Forward(layer, x, Batch, Tokens), expected, "forward");
        if (causal)
        {
            var cached = (CausalAttentionLayer)layer;
            FormulaKit.AssertMatches(FormulaKit.Decode(cached, x, Batch, Tokens, prompt: 0), expected, "token-by-token decode");
            FormulaKit.AssertMatches(FormulaKit.Decode(cached, x, Batch, Tokens, prompt: 2), expected, "prefill 2, then decode");
        }
    }
}

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
}

using Attention.Native.Ops;
using Attention.Native.Tests.Support;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>mha/gqa/mqa layers (forward and KV-cache decode) against <see cref="GqaFormula"/>.</summary>
public class GqaFormulaTests
{
    private const int Batch = 2, Tokens = 7, DModel = 12, HeadDim = 8;

    private static GqaConfig Config(string kind, int heads, int kvHeads, bool causal, bool rope, RopeStyle style, double ropeBase) => new()
    {
        Kind = kind, DModel = DModel, Heads = heads, KvHeads = kvHeads, HeadDim = HeadDim, Causal = causal, Rope = rope, RopeStyle = style, RopeBase = ropeBase,
    };

    [TestCase("mha", 3, 3, true, true, RopeStyle.Half, 10000.0)]
    [TestCase("mha", 3, 3, true, true, RopeStyle.Interleaved, 10000.0)]
    [TestCase("gqa", 6, 2, true, true, RopeStyle.Half, 10000.0)]
    [TestCase("gqa", 6, 2, true, true, RopeStyle.Interleaved, 500.0)]
    [TestCase("gqa", 4, 2, false, true, RopeStyle.Half, 500.0)]
    [TestCase("gqa", 4, 2, false, true, RopeStyle.Interleaved, 10000.0)]
    [TestCase("mqa", 4, 1, true, true, RopeStyle.Half, 500.0)]
    [TestCase("mqa", 4, 1, true, true, RopeStyle.Interleaved, 10000.0)]
    [TestCase("gqa", 4, 2, true, false, RopeStyle.Half, 10000.0)]
    public void Forward_and_decode_equal_the_formula(string kind, int heads, int kvHeads, bool causal, bool rope, RopeStyle style, double ropeBase)
    {
        var config = Config(kind, heads, kvHeads, causal, rope, style, ropeBase);
        using var layer = FormulaKit.Layer(config);
        var x = TestData.Normal(23, Batch * Tokens * DModel);
        var expected = GqaFormula.Forward(config, FormulaKit.Weights(layer), x, Batch, Tokens);
        FormulaKit.AssertMatches(FormulaKit.Forward(layer, x, Batch, Tokens), expected, "forward");
        if (causal)
        {
            var cached = (CausalAttentionLayer)layer;
            FormulaKit.AssertMatches(FormulaKit.Decode(cached, x, Batch, Tokens, prompt: 0), expected, "token-by-token decode");
            FormulaKit.AssertMatches(FormulaKit.Decode(cached, x, Batch, Tokens, prompt: 3), expected, "prefill 3, then decode");
        }
    }
}

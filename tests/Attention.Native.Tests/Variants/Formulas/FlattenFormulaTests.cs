using Attention.Native.Tests.Support;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>flatten layers (1-D form, non-causal, no cache) against <see cref="FlattenFormula"/>.</summary>
public class FlattenFormulaTests
{
    private const int Batch = 2, DModel = 8;

    [TestCase(2, 7, 3.0, 5)]
    [TestCase(4, 6, 2.5, 3)]
    [TestCase(1, 5, 1.0, 1)]
    public void Forward_equals_the_formula(int heads, int seqLen, double focusing, int kernel)
    {
        var config = new FlattenConfig { DModel = DModel, Heads = heads, SeqLen = seqLen, FocusingFactor = focusing, DwcKernel = kernel };
        using var layer = FormulaKit.Layer(config);
        var x = TestData.Normal(43, Batch * seqLen * DModel);
        var expected = FlattenFormula.Forward(config, FormulaKit.Weights(layer), x, Batch);
        FormulaKit.AssertMatches(FormulaKit.Forward(layer, x, Batch, seqLen), expected, "forward");
    }
}

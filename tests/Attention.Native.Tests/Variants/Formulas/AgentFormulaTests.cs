using Attention.Native.Tests.Support;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>agent layers (1-D form, non-causal, no cache) against <see cref="AgentFormula"/>.</summary>
public class AgentFormulaTests
{
    private const int Batch = 2, DModel = 8;

    // T 7 over 3 agents pools the overlapping windows 0–2, 2–4, 4–6; T 6 over 4 agents 0–1, 1–2, 3–4, 4–5; T 5 over 5, one each.
    [TestCase(2, 7, 3, 3)]
    [TestCase(4, 6, 4, 5)]
    [TestCase(2, 5, 5, 1)]
    public void Forward_equals_the_formula(int heads, int seqLen, int agents, int kernel)
    {
        var config = new AgentConfig { DModel = DModel, Heads = heads, SeqLen = seqLen, Agents = agents, DwcKernel = kernel };
        using var layer = FormulaKit.Layer(config);
        var x = TestData.Normal(41, Batch * seqLen * DModel);
        var expected = AgentFormula.Forward(config, FormulaKit.Weights(layer), x, Batch);
        FormulaKit.AssertMatches(FormulaKit.Forward(layer, x, Batch, seqLen), expected, "forward");
    }
}

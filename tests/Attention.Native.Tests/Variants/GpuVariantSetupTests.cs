using Attention.Native.Tests.Gpu;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>The configs the Gpu variant tests use are valid and run on the CPU reference (so a GPU run never fails on a typo).</summary>
public class GpuVariantSetupTests
{
    [Test]
    public void Every_variant_is_covered_and_every_setup_builds_and_runs_one_token()
    {
        var setups = GpuVariantTests.Setups().ToList();
        Assert.That(setups.Select(s => s.Config.Variant).Distinct(), Is.EquivalentTo(LayerConfig.Variants));
        foreach (var setup in setups)
        {
            using var layer = AttentionLayer.Create(setup.Config, Backend.Cpu, DType.F32);
            layer.InitializeParameters(1);
            int t = setup.Lengths.Min() <= 7 ? setup.Lengths.Min() : setup.Config is AgentConfig or FlattenConfig ? setup.Lengths.Min() : 1;
            using var x = Backend.Cpu.Zeros(new Shape(1, t, setup.Config.DModel));
            using var y = layer.Forward(x);
            Assert.That(y.Shape, Is.EqualTo(x.Shape), setup.Label);
        }
    }
}

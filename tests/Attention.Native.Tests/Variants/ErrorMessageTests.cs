using Attention.Native.Ops;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>Error messages say what differs and stay one short line whatever the input.</summary>
public class ErrorMessageTests
{
    private static GqaConfig Small => new() { Kind = "mha", DModel = 8, Heads = 2, KvHeads = 2, HeadDim = 4 };

    [Test]
    public void An_op_given_a_tensor_of_another_cpu_backend_instance_says_so()
    {
        using var other = new CpuBackend();
        using var x = Backend.Cpu.Zeros(new Shape(2, 4));
        using var w = other.Zeros(new Shape(3, 4));
        var e = Assert.Throws<ArgumentException>(() => Linear.Forward(x, w))!;
        Assert.That(e.Message, Does.Contain("actual another CpuBackend instance (cpu)"));
    }

    [Test]
    public void A_layer_given_x_of_another_cpu_backend_instance_says_so()
    {
        using var other = new CpuBackend();
        using var layer = AttentionLayer.Create(Small, Backend.Cpu);
        using var x = other.Zeros(new Shape(1, 3, 8));
        var e = Assert.Throws<ArgumentException>(() => layer.Forward(x))!;
        Assert.That(e.Message, Does.Contain("on cpu, actual F32 on another CpuBackend instance (cpu)"));
    }

    [Test]
    public void Unexpected_weight_names_are_listed_up_to_twenty()
    {
        using var layer = AttentionLayer.Create(Small, Backend.Cpu);
        var tensors = layer.Parameters.ToDictionary(p => p.Key, p => p.Value);
        using var extra = Backend.Cpu.Zeros(new Shape(1));
        for (int i = 0; i < 1000; i++)
        {
            tensors[$"extra.{i:D4}"] = extra;
        }
        var e = Assert.Throws<ArgumentException>(() => layer.LoadParameters(tensors))!;
        Assert.Multiple(() =>
        {
            Assert.That(e.Message, Does.Contain("unexpected: extra.0000, extra.0001").And.Contain("extra.0019, … and 980 more"));
            Assert.That(e.Message, Does.Not.Contain("extra.0020"));
            Assert.That(e.Message, Has.Length.LessThan(600));
        });
    }
}

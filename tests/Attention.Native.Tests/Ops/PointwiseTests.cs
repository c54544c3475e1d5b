using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Ops;

public class PointwiseTests
{
    private static readonly Backend Cpu = Backend.Cpu;

    [Test]
    public void Forward_equals_the_definitions()
    {
        double[] a = [-2, -0.5, 0, 0.5, 3, 1.5];
        double[] b = [1, 2, 3];
        using var ta = Cpu.FromArray(a, new Shape(2, 3), DType.F64);
        using var tb = Cpu.FromArray(b, new Shape(3), DType.F64);
        using var silu = Pointwise.Forward(PointwiseOp.Silu, ta);
        using var relu = Pointwise.Forward(PointwiseOp.Relu, ta);
        using var scaled = Pointwise.Forward(PointwiseOp.Scale, ta, null, -0.5);
        using var added = Pointwise.Forward(PointwiseOp.Add, ta, tb);
        using var product = Pointwise.Forward(PointwiseOp.Multiply, ta, ta);
        Assert.That(silu.ToDoubleArray(), Is.EqualTo(a.Select(v => v / (1 + Math.Exp(-v)))).Within(1e-15));
        Assert.That(relu.ToDoubleArray(), Is.EqualTo(a.Select(v => Math.Max(v, 0))));
        Assert.That(scaled.ToDoubleArray(), Is.EqualTo(a.Select(v => -0.5 * v)));
        Assert.That(added.ToDoubleArray(), Is.EqualTo(a.Select((v, i) => v + b[i % 3])));
        Assert.That(product.ToDoubleArray(), Is.EqualTo(a.Select(v => v * v)));
    }

    [TestCase(PointwiseOp.Silu, false)]
    [TestCase(PointwiseOp.Relu, false)]
    [TestCase(PointwiseOp.Scale, false)]
    [TestCase(PointwiseOp.Add, true)]
    [TestCase(PointwiseOp.Add, false)]
    [TestCase(PointwiseOp.Multiply, false)]
    public void Gradients_match_finite_differences(PointwiseOp op, bool broadcast)
    {
        bool binary = op is PointwiseOp.Add or PointwiseOp.Multiply;
        var shapeA = new Shape(3, 4, 5);
        Shape[] shapes = binary ? [shapeA, broadcast ? new Shape(4, 5) : shapeA] : [shapeA];
        double error = OpGradientCheck.MaxError(
            shapes,
            t => Pointwise.Forward(op, t[0], binary ? t[1] : null, 0.75),
            (t, dy, g) => Pointwise.Backward(op, t[0], binary ? t[1] : null, dy, g[0], binary ? g[1] : null, 0.75));
        GradientCheck.AssertClose($"pointwise {op} broadcast={broadcast}", error);
    }

    [Test]
    public void Bad_operands_are_rejected()
    {
        using var a = Cpu.Zeros(new Shape(2, 3));
        using var b = Cpu.Zeros(new Shape(2));
        LinearTests.AssertArgument(() => Pointwise.Forward(PointwiseOp.Add, a, b), "b", "[2, 3]", "[2]");
        LinearTests.AssertArgument(() => Pointwise.Forward(PointwiseOp.Multiply, a, null), "b", "second operand", "null");
        LinearTests.AssertArgument(() => Pointwise.Forward(PointwiseOp.Relu, a, a), "b", "null", "a tensor");
    }
}

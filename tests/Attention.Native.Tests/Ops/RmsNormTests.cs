using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Ops;

public class RmsNormTests
{
    private static readonly Backend Cpu = Backend.Cpu;

    [TestCase(3, 8, true)]
    [TestCase(5, 1, false)]
    [TestCase(2, 37, true)]
    public void Forward_equals_the_definition(int rows, int n, bool withGain)
    {
        var x = TestData.Normal(21, rows * n);
        var g = TestData.Normal(22, n);
        using var tx = Cpu.FromArray(x, new Shape(rows, n), DType.F64);
        using var tg = Cpu.FromArray(g, new Shape(n), DType.F64);
        using var y = RmsNorm.Forward(tx, withGain ? tg : null);
        var actual = y.ToDoubleArray();
        for (int r = 0; r < rows; r++)
        {
            double meanSquare = 0;
            for (int c = 0; c < n; c++)
            {
                meanSquare += x[(r * n) + c] * x[(r * n) + c] / n;
            }
            double scale = 1 / Math.Sqrt(meanSquare + (double)RmsNorm.DefaultEpsilon);
            for (int c = 0; c < n; c++)
            {
                Assert.That(actual[(r * n) + c], Is.EqualTo(x[(r * n) + c] * scale * (withGain ? g[c] : 1)).Within(1e-12));
            }
        }
    }

    [TestCase(2, 3, 8, true)]
    [TestCase(2, 3, 8, false)]
    [TestCase(1, 1, 1, true)]
    [TestCase(1, 4, 33, true)]
    public void Gradients_match_finite_differences(int batch, int seq, int n, bool withGain)
    {
        var shape = new Shape(batch, seq, n);
        double[][] inputs = [TestData.Normal(23, shape.ElementCount), TestData.Normal(24, n)];
        var dyValues = TestData.Normal(25, shape.ElementCount);
        double[] Forward(double[][] p)
        {
            using var x = Cpu.FromArray(p[0], shape, DType.F64);
            using var g = Cpu.FromArray(p[1], new Shape(n), DType.F64);
            using var y = RmsNorm.Forward(x, withGain ? g : null);
            return y.ToDoubleArray();
        }
        using var tx = Cpu.FromArray(inputs[0], shape, DType.F64);
        using var tg = Cpu.FromArray(inputs[1], new Shape(n), DType.F64);
        using var dy = Cpu.FromArray(dyValues, shape, DType.F64);
        using var dx = Cpu.Zeros(shape, DType.F64);
        using var dg = Cpu.Zeros(new Shape(n), DType.F64);
        RmsNorm.Backward(tx, withGain ? tg : null, dy, dx, withGain ? dg : null);
        double error = GradientCheck.MaxError(inputs, Forward, dyValues, [dx.ToDoubleArray(), withGain ? dg.ToDoubleArray() : null!]);
        GradientCheck.AssertClose($"rmsnorm {shape} gain={withGain}", error);
    }

    [Test]
    public void In_place_forward_and_accumulating_backward()
    {
        var x = TestData.NormalSingle(26, 4 * 16);
        using var t = Cpu.FromArray(x, new Shape(4, 16));
        using var copy = Cpu.FromArray(x, new Shape(4, 16));
        using var expected = RmsNorm.Forward(copy);
        RmsNorm.Forward(t, null, t);
        Assert.That(t.ToArray(), Is.EqualTo(expected.ToArray()));

        using var g = Cpu.FromArray(TestData.NormalSingle(27, 16), new Shape(16));
        using var dy = Cpu.FromArray(TestData.NormalSingle(28, 64), new Shape(4, 16));
        using var dx = Cpu.Zeros(new Shape(4, 16));
        using var dg = Cpu.Zeros(new Shape(16));
        RmsNorm.Backward(copy, g, dy, dx, dg);
        var once = (dx.ToArray(), dg.ToArray());
        RmsNorm.Backward(copy, g, dy, dx, dg, accumulate: true);
        Assert.That(dx.ToArray(), Is.EqualTo(once.Item1.Select(v => 2 * v)).Within(1e-5));
        Assert.That(dg.ToArray(), Is.EqualTo(once.Item2.Select(v => 2 * v)).Within(1e-5));
    }

    [Test]
    public void Bad_arguments_are_rejected_with_expected_and_actual()
    {
        using var x = Cpu.Zeros(new Shape(2, 8));
        using var g = Cpu.Zeros(new Shape(6));
        using var y = Cpu.Zeros(new Shape(2, 7));
        using var dy = Cpu.Zeros(new Shape(2, 8));
        using var dg = Cpu.Zeros(new Shape(8));
        LinearTests.AssertArgument(() => RmsNorm.Forward(x, g), "gain", "[8]", "[6]");
        LinearTests.AssertArgument(() => RmsNorm.Forward(x, null, y), "y", "[2, 8]", "[2, 7]");
        LinearTests.AssertArgument(() => RmsNorm.Backward(x, null, dy, dy), "dx", "distinct from dy", "same tensor");
        LinearTests.AssertArgument(() => RmsNorm.Backward(x, null, dy, y), "dx", "[2, 8]", "[2, 7]");
        LinearTests.AssertArgument(() => RmsNorm.Backward(x, null, dy, Cpu.Zeros(new Shape(2, 8)), dg), "dgain", "null", "a tensor");
        Assert.Throws<ArgumentOutOfRangeException>(() => RmsNorm.Forward(x, null, 0f));
    }
}

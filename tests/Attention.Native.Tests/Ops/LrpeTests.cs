using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Ops;

public class LrpeTests
{
    private static readonly Backend Cpu = Backend.Cpu;

    [TestCase(2, 5, 3, 4, 0)]
    [TestCase(2, 5, 3, 4, 7)]
    [TestCase(1, 1, 1, 1, 0)]
    [TestCase(1, 3, 2, 5, 1000)]
    public void Forward_equals_the_definition(int batch, int seq, int heads, int width, int positionOffset)
    {
        var x = TestData.Normal(31, batch * seq * heads * width);
        var theta = TestData.Normal(32, heads * width);
        using var tx = Cpu.FromArray(x, new Shape(batch, seq, heads, width), DType.F64);
        using var tTheta = Cpu.FromArray(theta, new Shape(heads, width), DType.F64);
        using var y = Lrpe.Forward(tx, tTheta, positionOffset);
        Assert.That(y.Shape, Is.EqualTo(new Shape(batch, seq, heads, 2 * width)));
        var actual = y.ToDoubleArray();
        for (int b = 0; b < batch; b++)
        {
            for (int t = 0; t < seq; t++)
            {
                for (int h = 0; h < heads; h++)
                {
                    int row = (((b * seq) + t) * heads) + h;
                    for (int j = 0; j < width; j++)
                    {
                        double angle = theta[(h * width) + j] * (t + positionOffset);
                        double value = x[(row * width) + j];
                        Assert.That(actual[(row * 2 * width) + j], Is.EqualTo(value * Math.Cos(angle)).Within(1e-14));
                        Assert.That(actual[(row * 2 * width) + width + j], Is.EqualTo(value * Math.Sin(angle)).Within(1e-14));
                    }
                }
            }
        }
    }

    [TestCase(2, 5, 3, 4, 0)]
    [TestCase(1, 1, 1, 1, 3)]
    [TestCase(1, 7, 2, 3, 11)]
    [TestCase(3, 2, 1, 5, 0)]
    public void Gradients_match_finite_differences(int batch, int seq, int heads, int width, int positionOffset)
    {
        double error = OpGradientCheck.MaxError(
            [new Shape(batch, seq, heads, width), new Shape(heads, width)],
            t => Lrpe.Forward(t[0], t[1], positionOffset),
            (t, dy, g) => Lrpe.Backward(t[0], t[1], dy, g[0], g[1], positionOffset));
        GradientCheck.AssertClose($"lrpe B={batch} T={seq} H={heads} d={width} offset={positionOffset}", error);
    }

    [Test]
    public void Backward_adds_into_the_gradients_and_skips_null_ones()
    {
        var shape = new Shape(2, 4, 3, 5);
        var thetaShape = new Shape(3, 5);
        using var x = Cpu.FromArray(TestData.Normal(41, shape.ElementCount), shape, DType.F64);
        using var theta = Cpu.FromArray(TestData.Normal(42, thetaShape.ElementCount), thetaShape, DType.F64);
        using var dy = Cpu.FromArray(TestData.Normal(43, 2 * shape.ElementCount), shape.WithLast(10), DType.F64);
        using var dx = Cpu.Zeros(shape, DType.F64);
        using var dtheta = Cpu.Zeros(thetaShape, DType.F64);
        Lrpe.Backward(x, theta, dy, dx, dtheta, 2);
        var dxStart = TestData.Normal(44, shape.ElementCount);
        var dthetaStart = TestData.Normal(45, thetaShape.ElementCount);
        using var dxOnly = Cpu.FromArray(dxStart, shape, DType.F64);
        using var dthetaOnly = Cpu.FromArray(dthetaStart, thetaShape, DType.F64);
        Lrpe.Backward(x, theta, dy, dxOnly, null, 2);
        Lrpe.Backward(x, theta, dy, null, dthetaOnly, 2);
        Assert.That(dxOnly.ToDoubleArray(), Is.EqualTo(dxStart.Zip(dx.ToDoubleArray(), (a, b) => a + b)).Within(1e-12));
        Assert.That(dthetaOnly.ToDoubleArray(), Is.EqualTo(dthetaStart.Zip(dtheta.ToDoubleArray(), (a, b) => a + b)).Within(1e-12));
    }

    [Test]
    public void Float_path_agrees_with_double()
    {
        var shape = new Shape(2, 9, 3, 6);
        var thetaShape = new Shape(3, 6);
        var x = TestData.Normal(51, shape.ElementCount);
        var theta = TestData.Normal(52, thetaShape.ElementCount, 0.3);
        var dy = TestData.Normal(53, 2 * shape.ElementCount);
        var reference = Run(DType.F64);
        var single = Run(DType.F32);
        for (int i = 0; i < reference.Length; i++)
        {
            double scale = 1 + reference[i].Select(Math.Abs).Max();
            double worst = single[i].Zip(reference[i], (a, b) => Math.Abs(a - b)).Max();
            Assert.That(worst, Is.LessThanOrEqualTo(1e-4 * scale), $"output {i}: max |error| {worst:E2}");
        }

        double[][] Run(DType dtype)
        {
            using var tx = Cpu.FromArray(x, shape, dtype);
            using var tTheta = Cpu.FromArray(theta, thetaShape, dtype);
            using var tdy = Cpu.FromArray(dy, shape.WithLast(12), dtype);
            using var dx = Cpu.Zeros(shape, dtype);
            using var dtheta = Cpu.Zeros(thetaShape, dtype);
            using var y = Lrpe.Forward(tx, tTheta, 5);
            Lrpe.Backward(tx, tTheta, tdy, dx, dtheta, 5);
            return [y.ToDoubleArray(), dx.ToDoubleArray(), dtheta.ToDoubleArray()];
        }
    }

    [Test]
    public void Bad_arguments_are_rejected_with_expected_and_actual()
    {
        using var x = Cpu.Zeros(new Shape(2, 5, 3, 4));
        using var theta = Cpu.Zeros(new Shape(3, 4));
        using var dy = Cpu.Zeros(new Shape(2, 5, 3, 8));
        using var wrongTheta = Cpu.Zeros(new Shape(4, 3));
        using var flatTheta = Cpu.Zeros(new Shape(12));
        using var rank3 = Cpu.Zeros(new Shape(2, 5, 12));
        using var f64Theta = Cpu.Zeros(new Shape(3, 4), DType.F64);
        using var dx = Cpu.Zeros(new Shape(2, 5, 3, 4));
        LinearTests.AssertArgument(() => Lrpe.Forward(x, wrongTheta), "theta", "[3, 4]", "[4, 3]");
        LinearTests.AssertArgument(() => Lrpe.Forward(x, flatTheta), "theta", "[3, 4]", "[12]");
        LinearTests.AssertArgument(() => Lrpe.Forward(x, f64Theta), "theta", "F32", "F64");
        LinearTests.AssertArgument(() => Lrpe.Forward(rank3, theta), "x", "rank 4", "[2, 5, 12]");
        LinearTests.AssertArgument(() => Lrpe.Forward(x, theta, -1), "positionOffset", "≥ 0", "-1");
        LinearTests.AssertArgument(() => Lrpe.Backward(x, theta, x, null, null), "dy", "[2, 5, 3, 8]", "[2, 5, 3, 4]");
        LinearTests.AssertArgument(() => Lrpe.Backward(x, theta, dy, dy, null), "dx", "[2, 5, 3, 4]", "[2, 5, 3, 8]");
        LinearTests.AssertArgument(() => Lrpe.Backward(x, theta, dy, null, wrongTheta), "dtheta", "[3, 4]", "[4, 3]");
        LinearTests.AssertArgument(() => Lrpe.Backward(x, theta, dy, x, null), "dx", "distinct from x", "same tensor");
        LinearTests.AssertArgument(() => Lrpe.Backward(x, theta, dy, dx, theta), "dtheta", "distinct from theta", "same tensor");
        LinearTests.AssertArgument(() => Lrpe.Backward(x, theta, dy, dx, null, -2), "positionOffset", "≥ 0", "-2");
    }
}

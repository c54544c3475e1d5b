using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Ops;

public class FocusingMapTests
{
    private static readonly Backend Cpu = Backend.Cpu;

    [TestCase(2, 3, 8, 3.0)]
    [TestCase(1, 1, 1, 2.0)]
    [TestCase(2, 5, 7, 2.5)]
    [TestCase(1, 4, 16, 1.0)]
    [TestCase(3, 2, 5, 0.5)]
    public void Forward_equals_the_definition(int batch, int seq, int channels, double p)
    {
        var shape = new Shape(batch, seq, channels);
        var x = TestData.Normal(41, shape.ElementCount);
        var scale = TestData.Normal(42, channels);
        using var tx = Cpu.FromArray(x, shape, DType.F64);
        using var ts = Cpu.FromArray(scale, new Shape(channels), DType.F64);
        using var y = FocusingMap.Forward(tx, ts, p);
        Assert.That(y.Shape, Is.EqualTo(shape));
        Assert.That(y.ToDoubleArray(), Is.EqualTo(Expected(x, scale, channels, p)).Within(1e-12));
    }

    [TestCase(2, 3, 8, 1.0, false)]
    [TestCase(2, 3, 8, 2.0, false)]
    [TestCase(2, 3, 8, 3.0, false)]
    [TestCase(2, 3, 8, 2.5, false)]
    [TestCase(1, 1, 1, 3.0, true)] // one channel: a negative x has no gradient at all, so only a positive one can test it
    [TestCase(1, 1, 1, 2.5, true)]
    [TestCase(1, 1, 4, 1.0, true)]
    [TestCase(1, 5, 7, 3.0, true)]
    [TestCase(1, 5, 7, 2.0, false)]
    [TestCase(3, 1, 13, 2.0, false)]
    [TestCase(2, 40, 3, 2.5, false)]
    public void Gradients_match_finite_differences(int batch, int seq, int channels, double p, bool positiveX)
    {
        var shape = new Shape(batch, seq, channels);
        // With every channel positive the ReLU passes all of x: the gradient of x is non-zero everywhere.
        double[]? x = positiveX ? TestData.Normal(40, shape.ElementCount).Select(v => Math.Abs(v) + 0.1).ToArray() : null;
        double error = OpGradientCheck.MaxError(
            [shape, new Shape(channels)],
            t => FocusingMap.Forward(t[0], t[1], p),
            (t, dy, g) => FocusingMap.Backward(t[0], t[1], p, dy, g[0], g[1]),
            seed: 43,
            values: [x, null]);
        GradientCheck.AssertClose($"focusing map {shape} p={p} positive x={positiveX}", error);
    }

    [Test]
    public void Backward_adds_into_the_gradients_and_skips_null_ones()
    {
        var shape = new Shape(2, 3, 6);
        using var x = Cpu.FromArray(TestData.Normal(44, shape.ElementCount), shape, DType.F64);
        using var scale = Cpu.FromArray(TestData.Normal(45, 6), new Shape(6), DType.F64);
        using var dy = Cpu.FromArray(TestData.Normal(46, shape.ElementCount), shape, DType.F64);
        using var dxOnly = Cpu.Zeros(shape, DType.F64);
        using var dscaleOnly = Cpu.Zeros(new Shape(6), DType.F64);
        FocusingMap.Backward(x, scale, 3, dy, dxOnly, null);
        FocusingMap.Backward(x, scale, 3, dy, null, dscaleOnly);

        var dxStart = TestData.Normal(47, shape.ElementCount);
        var dscaleStart = TestData.Normal(48, 6);
        using var dx = Cpu.FromArray(dxStart, shape, DType.F64);
        using var dscale = Cpu.FromArray(dscaleStart, new Shape(6), DType.F64);
        FocusingMap.Backward(x, scale, 3, dy, dx, dscale);
        Assert.That(dxOnly.ToDoubleArray(), Has.Some.Not.EqualTo(0.0));
        Assert.That(dx.ToDoubleArray(), Is.EqualTo(dxStart.Zip(dxOnly.ToDoubleArray(), (a, b) => a + b)).Within(1e-14));
        Assert.That(dscale.ToDoubleArray(), Is.EqualTo(dscaleStart.Zip(dscaleOnly.ToDoubleArray(), (a, b) => a + b)).Within(1e-14));
    }

    [Test]
    public void Backward_is_deterministic_across_runs()
    {
        // 200 tokens span several row chunks, whose dscale partials must be summed in a fixed order.
        var shape = new Shape(4, 50, 24);
        using var x = Cpu.FromArray(TestData.NormalSingle(56, shape.ElementCount), shape);
        using var scale = Cpu.FromArray(TestData.NormalSingle(57, 24), new Shape(24));
        using var dy = Cpu.FromArray(TestData.NormalSingle(58, shape.ElementCount), shape);
        float[] Dscale()
        {
            using var dscale = Cpu.Zeros(new Shape(24));
            FocusingMap.Backward(x, scale, 3, dy, null, dscale);
            return dscale.ToArray();
        }
        var first = Dscale();
        for (int run = 0; run < 5; run++)
        {
            Assert.That(Dscale(), Is.EqualTo(first));
        }
    }

    [Test]
    public void In_place_forward_equals_the_out_of_place_one()
    {
        var shape = new Shape(2, 4, 9);
        var x = TestData.Normal(49, shape.ElementCount);
        using var scale = Cpu.FromArray(TestData.Normal(50, 9), new Shape(9), DType.F64);
        using var source = Cpu.FromArray(x, shape, DType.F64);
        using var expected = FocusingMap.Forward(source, scale, 3);
        using var t = Cpu.FromArray(x, shape, DType.F64);
        FocusingMap.Forward(t, scale, 3, t);
        Assert.That(t.ToDoubleArray(), Is.EqualTo(expected.ToDoubleArray()));
    }

    [Test]
    public void Single_precision_follows_double_precision()
    {
        const double P = 3;
        var shape = new Shape(2, 33, 24);
        var x = TestData.NormalSingle(51, shape.ElementCount);
        var scale = TestData.NormalSingle(52, 24);
        var dyValues = TestData.NormalSingle(53, shape.ElementCount);
        (float[] Y, float[] Dx, float[] Dscale) Run(DType dtype)
        {
            using var tx = Cpu.FromArray(x, shape, dtype);
            using var ts = Cpu.FromArray(scale, new Shape(24), dtype);
            using var dy = Cpu.FromArray(dyValues, shape, dtype);
            using var dx = Cpu.Zeros(shape, dtype);
            using var dscale = Cpu.Zeros(new Shape(24), dtype);
            using var y = FocusingMap.Forward(tx, ts, P);
            FocusingMap.Backward(tx, ts, P, dy, dx, dscale);
            return (y.ToArray(), dx.ToArray(), dscale.ToArray());
        }
        var reference = Run(DType.F64);
        var single = Run(DType.F32);
        Precision.AssertClose("focusing map y f32 vs f64", DType.F32, shape.ToString(), reference.Y, single.Y);
        Precision.AssertAdded("focusing map dx f32 vs f64", DType.F32, shape.ToString(), null, reference.Dx, single.Dx);
        Precision.AssertAdded("focusing map dscale f32 vs f64", DType.F32, shape.ToString(), null, reference.Dscale, single.Dscale);
    }

    [Test]
    public void Half_precision_storage_is_widened()
    {
        var shape = new Shape(1, 5, 12);
        var x = TestData.Representable(TestData.NormalSingle(54, shape.ElementCount), DType.BF16);
        var scale = TestData.Representable(TestData.NormalSingle(55, 12), DType.BF16);
        using var x64 = Cpu.FromArray(x, shape, DType.F64);
        using var s64 = Cpu.FromArray(scale, new Shape(12), DType.F64);
        using var x16 = Cpu.FromArray(x, shape, DType.BF16);
        using var s16 = Cpu.FromArray(scale, new Shape(12), DType.BF16);
        using var reference = FocusingMap.Forward(x64, s64, 2.5);
        using var actual = FocusingMap.Forward(x16, s16, 2.5);
        Precision.AssertClose("focusing map bf16 vs f64", DType.BF16, shape.ToString(), reference.ToArray(), actual.ToArray());
    }

    [Test]
    public void Bad_arguments_are_rejected_with_expected_and_actual()
    {
        using var x = Cpu.Zeros(new Shape(2, 3, 8));
        using var scale = Cpu.Zeros(new Shape(8));
        using var wrongScale = Cpu.Zeros(new Shape(7));
        using var scale64 = Cpu.Zeros(new Shape(8), DType.F64);
        using var dy = Cpu.Zeros(new Shape(2, 3, 8));
        using var wrongDy = Cpu.Zeros(new Shape(2, 4, 8));
        using var dx = Cpu.Zeros(new Shape(2, 3, 8));
        using var y = Cpu.Zeros(new Shape(2, 3, 9));
        LinearTests.AssertArgument(() => FocusingMap.Forward(x, wrongScale, 3), "scale", "[8]", "[7]");
        LinearTests.AssertArgument(() => FocusingMap.Forward(x, scale64, 3), "scale", "F32", "F64");
        LinearTests.AssertArgument(() => FocusingMap.Forward(x, scale, 0), "focusingFactor", "> 0", "0");
        LinearTests.AssertArgument(() => FocusingMap.Forward(x, scale, -2), "focusingFactor", "> 0", $"{-2.0}");
        LinearTests.AssertArgument(() => FocusingMap.Forward(x, scale, double.NaN), "focusingFactor", "finite", $"{double.NaN}");
        LinearTests.AssertArgument(() => FocusingMap.Forward(x, scale, double.PositiveInfinity), "focusingFactor", "finite", $"{double.PositiveInfinity}");
        LinearTests.AssertArgument(() => FocusingMap.Forward(x, scale, 3, y), "y", "[2, 3, 8]", "[2, 3, 9]");
        LinearTests.AssertArgument(() => FocusingMap.Backward(x, scale, 3, wrongDy, dx, null), "dy", "[2, 3, 8]", "[2, 4, 8]");
        LinearTests.AssertArgument(() => FocusingMap.Backward(x, scale, 3, dy, y, null), "dx", "[2, 3, 8]", "[2, 3, 9]");
        LinearTests.AssertArgument(() => FocusingMap.Backward(x, scale, 3, dy, dy, null), "dx", "distinct from dy", "same tensor");
        LinearTests.AssertArgument(() => FocusingMap.Backward(x, scale, 3, dy, dx, wrongScale), "dscale", "[8]", "[7]");
        LinearTests.AssertArgument(() => FocusingMap.Backward(x, scale, -1, dy, dx, scale), "focusingFactor", "> 0", $"{-1.0}");
        Assert.Throws<ArgumentNullException>(() => FocusingMap.Forward(x, null!, 3));
    }

    // The definition of variants.md §6, token by token.
    private static double[] Expected(double[] x, double[] scale, int channels, double p)
    {
        var y = new double[x.Length];
        for (int token = 0; token < x.Length / channels; token++)
        {
            var u = new double[channels];
            double normU = 0;
            for (int c = 0; c < channels; c++)
            {
                double softplus = Math.Log(1 + Math.Exp(scale[c]));
                u[c] = (Math.Max(x[(token * channels) + c], 0) + 1e-6) / softplus;
                normU += u[c] * u[c];
            }
            normU = Math.Sqrt(normU);
            double normPower = 0;
            for (int c = 0; c < channels; c++)
            {
                u[c] = Math.Pow(u[c], p);
                normPower += u[c] * u[c];
            }
            normPower = Math.Sqrt(normPower);
            for (int c = 0; c < channels; c++)
            {
                y[(token * channels) + c] = u[c] / normPower * normU;
            }
        }
        return y;
    }
}

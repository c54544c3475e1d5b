using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Ops;

/// <summary>The 2-D form of <see cref="DepthwiseConv"/>: x [B, H, W, C], weight [Cw, 1, kh, kw] (vision-forms.md §0 DWConv_k).</summary>
public class DepthwiseConv2dTests
{
    private static readonly Backend Cpu = Backend.Cpu;

    // (B, H, W, C, Cw, kh, kw, bias): Cw = C (agent) and Cw < C (flatten's filters shared by the heads), kh = kw and kh ≠ kw,
    // grids 1×W, H×1 and 1×1, a kernel larger than the grid, a 1×1 kernel.
    private static readonly object[] Configs =
    [
        new object[] { 2, 4, 5, 4, 4, 3, 3, true },
        new object[] { 1, 3, 4, 6, 3, 3, 5, true },
        new object[] { 2, 1, 6, 4, 2, 3, 3, true },
        new object[] { 1, 5, 1, 3, 3, 5, 3, false },
        new object[] { 1, 2, 3, 4, 1, 5, 7, true },
        new object[] { 2, 3, 3, 6, 2, 1, 1, false },
        new object[] { 1, 1, 1, 2, 2, 3, 3, true },
        new object[] { 1, 7, 5, 4, 2, 5, 3, true },
    ];

    [TestCaseSource(nameof(Configs))]
    public void Forward_and_backward_equal_the_definition(int batch, int height, int width, int channels, int filters, int kh, int kw, bool withBias)
    {
        var xs = new Shape(batch, height, width, channels);
        var ws = new Shape(filters, 1, kh, kw);
        var x = TestData.Normal(61, xs.ElementCount);
        var w = TestData.Normal(62, ws.ElementCount);
        var b = TestData.Normal(63, filters);
        var dy = TestData.Normal(64, xs.ElementCount);
        using var tx = Cpu.FromArray(x, xs, DType.F64);
        using var tw = Cpu.FromArray(w, ws, DType.F64);
        using var tb = Cpu.FromArray(b, new Shape(filters), DType.F64);
        using var tdy = Cpu.FromArray(dy, xs, DType.F64);
        using var y = DepthwiseConv.Forward(tx, tw, withBias ? tb : null);
        using var dx = Cpu.Zeros(xs, DType.F64);
        using var dw = Cpu.Zeros(ws, DType.F64);
        using var db = Cpu.Zeros(new Shape(filters), DType.F64);
        DepthwiseConv.Backward(tx, tw, tdy, dx, dw, db);
        var expected = Loops.Run(x, w, withBias ? b : null, dy, batch, height, width, channels, filters, kh, kw);
        Assert.That(y.Shape, Is.EqualTo(xs));
        Assert.That(y.ToDoubleArray(), Is.EqualTo(expected.Y).Within(1e-12), "y");
        Assert.That(dx.ToDoubleArray(), Is.EqualTo(expected.Dx).Within(1e-12), "dx");
        Assert.That(dw.ToDoubleArray(), Is.EqualTo(expected.Dw).Within(1e-11), "dweight");
        Assert.That(db.ToDoubleArray(), Is.EqualTo(expected.Db).Within(1e-11), "dbias");
    }

    [Test]
    public void A_hand_computed_3x3_example()
    {
        // x is the 3×3 image 1 … 9 (row-major); the kernel taps the token above with weight 1 and the token to the right
        // with weight 2, bias 0.5: y[i,j] = 0.5 + x[i−1,j] + 2·x[i,j+1], zero outside the image.
        using var x = Cpu.FromArray(new double[] { 1, 2, 3, 4, 5, 6, 7, 8, 9 }, new Shape(1, 3, 3, 1), DType.F64);
        using var w = Cpu.FromArray(new double[] { 0, 1, 0, 0, 0, 2, 0, 0, 0 }, new Shape(1, 1, 3, 3), DType.F64);
        using var b = Cpu.FromArray(new double[] { 0.5 }, new Shape(1), DType.F64);
        using var y = DepthwiseConv.Forward(x, w, b);
        Assert.That(y.ToDoubleArray(), Is.EqualTo(new double[] { 4.5, 6.5, 0.5, 11.5, 14.5, 3.5, 20.5, 23.5, 6.5 }));
        // dy all ones: dx[s] counts the weights of the outputs reading s (the one below with 1, the one to the left with 2);
        // dweight[u,v] sums x over the window shifted by (u − 1, v − 1); dbias counts the tokens.
        using var dy = Cpu.FromArray(Enumerable.Repeat(1.0, 9).ToArray(), new Shape(1, 3, 3, 1), DType.F64);
        using var dx = Cpu.Zeros(x.Shape, DType.F64);
        using var dw = Cpu.Zeros(w.Shape, DType.F64);
        using var db = Cpu.Zeros(new Shape(1), DType.F64);
        DepthwiseConv.Backward(x, w, dy, dx, dw, db);
        Assert.That(dx.ToDoubleArray(), Is.EqualTo(new double[] { 1, 3, 3, 1, 3, 3, 0, 2, 2 }));
        Assert.That(dw.ToDoubleArray(), Is.EqualTo(new double[] { 12, 21, 16, 27, 45, 33, 24, 39, 28 }));
        Assert.That(db.ToDoubleArray(), Is.EqualTo(new double[] { 9 }));
    }

    [TestCaseSource(nameof(Configs))]
    public void Gradients_match_finite_differences(int batch, int height, int width, int channels, int filters, int kh, int kw, bool withBias)
    {
        Shape[] shapes = withBias
            ? [new Shape(batch, height, width, channels), new Shape(filters, 1, kh, kw), new Shape(filters)]
            : [new Shape(batch, height, width, channels), new Shape(filters, 1, kh, kw)];
        double error = OpGradientCheck.MaxError(
            shapes,
            t => DepthwiseConv.Forward(t[0], t[1], withBias ? t[2] : null),
            (t, dy, g) => DepthwiseConv.Backward(t[0], t[1], dy, g[0], g[1], withBias ? g[2] : null));
        GradientCheck.AssertClose($"depthwiseconv2d B={batch} H={height} W={width} C={channels} Cw={filters} k={kh}x{kw} bias={withBias}", error);
    }

    [Test]
    public void Filter_gradients_reduce_over_many_tokens()
    {
        // 680 tokens, more than the partial sums: several tokens per chunk, a ragged last chunk, chunks crossing image rows.
        double error = OpGradientCheck.MaxError(
            [new Shape(2, 20, 17, 4), new Shape(2, 1, 3, 5), new Shape(2)],
            t => DepthwiseConv.Forward(t[0], t[1], t[2]),
            (t, dy, g) => DepthwiseConv.Backward(t[0], t[1], dy, null, g[1], g[2]),
            differentiable: [false, true, true]);
        GradientCheck.AssertClose("depthwiseconv2d B=2 H=20 W=17 C=4 Cw=2 k=3x5 filter gradients", error);
    }

    [Test]
    public void Backward_adds_into_the_gradients_and_skips_null_ones()
    {
        using var x = Cpu.FromArray(TestData.Normal(65, 2 * 4 * 3 * 6), new Shape(2, 4, 3, 6), DType.F64);
        using var w = Cpu.FromArray(TestData.Normal(66, 3 * 3 * 5), new Shape(3, 1, 3, 5), DType.F64);
        using var dy = Cpu.FromArray(TestData.Normal(67, 2 * 4 * 3 * 6), new Shape(2, 4, 3, 6), DType.F64);
        var start = (TestData.Normal(68, x.Shape.ElementCount), TestData.Normal(69, w.Shape.ElementCount), TestData.Normal(70, 3));
        using var dx = Cpu.FromArray(start.Item1, x.Shape, DType.F64);
        using var dw = Cpu.FromArray(start.Item2, w.Shape, DType.F64);
        using var db = Cpu.FromArray(start.Item3, new Shape(3), DType.F64);
        using var dx0 = Cpu.Zeros(x.Shape, DType.F64);
        using var dw0 = Cpu.Zeros(w.Shape, DType.F64);
        using var db0 = Cpu.Zeros(new Shape(3), DType.F64);
        DepthwiseConv.Backward(x, w, dy, dx0, dw0, db0);
        var once = (dx0.ToDoubleArray(), dw0.ToDoubleArray(), db0.ToDoubleArray());
        DepthwiseConv.Backward(x, w, dy, dx, null, null);
        DepthwiseConv.Backward(x, w, dy, null, dw, null);
        DepthwiseConv.Backward(x, w, dy, null, null, db);
        DepthwiseConv.Backward(x, w, dy, dx, dw, db);
        Assert.That(dx.ToDoubleArray(), Is.EqualTo(start.Item1.Select((v, i) => v + (2 * once.Item1[i]))).Within(1e-12));
        Assert.That(dw.ToDoubleArray(), Is.EqualTo(start.Item2.Select((v, i) => v + (2 * once.Item2[i]))).Within(1e-11));
        Assert.That(db.ToDoubleArray(), Is.EqualTo(start.Item3.Select((v, i) => v + (2 * once.Item3[i]))).Within(1e-11));
    }

    [TestCase(DType.F64)]
    [TestCase(DType.F32)]
    public void One_image_row_under_a_one_row_kernel_is_the_1d_form_bit_for_bit(DType dtype)
    {
        // [B, T, C] with weight [Cw, 1, k] against [B, 1, T, C] with weight [Cw, 1, 1, k].
        const int B = 2, T = 37, C = 12, F = 4, K = 5;
        var x = TestData.Normal(71, B * T * C);
        var w = TestData.Normal(72, F * K);
        var b = TestData.Normal(73, F);
        var dy = TestData.Normal(74, B * T * C);
        double[][] Run(Shape xs, Shape ws)
        {
            using var tx = Cpu.FromArray(x, xs, dtype);
            using var tw = Cpu.FromArray(w, ws, dtype);
            using var tb = Cpu.FromArray(b, new Shape(F), dtype);
            using var tdy = Cpu.FromArray(dy, xs, dtype);
            using var y = DepthwiseConv.Forward(tx, tw, tb);
            using var dx = Cpu.FromArray(TestData.Normal(75, B * T * C), xs, dtype);
            using var dw = Cpu.FromArray(TestData.Normal(76, F * K), ws, dtype);
            using var db = Cpu.FromArray(TestData.Normal(77, F), new Shape(F), dtype);
            DepthwiseConv.Backward(tx, tw, tdy, dx, dw, db);
            return [y.ToDoubleArray(), dx.ToDoubleArray(), dw.ToDoubleArray(), db.ToDoubleArray()];
        }
        var oneD = Run(new Shape(B, T, C), new Shape(F, 1, K));
        var twoD = Run(new Shape(B, 1, T, C), new Shape(F, 1, 1, K));
        string[] names = ["y", "dx", "dweight", "dbias"];
        for (int i = 0; i < names.Length; i++)
        {
            Assert.That(twoD[i], Is.EqualTo(oneD[i]), names[i]);
        }
    }

    [TestCase(DType.F32)]
    [TestCase(DType.F16)]
    [TestCase(DType.BF16)]
    public void Lower_precision_paths_match_double(DType dtype)
    {
        // Stage-1 like: 14×14 tokens, C 16, flatten's 5×5 filters shared by two heads; inputs representable in dtype,
        // so the difference is the path's own rounding.
        var xs = new Shape(2, 14, 14, 16);
        var ws = new Shape(8, 1, 5, 5);
        var x = TestData.Representable(TestData.NormalSingle(78, xs.ElementCount), dtype);
        var w = TestData.Representable(TestData.NormalSingle(79, ws.ElementCount, 0.2), dtype);
        var b = TestData.Representable(TestData.NormalSingle(80, 8), dtype);
        var dy = TestData.Representable(TestData.NormalSingle(81, xs.ElementCount), dtype);
        float[][] Run(DType type)
        {
            using var tx = Cpu.FromArray(x, xs, type);
            using var tw = Cpu.FromArray(w, ws, type);
            using var tb = Cpu.FromArray(b, new Shape(8), type);
            using var tdy = Cpu.FromArray(dy, xs, type);
            using var y = DepthwiseConv.Forward(tx, tw, tb);
            using var dx = Cpu.Zeros(xs, type);
            using var dw = Cpu.Zeros(ws, type);
            using var db = Cpu.Zeros(new Shape(8), type);
            DepthwiseConv.Backward(tx, tw, tdy, dx, dw, db);
            return [y.ToArray(), dx.ToArray(), dw.ToArray(), db.ToArray()];
        }
        var reference = Run(DType.F64);
        var actual = Run(dtype);
        const string shape = "[2,14,14,16] Cw=8 k=5x5";
        Precision.AssertClose($"depthwiseconv2d cpu {dtype} vs f64 y", dtype, shape, reference[0], actual[0]);
        // The gradients were written from zero: each is its own contribution.
        Precision.AssertAdded($"depthwiseconv2d cpu {dtype} vs f64 dx", dtype, shape, null, reference[1], actual[1]);
        Precision.AssertAdded($"depthwiseconv2d cpu {dtype} vs f64 dweight", dtype, shape, null, reference[2], actual[2]);
        Precision.AssertAdded($"depthwiseconv2d cpu {dtype} vs f64 dbias", dtype, shape, null, reference[3], actual[3]);
    }

    [Test]
    public void Bad_arguments_are_rejected_with_expected_and_actual()
    {
        using var x = Cpu.Zeros(new Shape(2, 4, 5, 6));
        using var x3 = Cpu.Zeros(new Shape(2, 5, 6));
        using var w = Cpu.Zeros(new Shape(3, 1, 3, 3));
        using var w3 = Cpu.Zeros(new Shape(3, 1, 3));
        using var evenH = Cpu.Zeros(new Shape(3, 1, 2, 3));
        using var evenW = Cpu.Zeros(new Shape(3, 1, 3, 4));
        using var notDividing = Cpu.Zeros(new Shape(4, 1, 3, 3));
        using var twoInputs = Cpu.Zeros(new Shape(3, 2, 3, 3));
        using var wrongBias = Cpu.Zeros(new Shape(6));
        using var rank5 = Cpu.Zeros(new Shape(1, 2, 4, 5, 6));
        using var dy = Cpu.Zeros(new Shape(2, 4, 5, 6));
        using var wrongDy = Cpu.Zeros(new Shape(2, 5, 4, 6));
        LinearTests.AssertArgument(() => DepthwiseConv.Forward(x, w3, null), "weight", "[Cw, 1, kh, kw] (rank 4", "[3, 1, 3]");
        LinearTests.AssertArgument(() => DepthwiseConv.Forward(x3, w, null), "weight", "[Cw, 1, k] (rank 3", "[3, 1, 3, 3]");
        LinearTests.AssertArgument(() => DepthwiseConv.Backward(x, w3, dy, null, null, null), "weight", "[Cw, 1, kh, kw]", "[3, 1, 3]");
        LinearTests.AssertArgument(() => DepthwiseConv.Forward(x, evenH, null), "weight", "odd kernel size kh", "2");
        LinearTests.AssertArgument(() => DepthwiseConv.Forward(x, evenW, null), "weight", "odd kernel size kw", "4");
        LinearTests.AssertArgument(() => DepthwiseConv.Forward(x, notDividing, null), "weight", "dividing C = 6", "4");
        LinearTests.AssertArgument(() => DepthwiseConv.Forward(x, twoInputs, null), "weight", "[Cw, 1, kh, kw]", "[3, 2, 3, 3]");
        LinearTests.AssertArgument(() => DepthwiseConv.Forward(x, w, wrongBias), "bias", "[3]", "[6]");
        LinearTests.AssertArgument(() => DepthwiseConv.Forward(rank5, w, null), "x", "rank 4 [B, H, W, C]", "[1, 2, 4, 5, 6]");
        LinearTests.AssertArgument(() => DepthwiseConv.Forward(x, w, null, x), "y", "distinct from x", "same tensor");
        LinearTests.AssertArgument(() => DepthwiseConv.Forward(x, w, null, wrongDy), "y", "[2, 4, 5, 6]", "[2, 5, 4, 6]");
        LinearTests.AssertArgument(() => DepthwiseConv.Backward(x, w, wrongDy, null, null, null), "dy", "[2, 4, 5, 6]", "[2, 5, 4, 6]");
        LinearTests.AssertArgument(() => DepthwiseConv.Backward(x, w, dy, wrongDy, null, null), "dx", "[2, 4, 5, 6]", "[2, 5, 4, 6]");
        LinearTests.AssertArgument(() => DepthwiseConv.Backward(x, w, dy, null, notDividing, null), "dweight", "[3, 1, 3, 3]", "[4, 1, 3, 3]");
        LinearTests.AssertArgument(() => DepthwiseConv.Backward(x, w, dy, null, null, wrongBias), "dbias", "[3]", "[6]");
    }

    /// <summary>The definition as plain loops: y, and dx, dweight, dbias from zero given dy.</summary>
    private static class Loops
    {
        public static (double[] Y, double[] Dx, double[] Dw, double[] Db) Run(
            double[] x, double[] w, double[]? bias, double[] dy, int batch, int height, int width, int channels, int filters, int kh, int kw)
        {
            var y = new double[x.Length];
            var dx = new double[x.Length];
            var dw = new double[w.Length];
            var db = new double[filters];
            int At(int b, int i, int j, int c) => (((((b * height) + i) * width) + j) * channels) + c;
            for (int b = 0; b < batch; b++)
            {
                for (int i = 0; i < height; i++)
                {
                    for (int j = 0; j < width; j++)
                    {
                        for (int c = 0; c < channels; c++)
                        {
                            int f = c % filters;
                            double g = dy[At(b, i, j, c)];
                            double sum = bias is null ? 0 : bias[f];
                            db[f] += g;
                            for (int u = 0; u < kh; u++)
                            {
                                for (int v = 0; v < kw; v++)
                                {
                                    int si = i + u - (kh / 2), sj = j + v - (kw / 2);
                                    if (si < 0 || si >= height || sj < 0 || sj >= width)
                                    {
                                        continue;
                                    }
                                    int tap = (((f * kh) + u) * kw) + v;
                                    sum += w[tap] * x[At(b, si, sj, c)];
                                    dx[At(b, si, sj, c)] += w[tap] * g;
                                    dw[tap] += g * x[At(b, si, sj, c)];
                                }
                            }
                            y[At(b, i, j, c)] = sum;
                        }
                    }
                }
            }
            return (y, dx, dw, db);
        }
    }
}

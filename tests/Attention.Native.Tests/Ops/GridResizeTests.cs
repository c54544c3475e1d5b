using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Ops;

public class GridResizeTests
{
    private static readonly Backend Cpu = Backend.Cpu;

    // (B, inH, inW, outH, outW, C): up both axes, down both, the identity, 1-D linear (1×3 → 1×5), a column replicated
    // (W 1 → 6), one cell to many, up on one axis and down on the other, downsampling by more than two cells per output.
    private static readonly object[] Configs =
    [
        new object[] { 2, 2, 2, 4, 4, 3 },
        new object[] { 1, 5, 7, 3, 4, 2 },
        new object[] { 2, 3, 4, 3, 4, 2 },
        new object[] { 2, 1, 3, 1, 5, 3 },
        new object[] { 2, 4, 1, 4, 6, 3 },
        new object[] { 1, 1, 1, 3, 2, 2 },
        new object[] { 1, 6, 5, 9, 2, 3 },
        new object[] { 2, 11, 3, 2, 8, 1 },
    ];

    /// <summary>Output o's cells and weights along one axis, from docs/vision-forms.md §0 in double.</summary>
    private static (int I0, int I1, double L) Source(int o, int inSize, int outSize)
    {
        double src = Math.Max(((double)inSize / outSize * (o + 0.5)) - 0.5, 0);
        int i0 = (int)Math.Floor(src);
        return (i0, Math.Min(i0 + 1, inSize - 1), src - i0);
    }

    /// <summary>The definition as loops over [B, inH·inW, C] → [B, outH·outW, C].</summary>
    internal static double[] Loops(double[] x, int batch, int inH, int inW, int outH, int outW, int channels)
    {
        var y = new double[batch * outH * outW * channels];
        for (int b = 0; b < batch; b++)
        {
            for (int i = 0; i < outH; i++)
            {
                var (r0, r1, u) = Source(i, inH, outH);
                for (int j = 0; j < outW; j++)
                {
                    var (c0, c1, v) = Source(j, inW, outW);
                    for (int c = 0; c < channels; c++)
                    {
                        double At(int r, int k) => x[(((((b * inH) + r) * inW) + k) * channels) + c];
                        y[(((((b * outH) + i) * outW) + j) * channels) + c] =
                            ((1 - u) * (((1 - v) * At(r0, c0)) + (v * At(r0, c1)))) + (u * (((1 - v) * At(r1, c0)) + (v * At(r1, c1))));
                    }
                }
            }
        }
        return y;
    }

    /// <summary>The gradient as loops: each output sends dy times each of its four weights to the cell that weight belongs to.</summary>
    private static double[] BackwardLoops(double[] dy, int batch, int inH, int inW, int outH, int outW, int channels)
    {
        var dx = new double[batch * inH * inW * channels];
        for (int b = 0; b < batch; b++)
        {
            for (int i = 0; i < outH; i++)
            {
                var (r0, r1, u) = Source(i, inH, outH);
                for (int j = 0; j < outW; j++)
                {
                    var (c0, c1, v) = Source(j, inW, outW);
                    for (int c = 0; c < channels; c++)
                    {
                        double g = dy[(((((b * outH) + i) * outW) + j) * channels) + c];
                        void Send(int r, int k, double w) => dx[(((((b * inH) + r) * inW) + k) * channels) + c] += w * g;
                        Send(r0, c0, (1 - u) * (1 - v));
                        Send(r0, c1, (1 - u) * v);
                        Send(r1, c0, u * (1 - v));
                        Send(r1, c1, u * v);
                    }
                }
            }
        }
        return dx;
    }

    [TestCaseSource(nameof(Configs))]
    public void Forward_equals_the_definition(int batch, int inH, int inW, int outH, int outW, int channels)
    {
        var x = TestData.Normal(71, batch * inH * inW * channels);
        using var tx = Cpu.FromArray(x, new Shape(batch, inH * inW, channels), DType.F64);
        using var y = GridResize.Forward(tx, inH, inW, outH, outW);
        Assert.That(y.Shape, Is.EqualTo(new Shape(batch, outH * outW, channels)));
        Assert.That(y.ToDoubleArray(), Is.EqualTo(Loops(x, batch, inH, inW, outH, outW, channels)).Within(1e-12));
        // The in-place form writes the same into a given tensor.
        using var given = Cpu.FromArray(TestData.Normal(72, y.Shape.ElementCount), y.Shape, DType.F64);
        GridResize.Forward(tx, inH, inW, given, outH, outW);
        Assert.That(given.ToDoubleArray(), Is.EqualTo(y.ToDoubleArray()));
    }

    [TestCaseSource(nameof(Configs))]
    public void Backward_equals_the_definition_and_is_the_transpose(int batch, int inH, int inW, int outH, int outW, int channels)
    {
        var xs = new Shape(batch, inH * inW, channels);
        var ys = new Shape(batch, outH * outW, channels);
        var x = TestData.Normal(73, xs.ElementCount);
        var dy = TestData.Normal(74, ys.ElementCount);
        using var tx = Cpu.FromArray(x, xs, DType.F64);
        using var tdy = Cpu.FromArray(dy, ys, DType.F64);
        using var dx = Cpu.Zeros(xs, DType.F64);
        GridResize.Backward(tdy, outH, outW, dx, inH, inW);
        var g = dx.ToDoubleArray();
        Assert.That(g, Is.EqualTo(BackwardLoops(dy, batch, inH, inW, outH, outW, channels)).Within(1e-12));
        // ⟨dy, F x⟩ = ⟨Bᵀ dy, x⟩.
        using var y = GridResize.Forward(tx, inH, inW, outH, outW);
        double left = dy.Zip(y.ToDoubleArray(), (a, b) => a * b).Sum();
        double right = g.Zip(x, (a, b) => a * b).Sum();
        Assert.That(right, Is.EqualTo(left).Within(1e-12 * (1 + Math.Abs(left))));
    }

    [Test]
    public void Worked_values_are_pytorchs()
    {
        // 2×2 of 1 + 2j + 4i to 4×4: sources (o + 0.5)/2 − 0.5 clamped to the grid, positions 0, 0.25, 0.75, 1 per axis,
        // so y[i, j] = 1 + 2·pos[j] + 4·pos[i]; the second channel holds −10× the first.
        double[] pos = [0, 0.25, 0.75, 1];
        var expected = new List<double>();
        foreach (double pi in pos)
        {
            foreach (double pj in pos)
            {
                double v = 1 + (2 * pj) + (4 * pi);
                expected.AddRange([v, -10 * v]);
            }
        }
        AssertResized([1, -10, 3, -30, 5, -50, 7, -70], 2, 2, 2, 4, 4, [.. expected], "2×2 → 4×4");
        // 1-D linear 0, 3, 6 to 5: sources 0.6·(o + 0.5) − 0.5 = (−0.2 → 0), 0.4, 1, 1.6, 2.2 (its i1 clamped to the last cell).
        AssertResized([0, 3, 6], 1, 1, 3, 1, 5, [0, 1.2, 3, 4.8, 6], "linear 3 → 5");
        // Downsampling 5 → 2 reads two cells only (no antialias): sources 2.5·(o + 0.5) − 0.5 = 0.75, 3.25.
        AssertResized([0, 10, 20, 30, 40], 1, 5, 1, 2, 1, [7.5, 32.5], "5 → 2 over rows");
        // The identity, exactly.
        double[] cells = [0.1, -2.5, 3.75, 1e-7, 42, -0.3];
        AssertResized(cells, 1, 2, 3, 2, 3, cells, "2×3 → 2×3", exact: true);
        // A row bias over one column replicated over 3 columns (inW = 1: i0 = i1 = 0, weight 1 − λ + λ).
        AssertResized([1, 2], 1, 2, 1, 2, 3, [1, 1, 1, 2, 2, 2], "2×1 → 2×3");
    }

    private static void AssertResized(double[] x, int channels, int inH, int inW, int outH, int outW, double[] expected, string what, bool exact = false)
    {
        using var tx = Cpu.FromArray(x, new Shape(1, inH * inW, channels), DType.F64);
        using var y = GridResize.Forward(tx, inH, inW, outH, outW);
        Assert.That(y.ToDoubleArray(), exact ? Is.EqualTo(expected) : Is.EqualTo(expected).Within(1e-14), what);
    }

    [Test]
    public void Backward_adds_into_the_gradient()
    {
        using var dy = Cpu.FromArray(TestData.Normal(75, 2 * 12 * 3), new Shape(2, 12, 3), DType.F64);
        using var dx = Cpu.FromArray(TestData.Normal(76, 2 * 6 * 3), new Shape(2, 6, 3), DType.F64);
        var before = dx.ToDoubleArray();
        using var zero = Cpu.Zeros(new Shape(2, 6, 3), DType.F64);
        GridResize.Backward(dy, 3, 4, zero, 2, 3);
        GridResize.Backward(dy, 3, 4, dx, 2, 3);
        Assert.That(dx.ToDoubleArray(), Is.EqualTo(before.Zip(zero.ToDoubleArray(), (a, b) => a + b)).Within(1e-12));
    }

    [TestCase(DType.F32)]
    [TestCase(DType.BF16)]
    [TestCase(DType.F16)]
    public void Storage_types_match_double(DType dtype)
    {
        // 7×5 → 12×3: up on rows, down on columns.
        var xs = new Shape(2, 35, 16);
        var ys = new Shape(2, 36, 16);
        var x = TestData.Representable(TestData.NormalSingle(77, xs.ElementCount), dtype);
        var dy = TestData.Representable(TestData.NormalSingle(78, ys.ElementCount), dtype);
        var results = new Dictionary<DType, float[][]>();
        foreach (var t in new[] { DType.F64, dtype })
        {
            using var tx = Cpu.FromArray(x, xs, t);
            using var tdy = Cpu.FromArray(dy, ys, t);
            using var y = GridResize.Forward(tx, 7, 5, 12, 3);
            using var dx = Cpu.Zeros(xs, t);
            GridResize.Backward(tdy, 12, 3, dx, 7, 5);
            results[t] = [y.ToArray(), dx.ToArray()];
        }
        Precision.AssertClose("grid resize cpu y", dtype, "7×5 → 12×3", results[DType.F64][0], results[dtype][0]);
        Precision.AssertAdded("grid resize cpu dx", dtype, "7×5 → 12×3", null, results[DType.F64][1], results[dtype][1]);
    }

    [Test]
    public void Bad_arguments_are_rejected_with_expected_and_actual()
    {
        using var x = Cpu.Zeros(new Shape(2, 6, 3));
        using var y = Cpu.Zeros(new Shape(2, 12, 3));
        using var rank2 = Cpu.Zeros(new Shape(6, 3));
        using var wrongChannels = Cpu.Zeros(new Shape(2, 12, 2));
        using var wrongBatch = Cpu.Zeros(new Shape(1, 12, 3));
        using var f64 = Cpu.Zeros(new Shape(2, 12, 3), DType.F64);
        LinearTests.AssertArgument(() => GridResize.Forward(x, 2, 4, 3, 4), "x", "[B, 8, C]", "[2, 6, 3]");
        LinearTests.AssertArgument(() => GridResize.Forward(rank2, 2, 3, 3, 4), "x", "[B, 6, C]", "[6, 3]");
        LinearTests.AssertArgument(() => GridResize.Forward(x, 0, 3, 3, 4), "inHeight", "≥ 1", "0");
        LinearTests.AssertArgument(() => GridResize.Forward(x, 2, -3, 3, 4), "inWidth", "≥ 1", "-3");
        LinearTests.AssertArgument(() => GridResize.Forward(x, 2, 3, 0, 4), "outHeight", "≥ 1", "0");
        LinearTests.AssertArgument(() => GridResize.Forward(x, 2, 3, 3, 0), "outWidth", "≥ 1", "0");
        LinearTests.AssertArgument(() => GridResize.Forward(x, 2, 3, 65536, 65536), "outWidth", "at most", "65536×65536");
        LinearTests.AssertArgument(() => GridResize.Forward(x, 2, 3, y, 3, 3), "y", "[2, 9, 3]", "[2, 12, 3]");
        LinearTests.AssertArgument(() => GridResize.Forward(x, 2, 3, wrongChannels, 3, 4), "y", "[2, 12, 3]", "[2, 12, 2]");
        LinearTests.AssertArgument(() => GridResize.Forward(x, 2, 3, wrongBatch, 3, 4), "y", "[2, 12, 3]", "[1, 12, 3]");
        LinearTests.AssertArgument(() => GridResize.Forward(x, 2, 3, f64, 3, 4), "y", "F32", "F64");
        LinearTests.AssertArgument(() => GridResize.Forward(x, 2, 3, x, 2, 3), "y", "distinct from x", "same tensor");
        LinearTests.AssertArgument(() => GridResize.Backward(y, 3, 4, y, 2, 3), "dx", "[B, 6, C]", "[2, 12, 3]");
        LinearTests.AssertArgument(() => GridResize.Backward(wrongChannels, 3, 4, x, 2, 3), "dy", "[2, 12, 3]", "[2, 12, 2]");
        LinearTests.AssertArgument(() => GridResize.Backward(y, 4, 4, x, 2, 3), "dy", "[2, 16, 3]", "[2, 12, 3]");
        LinearTests.AssertArgument(() => GridResize.Backward(f64, 3, 4, x, 2, 3), "dy", "F32", "F64");
        LinearTests.AssertArgument(() => GridResize.Backward(x, 2, 3, x, 2, 3), "dx", "distinct from dy", "same tensor");
    }
}

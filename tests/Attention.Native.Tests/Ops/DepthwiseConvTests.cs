using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Ops;

public class DepthwiseConvTests
{
    private static readonly Backend Cpu = Backend.Cpu;

    // (B, T, C, Cw, k, bias): Cw = C (agent), Cw < C (flatten's shared filters), T = 1, k = 1, 3, 5, k > T.
    private static readonly object[] Configs =
    [
        new object[] { 2, 6, 4, 4, 3, true },
        new object[] { 1, 5, 6, 3, 5, true },
        new object[] { 2, 1, 4, 2, 3, true },
        new object[] { 1, 4, 3, 3, 1, false },
        new object[] { 1, 3, 4, 1, 5, true },
        new object[] { 3, 7, 6, 2, 3, false },
    ];

    [TestCaseSource(nameof(Configs))]
    public void Forward_equals_the_definition(int batch, int time, int channels, int filters, int kernel, bool withBias)
    {
        var x = TestData.Normal(51, batch * time * channels);
        var w = TestData.Normal(52, filters * kernel);
        var b = TestData.Normal(53, filters);
        using var tx = Cpu.FromArray(x, new Shape(batch, time, channels), DType.F64);
        using var tw = Cpu.FromArray(w, new Shape(filters, 1, kernel), DType.F64);
        using var tb = Cpu.FromArray(b, new Shape(filters), DType.F64);
        using var y = DepthwiseConv.Forward(tx, tw, withBias ? tb : null);
        var expected = new double[batch * time * channels];
        int pad = (kernel - 1) / 2;
        for (int n = 0; n < batch; n++)
        {
            for (int t = 0; t < time; t++)
            {
                for (int c = 0; c < channels; c++)
                {
                    int f = c % filters;
                    double sum = withBias ? b[f] : 0;
                    for (int j = 0; j < kernel; j++)
                    {
                        int source = t + j - pad;
                        if (source >= 0 && source < time)
                        {
                            sum += w[(f * kernel) + j] * x[(((n * time) + source) * channels) + c];
                        }
                    }
                    expected[(((n * time) + t) * channels) + c] = sum;
                }
            }
        }
        Assert.That(y.Shape, Is.EqualTo(tx.Shape));
        Assert.That(y.ToDoubleArray(), Is.EqualTo(expected).Within(1e-12));
    }

    [TestCaseSource(nameof(Configs))]
    public void Gradients_match_finite_differences(int batch, int time, int channels, int filters, int kernel, bool withBias)
    {
        Shape[] shapes = withBias
            ? [new Shape(batch, time, channels), new Shape(filters, 1, kernel), new Shape(filters)]
            : [new Shape(batch, time, channels), new Shape(filters, 1, kernel)];
        double error = OpGradientCheck.MaxError(
            shapes,
            t => DepthwiseConv.Forward(t[0], t[1], withBias ? t[2] : null),
            (t, dy, g) => DepthwiseConv.Backward(t[0], t[1], dy, g[0], g[1], withBias ? g[2] : null));
        GradientCheck.AssertClose($"depthwiseconv B={batch} T={time} C={channels} Cw={filters} k={kernel} bias={withBias}", error);
    }

    [Test]
    public void Filter_gradients_reduce_over_many_rows()
    {
        // More rows than partial sums: several rows per chunk, and a ragged last chunk.
        var shape = new Shape(3, 301, 4);
        double error = OpGradientCheck.MaxError(
            [shape, new Shape(2, 1, 3), new Shape(2)],
            t => DepthwiseConv.Forward(t[0], t[1], t[2]),
            (t, dy, g) => DepthwiseConv.Backward(t[0], t[1], dy, null, g[1], g[2]),
            differentiable: [false, true, true]);
        GradientCheck.AssertClose("depthwiseconv B=3 T=301 C=4 Cw=2 k=3 filter gradients", error);
    }

    [Test]
    public void Backward_adds_into_the_gradients_and_skips_null_ones()
    {
        using var x = Cpu.FromArray(TestData.Normal(54, 2 * 5 * 6), new Shape(2, 5, 6), DType.F64);
        using var w = Cpu.FromArray(TestData.Normal(55, 3 * 3), new Shape(3, 1, 3), DType.F64);
        using var dy = Cpu.FromArray(TestData.Normal(56, 2 * 5 * 6), new Shape(2, 5, 6), DType.F64);
        using var dx = Cpu.Zeros(x.Shape, DType.F64);
        using var dw = Cpu.Zeros(w.Shape, DType.F64);
        using var db = Cpu.Zeros(new Shape(3), DType.F64);
        DepthwiseConv.Backward(x, w, dy, dx, dw, db);
        var once = (dx.ToDoubleArray(), dw.ToDoubleArray(), db.ToDoubleArray());
        DepthwiseConv.Backward(x, w, dy, dx, null, null);
        DepthwiseConv.Backward(x, w, dy, null, dw, null);
        DepthwiseConv.Backward(x, w, dy, null, null, db);
        Assert.That(dx.ToDoubleArray(), Is.EqualTo(once.Item1.Select(v => 2 * v)).Within(1e-12));
        Assert.That(dw.ToDoubleArray(), Is.EqualTo(once.Item2.Select(v => 2 * v)).Within(1e-12));
        Assert.That(db.ToDoubleArray(), Is.EqualTo(once.Item3.Select(v => 2 * v)).Within(1e-12));
    }

    [Test]
    public void Float_path_matches_double()
    {
        var xs = new Shape(2, 40, 12);
        var ws = new Shape(4, 1, 5);
        var x = TestData.Normal(57, xs.ElementCount);
        var w = TestData.Normal(58, ws.ElementCount);
        var b = TestData.Normal(59, 4);
        var dy = TestData.Normal(60, xs.ElementCount);
        var results = new Dictionary<DType, float[][]>();
        foreach (var dtype in new[] { DType.F64, DType.F32 })
        {
            using var tx = Cpu.FromArray(x, xs, dtype);
            using var tw = Cpu.FromArray(w, ws, dtype);
            using var tb = Cpu.FromArray(b, new Shape(4), dtype);
            using var tdy = Cpu.FromArray(dy, xs, dtype);
            using var y = DepthwiseConv.Forward(tx, tw, tb);
            using var dx = Cpu.Zeros(xs, dtype);
            using var dw = Cpu.Zeros(ws, dtype);
            using var db = Cpu.Zeros(new Shape(4), dtype);
            DepthwiseConv.Backward(tx, tw, tdy, dx, dw, db);
            results[dtype] = [y.ToArray(), dx.ToArray(), dw.ToArray(), db.ToArray()];
        }
        string[] names = ["y", "dx", "dweight", "dbias"];
        for (int i = 0; i < names.Length; i++)
        {
            // y is an output; the gradients were written from zero: each is its own contribution.
            if (i == 0)
            {
                Precision.AssertClose($"depthwiseconv cpu f32 vs f64 {names[i]}", DType.F32, "[2,40,12] Cw=4 k=5", results[DType.F64][i], results[DType.F32][i]);
            }
            else
            {
                Precision.AssertAdded($"depthwiseconv cpu f32 vs f64 {names[i]}", DType.F32, "[2,40,12] Cw=4 k=5", null, results[DType.F64][i], results[DType.F32][i]);
            }
        }
    }

    [Test]
    public void Bad_arguments_are_rejected_with_expected_and_actual()
    {
        using var x = Cpu.Zeros(new Shape(2, 5, 6));
        using var w = Cpu.Zeros(new Shape(3, 1, 3));
        using var evenKernel = Cpu.Zeros(new Shape(3, 1, 4));
        using var notDividing = Cpu.Zeros(new Shape(4, 1, 3));
        using var twoInputs = Cpu.Zeros(new Shape(3, 2, 3));
        using var wrongBias = Cpu.Zeros(new Shape(6));
        using var rank2 = Cpu.Zeros(new Shape(5, 6));
        using var dy = Cpu.Zeros(new Shape(2, 5, 6));
        using var wrongDy = Cpu.Zeros(new Shape(2, 4, 6));
        LinearTests.AssertArgument(() => DepthwiseConv.Forward(x, evenKernel, null), "weight", "odd kernel size", "4");
        LinearTests.AssertArgument(() => DepthwiseConv.Forward(x, notDividing, null), "weight", "dividing C = 6", "4");
        LinearTests.AssertArgument(() => DepthwiseConv.Forward(x, twoInputs, null), "weight", "[Cw, 1, k]", "[3, 2, 3]");
        LinearTests.AssertArgument(() => DepthwiseConv.Forward(x, w, wrongBias), "bias", "[3]", "[6]");
        LinearTests.AssertArgument(() => DepthwiseConv.Forward(rank2, w, null), "x", "rank 3", "[5, 6]");
        LinearTests.AssertArgument(() => DepthwiseConv.Forward(x, w, null, x), "y", "distinct from x", "same tensor");
        LinearTests.AssertArgument(() => DepthwiseConv.Backward(x, w, wrongDy, null, null, null), "dy", "[2, 5, 6]", "[2, 4, 6]");
        LinearTests.AssertArgument(() => DepthwiseConv.Backward(x, w, dy, wrongDy, null, null), "dx", "[2, 5, 6]", "[2, 4, 6]");
        LinearTests.AssertArgument(() => DepthwiseConv.Backward(x, w, dy, dy, null, null), "dx", "distinct from dy", "same tensor");
        LinearTests.AssertArgument(() => DepthwiseConv.Backward(x, w, dy, null, notDividing, null), "dweight", "[3, 1, 3]", "[4, 1, 3]");
        LinearTests.AssertArgument(() => DepthwiseConv.Backward(x, w, dy, null, null, wrongBias), "dbias", "[3]", "[6]");
    }
}

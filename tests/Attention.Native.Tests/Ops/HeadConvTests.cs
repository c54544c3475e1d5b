using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Ops;

public class HeadConvTests
{
    private static readonly Backend Cpu = Backend.Cpu;

    // (N, C_in, C_out, L, k, bias): kernel sizes 1, 3 and 5, L = 1, a kernel wider than L, one channel.
    private static readonly object[] Configs =
    [
        new object[] { 2, 3, 4, 7, 3, true },
        new object[] { 1, 2, 2, 5, 1, false },
        new object[] { 3, 2, 3, 1, 3, true },
        new object[] { 2, 4, 3, 6, 5, true },
        new object[] { 1, 1, 1, 3, 5, false },
        new object[] { 2, 3, 2, 9, 5, false },
    ];

    [TestCaseSource(nameof(Configs))]
    public void Forward_equals_the_definition(int count, int inChannels, int outChannels, int length, int kernel, bool withBias)
    {
        var x = TestData.Normal(41, count * inChannels * length);
        var w = TestData.Normal(42, outChannels * inChannels * kernel);
        var b = TestData.Normal(43, outChannels);
        using var tx = Cpu.FromArray(x, new Shape(count, inChannels, length), DType.F64);
        using var tw = Cpu.FromArray(w, new Shape(outChannels, inChannels, kernel), DType.F64);
        using var tb = Cpu.FromArray(b, new Shape(outChannels), DType.F64);
        using var y = HeadConv.Forward(tx, tw, withBias ? tb : null);
        Assert.That(y.Shape, Is.EqualTo(new Shape(count, outChannels, length)));
        var expected = new double[count * outChannels * length];
        int pad = (kernel - 1) / 2;
        for (int n = 0; n < count; n++)
        {
            for (int c = 0; c < outChannels; c++)
            {
                for (int l = 0; l < length; l++)
                {
                    double sum = withBias ? b[c] : 0;
                    for (int ci = 0; ci < inChannels; ci++)
                    {
                        for (int j = 0; j < kernel; j++)
                        {
                            int source = l + j - pad;
                            if (source >= 0 && source < length)
                            {
                                sum += w[(((c * inChannels) + ci) * kernel) + j] * x[(((n * inChannels) + ci) * length) + source];
                            }
                        }
                    }
                    expected[(((n * outChannels) + c) * length) + l] = sum;
                }
            }
        }
        Assert.That(y.ToDoubleArray(), Is.EqualTo(expected).Within(1e-12));
    }

    [TestCaseSource(nameof(Configs))]
    public void Gradients_match_finite_differences(int count, int inChannels, int outChannels, int length, int kernel, bool withBias)
    {
        Shape[] shapes = withBias
            ? [new Shape(count, inChannels, length), new Shape(outChannels, inChannels, kernel), new Shape(outChannels)]
            : [new Shape(count, inChannels, length), new Shape(outChannels, inChannels, kernel)];
        double error = OpGradientCheck.MaxError(
            shapes,
            t => HeadConv.Forward(t[0], t[1], withBias ? t[2] : null),
            (t, dy, g) => HeadConv.Backward(t[0], t[1], dy, g[0], g[1], withBias ? g[2] : null));
        GradientCheck.AssertClose($"headconv N={count} Cin={inChannels} Cout={outChannels} L={length} k={kernel} bias={withBias}", error);
    }

    [Test]
    public void Backward_adds_into_the_gradients_and_skips_null_ones()
    {
        using var x = Cpu.FromArray(TestData.Normal(44, 2 * 3 * 5), new Shape(2, 3, 5), DType.F64);
        using var w = Cpu.FromArray(TestData.Normal(45, 4 * 3 * 3), new Shape(4, 3, 3), DType.F64);
        using var dy = Cpu.FromArray(TestData.Normal(46, 2 * 4 * 5), new Shape(2, 4, 5), DType.F64);
        using var dx = Cpu.Zeros(x.Shape, DType.F64);
        using var dw = Cpu.Zeros(w.Shape, DType.F64);
        using var db = Cpu.Zeros(new Shape(4), DType.F64);
        HeadConv.Backward(x, w, dy, dx, dw, db);
        var once = (dx.ToDoubleArray(), dw.ToDoubleArray(), db.ToDoubleArray());
        HeadConv.Backward(x, w, dy, dx, null, null);
        HeadConv.Backward(x, w, dy, null, dw, null);
        HeadConv.Backward(x, w, dy, null, null, db);
        Assert.That(dx.ToDoubleArray(), Is.EqualTo(once.Item1.Select(v => 2 * v)).Within(1e-12));
        Assert.That(dw.ToDoubleArray(), Is.EqualTo(once.Item2.Select(v => 2 * v)).Within(1e-12));
        Assert.That(db.ToDoubleArray(), Is.EqualTo(once.Item3.Select(v => 2 * v)).Within(1e-12));
    }

    [Test]
    public void Float_path_matches_double()
    {
        var xs = new Shape(3, 4, 16);
        var ws = new Shape(5, 4, 3);
        var x = TestData.Normal(47, xs.ElementCount);
        var w = TestData.Normal(48, ws.ElementCount);
        var b = TestData.Normal(49, 5);
        var dy = TestData.Normal(50, 3 * 5 * 16);
        var results = new Dictionary<DType, float[][]>();
        foreach (var dtype in new[] { DType.F64, DType.F32 })
        {
            using var tx = Cpu.FromArray(x, xs, dtype);
            using var tw = Cpu.FromArray(w, ws, dtype);
            using var tb = Cpu.FromArray(b, new Shape(5), dtype);
            using var tdy = Cpu.FromArray(dy, new Shape(3, 5, 16), dtype);
            using var y = HeadConv.Forward(tx, tw, tb);
            using var dx = Cpu.Zeros(xs, dtype);
            using var dw = Cpu.Zeros(ws, dtype);
            using var db = Cpu.Zeros(new Shape(5), dtype);
            HeadConv.Backward(tx, tw, tdy, dx, dw, db);
            results[dtype] = [y.ToArray(), dx.ToArray(), dw.ToArray(), db.ToArray()];
        }
        string[] names = ["y", "dx", "dweight", "dbias"];
        for (int i = 0; i < names.Length; i++)
        {
            // y is an output; the gradients were written from zero: each is its own contribution.
            if (i == 0)
            {
                Precision.AssertClose($"headconv cpu f32 vs f64 {names[i]}", DType.F32, "[3,4,16] k=3", results[DType.F64][i], results[DType.F32][i]);
            }
            else
            {
                Precision.AssertAdded($"headconv cpu f32 vs f64 {names[i]}", DType.F32, "[3,4,16] k=3", null, results[DType.F64][i], results[DType.F32][i]);
            }
        }
    }

    [Test]
    public void Bad_arguments_are_rejected_with_expected_and_actual()
    {
        using var x = Cpu.Zeros(new Shape(2, 3, 5));
        using var w = Cpu.Zeros(new Shape(4, 3, 3));
        using var evenKernel = Cpu.Zeros(new Shape(4, 3, 2));
        using var wrongChannels = Cpu.Zeros(new Shape(4, 2, 3));
        using var wrongBias = Cpu.Zeros(new Shape(3));
        using var rank2 = Cpu.Zeros(new Shape(3, 5));
        using var dy = Cpu.Zeros(new Shape(2, 4, 5));
        using var wrongDy = Cpu.Zeros(new Shape(2, 4, 6));
        using var wrongDx = Cpu.Zeros(new Shape(2, 3, 6));
        using var wrongY = Cpu.Zeros(new Shape(2, 3, 5));
        using var f64 = Cpu.Zeros(new Shape(4, 3, 3), DType.F64);
        LinearTests.AssertArgument(() => HeadConv.Forward(x, evenKernel, null), "weight", "odd kernel size", "2");
        LinearTests.AssertArgument(() => HeadConv.Forward(x, wrongChannels, null), "weight", "[C_out, 3, k]", "[4, 2, 3]");
        LinearTests.AssertArgument(() => HeadConv.Forward(x, w, wrongBias), "bias", "[4]", "[3]");
        LinearTests.AssertArgument(() => HeadConv.Forward(rank2, w, null), "x", "rank 3", "[3, 5]");
        LinearTests.AssertArgument(() => HeadConv.Forward(x, f64, null), "weight", "F32", "F64");
        LinearTests.AssertArgument(() => HeadConv.Forward(x, w, null, wrongY), "y", "[2, 4, 5]", "[2, 3, 5]");
        LinearTests.AssertArgument(() => HeadConv.Backward(x, w, wrongDy, null, null, null), "dy", "[2, 4, 5]", "[2, 4, 6]");
        LinearTests.AssertArgument(() => HeadConv.Backward(x, w, dy, wrongDx, null, null), "dx", "[2, 3, 5]", "[2, 3, 6]");
        LinearTests.AssertArgument(() => HeadConv.Backward(x, w, dy, x, null, null), "dx", "distinct from x", "same tensor");
        LinearTests.AssertArgument(() => HeadConv.Backward(x, w, dy, null, wrongChannels, null), "dweight", "[4, 3, 3]", "[4, 2, 3]");
        LinearTests.AssertArgument(() => HeadConv.Backward(x, w, dy, null, null, wrongBias), "dbias", "[4]", "[3]");
    }
}

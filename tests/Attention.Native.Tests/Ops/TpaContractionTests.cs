using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Ops;

public class TpaContractionTests
{
    private static readonly Backend Cpu = Backend.Cpu;

    // (B, T, H, R, d): T = 1, rank 1, one head, width 1.
    private static readonly object[] Configs =
    [
        new object[] { 2, 3, 4, 2, 5 },
        new object[] { 1, 1, 1, 1, 3 },
        new object[] { 2, 2, 3, 1, 4 },
        new object[] { 1, 3, 1, 3, 2 },
        new object[] { 1, 2, 2, 4, 1 },
        new object[] { 2, 1, 3, 6, 7 },
    ];

    [TestCaseSource(nameof(Configs))]
    public void Forward_equals_the_definition(int batch, int time, int heads, int rank, int width)
    {
        var a = TestData.Normal(71, batch * time * heads * rank);
        var f = TestData.Normal(72, batch * time * rank * width);
        using var ta = Cpu.FromArray(a, new Shape(batch, time, heads, rank), DType.F64);
        using var tf = Cpu.FromArray(f, new Shape(batch, time, rank, width), DType.F64);
        using var y = TpaContraction.Forward(ta, tf);
        Assert.That(y.Shape, Is.EqualTo(new Shape(batch, time, heads, width)));
        var expected = new double[batch * time * heads * width];
        for (int token = 0; token < batch * time; token++)
        {
            for (int h = 0; h < heads; h++)
            {
                for (int e = 0; e < width; e++)
                {
                    double sum = 0;
                    for (int r = 0; r < rank; r++)
                    {
                        sum += a[(((token * heads) + h) * rank) + r] * f[(((token * rank) + r) * width) + e];
                    }
                    expected[(((token * heads) + h) * width) + e] = sum / rank;
                }
            }
        }
        Assert.That(y.ToDoubleArray(), Is.EqualTo(expected).Within(1e-12));
    }

    [TestCaseSource(nameof(Configs))]
    public void Gradients_match_finite_differences(int batch, int time, int heads, int rank, int width)
    {
        double error = OpGradientCheck.MaxError(
            [new Shape(batch, time, heads, rank), new Shape(batch, time, rank, width)],
            t => TpaContraction.Forward(t[0], t[1]),
            (t, dy, g) => TpaContraction.Backward(t[0], t[1], dy, g[0], g[1]));
        GradientCheck.AssertClose($"tpacontraction B={batch} T={time} H={heads} R={rank} d={width}", error);
    }

    [Test]
    public void Backward_adds_into_the_gradients_and_skips_null_ones()
    {
        using var a = Cpu.FromArray(TestData.Normal(73, 2 * 3 * 2 * 3), new Shape(2, 3, 2, 3), DType.F64);
        using var f = Cpu.FromArray(TestData.Normal(74, 2 * 3 * 3 * 4), new Shape(2, 3, 3, 4), DType.F64);
        using var dy = Cpu.FromArray(TestData.Normal(75, 2 * 3 * 2 * 4), new Shape(2, 3, 2, 4), DType.F64);
        using var da = Cpu.Zeros(a.Shape, DType.F64);
        using var df = Cpu.Zeros(f.Shape, DType.F64);
        TpaContraction.Backward(a, f, dy, da, df);
        var once = (da.ToDoubleArray(), df.ToDoubleArray());
        TpaContraction.Backward(a, f, dy, da, null);
        TpaContraction.Backward(a, f, dy, null, df);
        Assert.That(da.ToDoubleArray(), Is.EqualTo(once.Item1.Select(v => 2 * v)).Within(1e-12));
        Assert.That(df.ToDoubleArray(), Is.EqualTo(once.Item2.Select(v => 2 * v)).Within(1e-12));
    }

    [Test]
    public void Float_path_matches_double()
    {
        var aShape = new Shape(2, 5, 4, 3);
        var fShape = new Shape(2, 5, 3, 32);
        var yShape = new Shape(2, 5, 4, 32);
        var a = TestData.Normal(76, aShape.ElementCount);
        var f = TestData.Normal(77, fShape.ElementCount);
        var dy = TestData.Normal(78, yShape.ElementCount);
        var results = new Dictionary<DType, float[][]>();
        foreach (var dtype in new[] { DType.F64, DType.F32 })
        {
            using var ta = Cpu.FromArray(a, aShape, dtype);
            using var tf = Cpu.FromArray(f, fShape, dtype);
            using var tdy = Cpu.FromArray(dy, yShape, dtype);
            using var y = TpaContraction.Forward(ta, tf);
            using var da = Cpu.Zeros(aShape, dtype);
            using var df = Cpu.Zeros(fShape, dtype);
            TpaContraction.Backward(ta, tf, tdy, da, df);
            results[dtype] = [y.ToArray(), da.ToArray(), df.ToArray()];
        }
        string[] names = ["y", "da", "df"];
        for (int i = 0; i < names.Length; i++)
        {
            // y is an output; the gradients were written from zero: each is its own contribution.
            if (i == 0)
            {
                Precision.AssertClose($"tpacontraction cpu f32 vs f64 {names[i]}", DType.F32, "[2,5,4,3]x[2,5,3,32]", results[DType.F64][i], results[DType.F32][i]);
            }
            else
            {
                Precision.AssertAdded($"tpacontraction cpu f32 vs f64 {names[i]}", DType.F32, "[2,5,4,3]x[2,5,3,32]", null, results[DType.F64][i], results[DType.F32][i]);
            }
        }
    }

    [Test]
    public void Bad_arguments_are_rejected_with_expected_and_actual()
    {
        using var a = Cpu.Zeros(new Shape(2, 3, 4, 2));
        using var f = Cpu.Zeros(new Shape(2, 3, 2, 5));
        using var wrongRank = Cpu.Zeros(new Shape(2, 3, 3, 5));
        using var wrongTime = Cpu.Zeros(new Shape(2, 4, 2, 5));
        using var rank3 = Cpu.Zeros(new Shape(2, 3, 8));
        using var zeroRank = Cpu.Zeros(new Shape(2, 3, 4, 0));
        using var emptyF = Cpu.Zeros(new Shape(2, 3, 0, 5));
        using var dy = Cpu.Zeros(new Shape(2, 3, 4, 5));
        using var wrongDy = Cpu.Zeros(new Shape(2, 3, 4, 6));
        LinearTests.AssertArgument(() => TpaContraction.Forward(a, wrongRank), "f", "[2, 3, 2, d]", "[2, 3, 3, 5]");
        LinearTests.AssertArgument(() => TpaContraction.Forward(a, wrongTime), "f", "[2, 3, 2, d]", "[2, 4, 2, 5]");
        LinearTests.AssertArgument(() => TpaContraction.Forward(rank3, f), "a", "rank 4", "[2, 3, 8]");
        LinearTests.AssertArgument(() => TpaContraction.Forward(zeroRank, emptyF), "a", "R ≥ 1", "[2, 3, 4, 0]");
        LinearTests.AssertArgument(() => TpaContraction.Forward(a, f, wrongDy), "y", "[2, 3, 4, 5]", "[2, 3, 4, 6]");
        LinearTests.AssertArgument(() => TpaContraction.Backward(a, f, wrongDy, null, null), "dy", "[2, 3, 4, 5]", "[2, 3, 4, 6]");
        LinearTests.AssertArgument(() => TpaContraction.Backward(a, f, dy, f, null), "da", "[2, 3, 4, 2]", "[2, 3, 2, 5]");
        LinearTests.AssertArgument(() => TpaContraction.Backward(a, f, dy, null, f), "df", "distinct from f", "same tensor");
    }
}

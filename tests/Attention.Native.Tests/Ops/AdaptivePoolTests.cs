using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Ops;

public class AdaptivePoolTests
{
    private static readonly Backend Cpu = Backend.Cpu;

    // (B, T, C, n): T divisible by n, not divisible, n > T (overlapping windows), n = 1, n = T, T = 1.
    private static readonly object[] Configs =
    [
        new object[] { 2, 8, 3, 4 },
        new object[] { 2, 7, 3, 3 },
        new object[] { 1, 10, 2, 4 },
        new object[] { 2, 3, 2, 5 },
        new object[] { 1, 5, 4, 7 },
        new object[] { 2, 5, 3, 1 },
        new object[] { 1, 6, 2, 6 },
        new object[] { 3, 1, 2, 3 },
    ];

    [TestCaseSource(nameof(Configs))]
    public void Forward_equals_the_definition(int batch, int time, int channels, int outputs)
    {
        var x = TestData.Normal(61, batch * time * channels);
        using var tx = Cpu.FromArray(x, new Shape(batch, time, channels), DType.F64);
        using var y = AdaptivePool.Forward(tx, outputs);
        Assert.That(y.Shape, Is.EqualTo(new Shape(batch, outputs, channels)));
        var expected = new double[batch * outputs * channels];
        for (int b = 0; b < batch; b++)
        {
            for (int i = 0; i < outputs; i++)
            {
                // PyTorch's window: floor(i·T/n) … ceil((i+1)·T/n) − 1.
                int start = (int)Math.Floor(i * time / (double)outputs);
                int end = (int)Math.Ceiling((i + 1) * time / (double)outputs);
                for (int c = 0; c < channels; c++)
                {
                    double sum = 0;
                    for (int t = start; t < end; t++)
                    {
                        sum += x[(((b * time) + t) * channels) + c];
                    }
                    expected[(((b * outputs) + i) * channels) + c] = sum / (end - start);
                }
            }
        }
        Assert.That(y.ToDoubleArray(), Is.EqualTo(expected).Within(1e-12));
    }

    [TestCaseSource(nameof(Configs))]
    public void Gradients_match_finite_differences(int batch, int time, int channels, int outputs)
    {
        double error = OpGradientCheck.MaxError(
            [new Shape(batch, time, channels)],
            t => AdaptivePool.Forward(t[0], outputs),
            (t, dy, g) => AdaptivePool.Backward(dy, g[0]!));
        GradientCheck.AssertClose($"adaptivepool B={batch} T={time} C={channels} n={outputs}", error);
    }

    [Test]
    public void Backward_adds_into_the_gradient()
    {
        using var dy = Cpu.FromArray(TestData.Normal(62, 2 * 3 * 4), new Shape(2, 3, 4), DType.F64);
        using var dx = Cpu.Zeros(new Shape(2, 7, 4), DType.F64);
        AdaptivePool.Backward(dy, dx);
        var once = dx.ToDoubleArray();
        AdaptivePool.Backward(dy, dx);
        Assert.That(dx.ToDoubleArray(), Is.EqualTo(once.Select(v => 2 * v)).Within(1e-12));
    }

    [Test]
    public void Float_path_matches_double()
    {
        var xs = new Shape(2, 50, 16);
        var x = TestData.Normal(63, xs.ElementCount);
        var dy = TestData.Normal(64, 2 * 7 * 16);
        var results = new Dictionary<DType, float[][]>();
        foreach (var dtype in new[] { DType.F64, DType.F32 })
        {
            using var tx = Cpu.FromArray(x, xs, dtype);
            using var tdy = Cpu.FromArray(dy, new Shape(2, 7, 16), dtype);
            using var y = AdaptivePool.Forward(tx, 7);
            using var dx = Cpu.Zeros(xs, dtype);
            AdaptivePool.Backward(tdy, dx);
            results[dtype] = [y.ToArray(), dx.ToArray()];
        }
        Precision.AssertClose("adaptivepool cpu f32 vs f64 y", DType.F32, "[2,50,16] n=7", results[DType.F64][0], results[DType.F32][0]);
        Precision.AssertAdded("adaptivepool cpu f32 vs f64 dx", DType.F32, "[2,50,16] n=7", null, results[DType.F64][1], results[DType.F32][1]);
    }

    [Test]
    public void Bad_arguments_are_rejected_with_expected_and_actual()
    {
        using var x = Cpu.Zeros(new Shape(2, 5, 3));
        using var rank2 = Cpu.Zeros(new Shape(5, 3));
        using var noTime = Cpu.Zeros(new Shape(2, 0, 3));
        using var dy = Cpu.Zeros(new Shape(2, 4, 3));
        using var wrongChannels = Cpu.Zeros(new Shape(2, 4, 2));
        using var wrongBatch = Cpu.Zeros(new Shape(1, 5, 3));
        using var f64 = Cpu.Zeros(new Shape(2, 5, 3), DType.F64);
        LinearTests.AssertArgument(() => AdaptivePool.Forward(x, 0), "outputLength", "≥ 1", "0");
        LinearTests.AssertArgument(() => AdaptivePool.Forward(x, -3), "outputLength", "≥ 1", "-3");
        LinearTests.AssertArgument(() => AdaptivePool.Forward(rank2, 2), "x", "[B, T, C]", "[5, 3]");
        LinearTests.AssertArgument(() => AdaptivePool.Forward(noTime, 2), "x", "T ≥ 1", "[2, 0, 3]");
        LinearTests.AssertArgument(() => AdaptivePool.Forward(x, wrongChannels), "y", "[2, n, 3]", "[2, 4, 2]");
        LinearTests.AssertArgument(() => AdaptivePool.Forward(x, x), "y", "distinct from x", "same tensor");
        LinearTests.AssertArgument(() => AdaptivePool.Backward(wrongChannels, x), "dy", "[2, n, 3]", "[2, 4, 2]");
        LinearTests.AssertArgument(() => AdaptivePool.Backward(dy, wrongBatch), "dy", "[1, n, 3]", "[2, 4, 3]");
        LinearTests.AssertArgument(() => AdaptivePool.Backward(f64, x), "dy", "F32", "F64");
    }
}

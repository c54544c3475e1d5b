using Attention.Native.Ops;
using Attention.Native.Tests.Support;
using Attention.Native.Tests.Variants;

namespace Attention.Native.Tests.Ops;

public class RopeTests
{
    private static readonly Backend Cpu = Backend.Cpu;

    // DeepSeek-V3's rope_scaling (its config.json): factor 40, original_max_position_embeddings 4096, β 32/1, mscale 1/1.
    private static readonly RopeScaling DeepSeekV3 = new(40, 4096, BetaFast: 32, BetaSlow: 1, MScale: 1, MScaleAllDim: 1);

    // variants.md, written out directly: θ_j = base^(-2j/n) (or YaRN's, FormulaKit.RopeFrequencies, with cos and sin times its
    // amplitude); "half" pairs (j, j+n/2), "interleaved" (2j, 2j+1).
    private static double[] Expected(double[] x, int batch, int seq, int heads, int width, RopeOptions o, int positionOffset)
    {
        var y = (double[])x.Clone();
        int n = o.RotaryWidth(width);
        var (thetas, amplitude) = FormulaKit.RopeFrequencies(n, o.Base, o.Scaling);
        for (int b = 0; b < batch; b++)
        {
            for (int t = 0; t < seq; t++)
            {
                for (int h = 0; h < heads; h++)
                {
                    int row = (((b * seq) + t) * heads + h) * width + o.RotaryOffset;
                    for (int j = 0; j < n / 2; j++)
                    {
                        double angle = (positionOffset + t) * thetas[j];
                        int ia = o.Style == RopeStyle.Half ? j : 2 * j;
                        int ib = o.Style == RopeStyle.Half ? j + (n / 2) : (2 * j) + 1;
                        double xa = x[row + ia], xb = x[row + ib];
                        y[row + ia] = amplitude * ((xa * Math.Cos(angle)) - (xb * Math.Sin(angle)));
                        y[row + ib] = amplitude * ((xb * Math.Cos(angle)) + (xa * Math.Sin(angle)));
                    }
                }
            }
        }
        return y;
    }

    private static IEnumerable<TestCaseData> Configs()
    {
        yield return new TestCaseData(2, 5, 3, 8, new RopeOptions(RopeStyle.Half), 0).SetName("half, [2,5,3,8]");
        yield return new TestCaseData(2, 5, 3, 8, new RopeOptions(RopeStyle.Interleaved), 0).SetName("interleaved, [2,5,3,8]");
        yield return new TestCaseData(1, 1, 2, 16, new RopeOptions(RopeStyle.Half, 500), 7).SetName("half, T=1 at position 7, base 500");
        yield return new TestCaseData(1, 4, 2, 24, new RopeOptions(RopeStyle.Interleaved, RotaryOffset: 16, RotaryDim: 8), 3).SetName("interleaved on the trailing 8 of 24 (MLA q_pe)");
        yield return new TestCaseData(2, 3, 1, 10, new RopeOptions(RopeStyle.Half, RotaryOffset: 2, RotaryDim: 4), 0).SetName("half on a middle slice");
        // YaRN: DeepSeek-V3 on MLA's q_pe (d_r 64 after d_n 8: ramp over pairs 10 … 23) past L0; the default mscales (amplitude
        // μ(40, 1) = 1.37); V2's 0.707/0.707 on a half-pair 32-wide slice; L0 so short that lo = hi = 0 (hi becomes 0.001).
        yield return new TestCaseData(1, 3, 2, 72, new RopeOptions(RopeStyle.Interleaved, RotaryOffset: 8, Scaling: DeepSeekV3), 5000).SetName("yarn DeepSeek-V3, interleaved d_r 64 at 5000");
        yield return new TestCaseData(2, 2, 1, 64, new RopeOptions(RopeStyle.Half, Scaling: new RopeScaling(40, 4096)), 100000).SetName("yarn default mscales, half 64 at 100000");
        yield return new TestCaseData(1, 2, 3, 40, new RopeOptions(RopeStyle.Half, 500, RotaryOffset: 4, RotaryDim: 32, Scaling: new RopeScaling(40, 4096, 32, 1, 0.707, 0.707)), 7).SetName("yarn DeepSeek-V2 mscales, half slice base 500");
        yield return new TestCaseData(1, 3, 1, 16, new RopeOptions(RopeStyle.Interleaved, Scaling: new RopeScaling(4, 4, MScale: 0.5)), 2).SetName("yarn lo = hi = 0");
    }

    [Test]
    public void Yarn_ramp_and_magnitudes_of_DeepSeek_V3()
    {
        // corr(32) = 64·ln(4096/(64π))/(2 ln 10^4) = 10.47 → lo 10; corr(1) = 22.51 → hi 23: pairs 0 … 9 keep θ⁰, 23 … 31 get θ⁰/40.
        Assert.That(DeepSeekV3.Ramp(64, 10000), Is.EqualTo((10.0, 23.0)));
        var theta = new RopeOptions(Scaling: DeepSeekV3).Frequencies(64);
        Assert.That(theta[9], Is.EqualTo(Math.Pow(10000, -18.0 / 64)).Within(1e-15));
        Assert.That(theta[23], Is.EqualTo(Math.Pow(10000, -46.0 / 64) / 40).Within(1e-15));
        Assert.That(theta[16], Is.EqualTo(Math.Pow(10000, -0.5) * ((6.0 / 13 / 40) + (7.0 / 13))).Within(1e-15));
        // mscale = mscale_all_dim: the rotated vectors keep their length; the softmax scale grows by (0.1·ln 40 + 1)² = 1.874.
        Assert.That(DeepSeekV3.Amplitude, Is.EqualTo(1.0));
        Assert.That(DeepSeekV3.SoftmaxScaleFactor, Is.EqualTo(Math.Pow((0.1 * Math.Log(40)) + 1, 2)).Within(1e-15));
        Assert.That(new RopeScaling(40, 4096).Amplitude, Is.EqualTo((0.1 * Math.Log(40)) + 1).Within(1e-15));
        Assert.That(new RopeScaling(1, 4096, MScale: 3, MScaleAllDim: 5).SoftmaxScaleFactor, Is.EqualTo(1.0), "μ = 1 when factor ≤ 1");
    }

    [TestCaseSource(nameof(Configs))]
    public void Backward_is_the_transpose_of_the_forward(int batch, int seq, int heads, int width, RopeOptions options, int positionOffset)
    {
        // ⟨Rope(x), dy⟩ = ⟨x, Rope.Backward(dy)⟩ for the linear map Rope (YaRN's amplitude included).
        var shape = new Shape(batch, seq, heads, width);
        var xValues = TestData.Normal(17, shape.ElementCount);
        var dyValues = TestData.Normal(18, shape.ElementCount);
        using var x = Cpu.FromArray(xValues, shape, DType.F64);
        using var dy = Cpu.FromArray(dyValues, shape, DType.F64);
        using var y = Rope.Forward(x, options, positionOffset);
        using var dx = Cpu.Zeros(shape, DType.F64);
        Rope.Backward(dy, dx, options, positionOffset);
        double forward = y.ToDoubleArray().Zip(dyValues, (a, b) => a * b).Sum();
        double backward = xValues.Zip(dx.ToDoubleArray(), (a, b) => a * b).Sum();
        Assert.That(backward, Is.EqualTo(forward).Within(1e-12 * (1 + Math.Abs(forward))));
    }

    [TestCaseSource(nameof(Configs))]
    public void Forward_equals_the_spec(int batch, int seq, int heads, int width, RopeOptions options, int positionOffset)
    {
        var x = TestData.Normal(11, batch * seq * heads * width);
        using var tx = Cpu.FromArray(x, new Shape(batch, seq, heads, width), DType.F64);
        using var y = Rope.Forward(tx, options, positionOffset);
        Assert.That(y.ToDoubleArray(), Is.EqualTo(Expected(x, batch, seq, heads, width, options, positionOffset)).Within(1e-12));
    }

    [Test]
    public void Rank_three_input_is_one_head()
    {
        var x = TestData.Normal(12, 2 * 6 * 8);
        using var t3 = Cpu.FromArray(x, new Shape(2, 6, 8), DType.F64);
        using var t4 = Cpu.FromArray(x, new Shape(2, 6, 1, 8), DType.F64);
        using var y3 = Rope.Forward(t3, new RopeOptions(RopeStyle.Interleaved), 5);
        using var y4 = Rope.Forward(t4, new RopeOptions(RopeStyle.Interleaved), 5);
        Assert.That(y3.ToDoubleArray(), Is.EqualTo(y4.ToDoubleArray()));
    }

    [Test]
    public void Large_positions_keep_fp32_accuracy()
    {
        // At t ≈ 32k the angle is ~3e4 rad; computing it in float would be off by ~1e-3.
        var x = TestData.NormalSingle(13, 64);
        using var t32 = Cpu.FromArray(x, new Shape(1, 1, 1, 64));
        using var t64 = Cpu.FromArray(Array.ConvertAll(x, v => (double)v), new Shape(1, 1, 1, 64), DType.F64);
        using var y32 = Rope.Forward(t32, default, 32767);
        using var y64 = Rope.Forward(t64, default, 32767);
        var reference = Array.ConvertAll(y64.ToDoubleArray(), v => (float)v);
        Precision.AssertClose("rope cpu f32 vs f64 at t=32767", DType.F32, "[1,1,1,64]", reference, y32.ToArray());
    }

    [TestCaseSource(nameof(Configs))]
    public void Backward_matches_finite_differences(int batch, int seq, int heads, int width, RopeOptions options, int positionOffset)
    {
        var shape = new Shape(batch, seq, heads, width);
        double[][] inputs = [TestData.Normal(14, shape.ElementCount)];
        var dyValues = TestData.Normal(15, shape.ElementCount);
        double[] Forward(double[][] p)
        {
            using var x = Cpu.FromArray(p[0], shape, DType.F64);
            using var y = Rope.Forward(x, options, positionOffset);
            return y.ToDoubleArray();
        }
        using var dy = Cpu.FromArray(dyValues, shape, DType.F64);
        using var dx = Cpu.Zeros(shape, DType.F64);
        Rope.Backward(dy, dx, options, positionOffset);
        GradientCheck.AssertClose($"rope {options.Style} {shape} offset {options.RotaryOffset} pos {positionOffset}", GradientCheck.MaxError(inputs, Forward, dyValues, [dx.ToDoubleArray()]));
    }

    [Test]
    public void In_place_forward_then_backward_restores_the_input()
    {
        var x = TestData.NormalSingle(16, 2 * 3 * 4 * 16);
        using var t = Cpu.FromArray(x, new Shape(2, 3, 4, 16));
        Rope.Forward(t, t, new RopeOptions(RopeStyle.Half), 9);
        Assert.That(t.ToArray(), Is.Not.EqualTo(x));
        Rope.Backward(t, t, new RopeOptions(RopeStyle.Half), 9);
        Assert.That(t.ToArray(), Is.EqualTo(x).Within(1e-5));
    }

    [Test]
    public void Bad_arguments_are_rejected_with_expected_and_actual()
    {
        using var x = Cpu.Zeros(new Shape(2, 3, 4, 8));
        using var y = Cpu.Zeros(new Shape(2, 3, 4, 6));
        using var rank2 = Cpu.Zeros(new Shape(3, 8));
        using var odd = Cpu.Zeros(new Shape(1, 2, 7));
        LinearTests.AssertArgument(() => Rope.Forward(x, y), "y", "[2, 3, 4, 8]", "[2, 3, 4, 6]");
        LinearTests.AssertArgument(() => Rope.Forward(rank2), "x", "rank 3", "[3, 8]");
        LinearTests.AssertArgument(() => Rope.Forward(odd), "options", "even rotary width", "7");
        LinearTests.AssertArgument(() => Rope.Forward(x, new RopeOptions(RotaryOffset: 4, RotaryDim: 6)), "options", "even rotary width", "6");
        Assert.Throws<ArgumentOutOfRangeException>(() => Rope.Forward(x, default, -1));
        LinearTests.AssertArgument(() => Rope.Forward(x, new RopeOptions(Scaling: new RopeScaling(0.5, 4096))), "options", "options.Scaling: rope_scaling.factor: expected a finite value ≥ 1", "0.5");
        LinearTests.AssertArgument(() => Rope.Backward(x, x, new RopeOptions(Scaling: new RopeScaling(40, 0))), "options", "rope_scaling.original_max_position_embeddings: expected a positive integer", "0");
        LinearTests.AssertArgument(() => Rope.Forward(x, new RopeOptions(Scaling: new RopeScaling(40, 4096, BetaFast: 1, BetaSlow: 32))), "options", "rope_scaling.beta_fast: expected a finite value ≥ beta_slow 32", "1");
        var e = Assert.Throws<ArgumentException>(() => new RopeScaling(40, 4096, MScale: -1).Validate());
        Assert.That(e!.ParamName, Is.EqualTo("rope_scaling.mscale"));
    }
}

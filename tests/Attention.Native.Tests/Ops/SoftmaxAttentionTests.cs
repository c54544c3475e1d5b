using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Ops;

public class SoftmaxAttentionTests
{
    private static readonly Backend Cpu = Backend.Cpu;

    /// <summary>The definition, one query at a time: o = softmax(scale·q·k + bias, masked) v, keys beyond <paramref name="length"/> ignored.</summary>
    internal static double[] Naive(double[] q, double[] k, double[] v, double[]? bias, int b, int tq, int h, int dqk, int tk, int g, int dv, double scale, bool causal, int length)
    {
        var o = new double[b * tq * h * dv];
        for (int bi = 0; bi < b; bi++)
        {
            for (int t = 0; t < tq; t++)
            {
                int position = length - tq + t;
                for (int hi = 0; hi < h; hi++)
                {
                    int gi = hi / (h / g);
                    var s = new double[length];
                    double max = double.NegativeInfinity;
                    for (int j = 0; j < length; j++)
                    {
                        if (causal && j > position)
                        {
                            s[j] = double.NegativeInfinity;
                            continue;
                        }
                        double dot = 0;
                        for (int c = 0; c < dqk; c++)
                        {
                            dot += q[((((bi * tq) + t) * h) + hi) * dqk + c] * k[((((bi * tk) + j) * g) + gi) * dqk + c];
                        }
                        s[j] = (scale * dot) + (bias is null ? 0 : bias[(((hi * tq) + t) * tk) + j]);
                        max = Math.Max(max, s[j]);
                    }
                    double sum = 0;
                    for (int j = 0; j < length; j++)
                    {
                        s[j] = Math.Exp(s[j] - max);
                        sum += s[j];
                    }
                    for (int j = 0; j < length; j++)
                    {
                        for (int c = 0; c < dv; c++)
                        {
                            o[((((bi * tq) + t) * h) + hi) * dv + c] += s[j] / sum * v[((((bi * tk) + j) * g) + gi) * dv + c];
                        }
                    }
                }
            }
        }
        return o;
    }

    [TestCase(1, 5, 4, 4, 8, 8, true, false)]
    [TestCase(2, 7, 4, 2, 6, 3, true, false)]
    [TestCase(1, 70, 2, 1, 5, 7, true, false)]
    [TestCase(2, 33, 4, 2, 8, 8, false, false)]
    [TestCase(1, 40, 3, 3, 4, 4, false, true)]
    [TestCase(1, 1, 2, 1, 4, 4, true, false)]
    public void Forward_equals_the_definition(int b, int t, int h, int g, int dqk, int dv, bool causal, bool withBias)
    {
        double scale = 1 / Math.Sqrt(dqk);
        var q = TestData.Normal(1, b * t * h * dqk);
        var k = TestData.Normal(2, b * t * g * dqk);
        var v = TestData.Normal(3, b * t * g * dv);
        var bias = withBias ? TestData.Normal(4, h * t * t) : null;
        using var tq = Cpu.FromArray(q, new Shape(b, t, h, dqk), DType.F64);
        using var tk = Cpu.FromArray(k, new Shape(b, t, g, dqk), DType.F64);
        using var tv = Cpu.FromArray(v, new Shape(b, t, g, dv), DType.F64);
        using var tb = bias is null ? null : Cpu.FromArray(bias, new Shape(h, t, t), DType.F64);
        using var o = SoftmaxAttention.Forward(tq, tk, tv, new AttentionOptions(scale, causal), tb, out var lse);
        lse.Dispose();
        Assert.That(o.ToDoubleArray(), Is.EqualTo(Naive(q, k, v, bias, b, t, h, dqk, t, g, dv, scale, causal, t)).Within(1e-12));
    }

    [TestCase(1, 9, 5, true)]
    [TestCase(3, 9, 5, true)]
    [TestCase(2, 12, 12, true)]
    [TestCase(2, 12, 7, false)]
    public void Queries_over_a_longer_cache_see_only_the_valid_prefix(int tq, int capacity, int length, bool causal)
    {
        const int b = 2, h = 4, g = 2, d = 4;
        var q = TestData.Normal(5, b * tq * h * d);
        var k = TestData.Normal(6, b * capacity * g * d);
        var v = TestData.Normal(7, b * capacity * g * d);
        using var tq_ = Cpu.FromArray(q, new Shape(b, tq, h, d), DType.F64);
        using var tk = Cpu.FromArray(k, new Shape(b, capacity, g, d), DType.F64);
        using var tv = Cpu.FromArray(v, new Shape(b, capacity, g, d), DType.F64);
        using var o = SoftmaxAttention.Forward(tq_, tk, tv, new AttentionOptions(0.5, causal, length));
        Assert.That(o.ToDoubleArray(), Is.EqualTo(Naive(q, k, v, null, b, tq, h, d, capacity, g, d, 0.5, causal, length)).Within(1e-12));
    }

    [TestCase(1, 1, 1, 1, 3, 2, true, false)]
    [TestCase(2, 5, 4, 2, 6, 3, true, false)]
    [TestCase(1, 6, 3, 1, 4, 5, false, false)]
    [TestCase(2, 4, 2, 2, 3, 3, false, true)]
    [TestCase(1, 37, 2, 1, 3, 2, true, false)]
    [TestCase(2, 35, 2, 2, 2, 3, false, true)]
    public void Gradients_match_finite_differences(int b, int t, int h, int g, int dqk, int dv, bool causal, bool withBias)
    {
        var options = new AttentionOptions(0.7, causal);
        Shape[] shapes = [new(b, t, h, dqk), new(b, t, g, dqk), new(b, t, g, dv), new(h, t, t)];
        double error = OpGradientCheck.MaxError(
            shapes,
            x => SoftmaxAttention.Forward(x[0], x[1], x[2], options, withBias ? x[3] : null),
            (x, dy, grads) =>
            {
                using var o = SoftmaxAttention.Forward(x[0], x[1], x[2], options, withBias ? x[3] : null, out var lse);
                using (lse)
                {
                    SoftmaxAttention.Backward(x[0], x[1], x[2], options, withBias ? x[3] : null, o, lse, dy, grads[0], grads[1], grads[2], withBias ? grads[3] : null);
                }
            },
            differentiable: [true, true, true, withBias]);
        GradientCheck.AssertClose($"attention b={b} t={t} h={h} g={g} dqk={dqk} dv={dv} causal={causal} bias={withBias}", error);
    }

    [Test]
    public void Float_path_agrees_with_double()
    {
        const int b = 1, t = 50, h = 4, g = 2, d = 16;
        var q = TestData.Normal(8, b * t * h * d);
        var k = TestData.Normal(9, b * t * g * d);
        var v = TestData.Normal(10, b * t * g * d);
        double[] RunIn(DType dtype)
        {
            using var tq = Cpu.FromArray(q, new Shape(b, t, h, d), dtype);
            using var tk = Cpu.FromArray(k, new Shape(b, t, g, d), dtype);
            using var tv = Cpu.FromArray(v, new Shape(b, t, g, d), dtype);
            using var o = SoftmaxAttention.Forward(tq, tk, tv, new AttentionOptions(0.25, true));
            return o.ToDoubleArray();
        }
        Assert.That(RunIn(DType.F32), Is.EqualTo(RunIn(DType.F64)).Within(1e-5));
        Assert.That(RunIn(DType.BF16), Is.EqualTo(RunIn(DType.F64)).Within(5e-2));
    }

    [Test]
    public void Bad_arguments_are_rejected_with_expected_and_actual()
    {
        using var q = Cpu.Zeros(new Shape(1, 4, 3, 8));
        using var k = Cpu.Zeros(new Shape(1, 4, 2, 8));
        using var k1 = Cpu.Zeros(new Shape(1, 4, 1, 8));
        using var v = Cpu.Zeros(new Shape(1, 4, 1, 6));
        using var v2 = Cpu.Zeros(new Shape(1, 5, 1, 6));
        using var bias = Cpu.Zeros(new Shape(3, 4, 5));
        LinearTests.AssertArgument(() => SoftmaxAttention.Forward(q, k, Cpu.Zeros(new Shape(1, 4, 2, 6)), new AttentionOptions(1, true)), "k", "dividing the 3", "2");
        LinearTests.AssertArgument(() => SoftmaxAttention.Forward(q, k1, v2, new AttentionOptions(1, true)), "v", "[1, 4, 1, 6]", "[1, 5, 1, 6]");
        LinearTests.AssertArgument(() => SoftmaxAttention.Forward(q, k1, v, new AttentionOptions(1, true), bias), "bias", "[3, 4, 4]", "[3, 4, 5]");
        LinearTests.AssertArgument(() => SoftmaxAttention.Forward(q, k1, v, new AttentionOptions(1, true, 3)), "q", "at most 3", "4");
        Assert.Throws<ArgumentOutOfRangeException>(() => SoftmaxAttention.Forward(q, k1, v, new AttentionOptions(0, true)));
        Assert.Throws<ArgumentOutOfRangeException>(() => SoftmaxAttention.Forward(q, k1, v, new AttentionOptions(1, false, 9)));
    }
}

using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Ops;

/// <summary>
/// The CPU softmax attention at sizes that cross its tiles: several key tiles of the forward's online softmax (256 keys), several
/// query blocks (96 rows) with a partial last one, several key blocks of the backward (96 keys), a KV head's keys split among
/// backward tasks (few KV heads), the causal diagonal inside tiles, a key cache longer than the valid keys, and head widths
/// that are not multiples of the vector width. Against the definition in F64, and F32 against F64.
/// </summary>
public class SoftmaxAttentionTilingTests
{
    private static readonly Backend Cpu = Backend.Cpu;

    [TestCase(1, 300, 300, 300, 2, 1, 20, 36, true, false)]
    [TestCase(1, 300, 300, 300, 2, 1, 20, 36, false, true)]
    [TestCase(2, 257, 257, 257, 4, 2, 16, 16, true, true)]
    [TestCase(1, 530, 530, 530, 1, 1, 64, 64, false, false)]
    [TestCase(2, 150, 600, 520, 2, 1, 12, 9, true, false)]
    [TestCase(1, 97, 400, 333, 3, 3, 7, 33, false, false)]
    public void Forward_and_backward_equal_the_definition(int b, int tq, int capacity, int length, int h, int g, int dqk, int dv, bool causal, bool withBias)
    {
        double scale = 1 / Math.Sqrt(dqk);
        var problem = new Problem(b, tq, capacity, length, h, g, dqk, dv, scale, causal, withBias);
        using var tq_ = Cpu.FromArray(problem.Q, new Shape(b, tq, h, dqk), DType.F64);
        using var tk = Cpu.FromArray(problem.K, new Shape(b, capacity, g, dqk), DType.F64);
        using var tv = Cpu.FromArray(problem.V, new Shape(b, capacity, g, dv), DType.F64);
        using var tb = withBias ? Cpu.FromArray(problem.Bias!, new Shape(h, tq, capacity), DType.F64) : null;
        using var tdO = Cpu.FromArray(problem.DO, new Shape(b, tq, h, dv), DType.F64);
        var options = new AttentionOptions(scale, causal, length == capacity ? null : length);
        using var o = SoftmaxAttention.Forward(tq_, tk, tv, options, tb, out var lse);
        using var _ = lse;
        // The backward adds into what the gradients hold: start from nonzero values.
        var start = new[] { TestData.Normal(21, problem.Q.Length), TestData.Normal(22, problem.K.Length), TestData.Normal(23, problem.V.Length) };
        using var dq = Cpu.FromArray(start[0], tq_.Shape, DType.F64);
        using var dk = Cpu.FromArray(start[1], tk.Shape, DType.F64);
        using var dv_ = Cpu.FromArray(start[2], tv.Shape, DType.F64);
        using var dbias = withBias ? Cpu.Zeros(tb!.Shape, DType.F64) : null;
        SoftmaxAttention.Backward(tq_, tk, tv, options, tb, o, lse, tdO, dq, dk, dv_, dbias);

        var expected = problem.Reference();
        Assert.Multiple(() =>
        {
            Assert.That(o.ToDoubleArray(), Is.EqualTo(expected.O).Within(1e-12), "o");
            Assert.That(lse.ToDoubleArray(), Is.EqualTo(expected.Lse).Within(1e-12), "lse");
            Assert.That(dq.ToDoubleArray(), Is.EqualTo(Add(start[0], expected.Dq)).Within(1e-10), "dq");
            Assert.That(dk.ToDoubleArray(), Is.EqualTo(Add(start[1], expected.Dk)).Within(1e-10), "dk");
            Assert.That(dv_.ToDoubleArray(), Is.EqualTo(Add(start[2], expected.Dv)).Within(1e-10), "dv");
            if (withBias)
            {
                Assert.That(dbias!.ToDoubleArray(), Is.EqualTo(expected.Dbias).Within(1e-10), "dbias");
            }
        });
    }

    [TestCase(1, 600, 2, 2, 64, 64, true)]
    [TestCase(1, 520, 4, 1, 128, 128, false)]
    [TestCase(2, 200, 2, 1, 40, 24, true)]
    public void Float_agrees_with_double_across_tiles(int b, int t, int h, int g, int dqk, int dv, bool causal)
    {
        var problem = new Problem(b, t, t, t, h, g, dqk, dv, 1 / Math.Sqrt(dqk), causal, withBias: false);
        var options = new AttentionOptions(1 / Math.Sqrt(dqk), causal);
        (double[] O, double[] Dq, double[] Dk, double[] Dv) Run(DType dtype)
        {
            using var q = Cpu.FromArray(problem.Q, new Shape(b, t, h, dqk), dtype);
            using var k = Cpu.FromArray(problem.K, new Shape(b, t, g, dqk), dtype);
            using var v = Cpu.FromArray(problem.V, new Shape(b, t, g, dv), dtype);
            using var dO = Cpu.FromArray(problem.DO, new Shape(b, t, h, dv), dtype);
            using var o = SoftmaxAttention.Forward(q, k, v, options, null, out var lse);
            using var _ = lse;
            using var dq = Cpu.Zeros(q.Shape, dtype);
            using var dk = Cpu.Zeros(k.Shape, dtype);
            using var dv_ = Cpu.Zeros(v.Shape, dtype);
            SoftmaxAttention.Backward(q, k, v, options, null, o, lse, dO, dq, dk, dv_);
            return (o.ToDoubleArray(), dq.ToDoubleArray(), dk.ToDoubleArray(), dv_.ToDoubleArray());
        }
        var single = Run(DType.F32);
        var exact = Run(DType.F64);
        Assert.Multiple(() =>
        {
            Assert.That(single.O, Is.EqualTo(exact.O).Within(1e-5), "o");
            Assert.That(single.Dq, Is.EqualTo(exact.Dq).Within(1e-4), "dq");
            Assert.That(single.Dk, Is.EqualTo(exact.Dk).Within(1e-4), "dk");
            Assert.That(single.Dv, Is.EqualTo(exact.Dv).Within(1e-4), "dv");
        });
    }

    [Test]
    public void Repeated_runs_give_identical_results()
    {
        // One KV head: the backward splits its keys among tasks, each summing its own dq, added in a fixed order.
        const int t = 700, h = 2, g = 1, d = 32;
        var problem = new Problem(1, t, t, t, h, g, d, d, 0.2, causal: true, withBias: false);
        var options = new AttentionOptions(0.2, true);
        double[][] Run()
        {
            using var q = Cpu.FromArray(problem.Q, new Shape(1, t, h, d), DType.F32);
            using var k = Cpu.FromArray(problem.K, new Shape(1, t, g, d), DType.F32);
            using var v = Cpu.FromArray(problem.V, new Shape(1, t, g, d), DType.F32);
            using var dO = Cpu.FromArray(problem.DO, new Shape(1, t, h, d), DType.F32);
            using var o = SoftmaxAttention.Forward(q, k, v, options, null, out var lse);
            using var _ = lse;
            using var dq = Cpu.Zeros(q.Shape);
            using var dk = Cpu.Zeros(k.Shape);
            using var dv = Cpu.Zeros(v.Shape);
            SoftmaxAttention.Backward(q, k, v, options, null, o, lse, dO, dq, dk, dv);
            return [o.ToDoubleArray(), lse.ToDoubleArray(), dq.ToDoubleArray(), dk.ToDoubleArray(), dv.ToDoubleArray()];
        }
        var first = Run();
        for (int run = 0; run < 3; run++)
        {
            var again = Run();
            for (int i = 0; i < first.Length; i++)
            {
                Assert.That(again[i], Is.EqualTo(first[i]), $"output {i}, run {run + 2}");
            }
        }
    }

    private static double[] Add(double[] x, double[] y) => x.Zip(y, (a, c) => a + c).ToArray();

    /// <summary>Random inputs and the definition's outputs and gradients, one query row at a time in F64.</summary>
    private sealed class Problem(int b, int tq, int capacity, int length, int h, int g, int dqk, int dv, double scale, bool causal, bool withBias)
    {
        public double[] Q { get; } = TestData.Normal(11, (long)b * tq * h * dqk);

        public double[] K { get; } = TestData.Normal(12, (long)b * capacity * g * dqk);

        public double[] V { get; } = TestData.Normal(13, (long)b * capacity * g * dv);

        public double[] DO { get; } = TestData.Normal(14, (long)b * tq * h * dv);

        public double[]? Bias { get; } = withBias ? TestData.Normal(15, (long)h * tq * capacity) : null;

        public (double[] O, double[] Lse, double[] Dq, double[] Dk, double[] Dv, double[] Dbias) Reference()
        {
            var o = new double[Q.Length / dqk * dv];
            var lse = new double[b * h * tq];
            var dq = new double[Q.Length];
            var dk = new double[K.Length];
            var dvOut = new double[V.Length];
            var dbias = new double[Bias?.Length ?? 0];
            var p = new double[length];
            var dp = new double[length];
            for (int bi = 0; bi < b; bi++)
            {
                for (int hi = 0; hi < h; hi++)
                {
                    int gi = hi / (h / g);
                    for (int t = 0; t < tq; t++)
                    {
                        int position = length - tq + t, visible = causal ? position + 1 : length;
                        long qRow = ((((long)bi * tq) + t) * h + hi) * dqk, oRow = ((((long)bi * tq) + t) * h + hi) * dv;
                        double max = double.NegativeInfinity;
                        for (int j = 0; j < visible; j++)
                        {
                            long kRow = ((((long)bi * capacity) + j) * g + gi) * dqk;
                            double dot = 0;
                            for (int c = 0; c < dqk; c++)
                            {
                                dot += Q[qRow + c] * K[kRow + c];
                            }
                            p[j] = (scale * dot) + (Bias is null ? 0 : Bias[((((long)hi * tq) + t) * capacity) + j]);
                            max = Math.Max(max, p[j]);
                        }
                        double sum = 0;
                        for (int j = 0; j < visible; j++)
                        {
                            p[j] = Math.Exp(p[j] - max);
                            sum += p[j];
                        }
                        lse[(((long)bi * h) + hi) * tq + t] = max + Math.Log(sum);
                        double delta = 0;
                        for (int j = 0; j < visible; j++)
                        {
                            p[j] /= sum;
                            long vRow = ((((long)bi * capacity) + j) * g + gi) * dv;
                            double dot = 0;
                            for (int c = 0; c < dv; c++)
                            {
                                o[oRow + c] += p[j] * V[vRow + c];
                                dot += DO[oRow + c] * V[vRow + c];
                            }
                            dp[j] = dot;
                            delta += p[j] * dot;
                        }
                        for (int j = 0; j < visible; j++)
                        {
                            double ds = p[j] * (dp[j] - delta);
                            long kRow = ((((long)bi * capacity) + j) * g + gi) * dqk, vRow = ((((long)bi * capacity) + j) * g + gi) * dv;
                            for (int c = 0; c < dqk; c++)
                            {
                                dq[qRow + c] += scale * ds * K[kRow + c];
                                dk[kRow + c] += scale * ds * Q[qRow + c];
                            }
                            for (int c = 0; c < dv; c++)
                            {
                                dvOut[vRow + c] += p[j] * DO[oRow + c];
                            }
                            if (Bias is not null)
                            {
                                dbias[((((long)hi * tq) + t) * capacity) + j] += ds;
                            }
                        }
                    }
                }
            }
            return (o, lse, dq, dk, dvOut, dbias);
        }
    }
}

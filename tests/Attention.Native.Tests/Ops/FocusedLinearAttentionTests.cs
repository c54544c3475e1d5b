using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Ops;

public class FocusedLinearAttentionTests
{
    private static readonly Backend Cpu = Backend.Cpu;

    [TestCase(1, 1, 1, 1, 1)]
    [TestCase(2, 5, 3, 4, 6)]
    [TestCase(1, 9, 2, 8, 8)]
    [TestCase(2, 1, 3, 3, 2)]
    public void Forward_equals_the_definition(int batch, int seq, int heads, int d, int dv)
    {
        var qkShape = new Shape(batch, seq, heads, d);
        var vShape = new Shape(batch, seq, heads, dv);
        var q = Positive(61, qkShape.ElementCount);
        var k = Positive(62, qkShape.ElementCount);
        var v = TestData.Normal(63, vShape.ElementCount);
        using var tq = Cpu.FromArray(q, qkShape, DType.F64);
        using var tk = Cpu.FromArray(k, qkShape, DType.F64);
        using var tv = Cpu.FromArray(v, vShape, DType.F64);
        using var o = FocusedLinearAttention.Forward(tq, tk, tv);
        Assert.That(o.Shape, Is.EqualTo(vShape));
        Assert.That(o.ToDoubleArray(), Is.EqualTo(Expected(q, k, v, batch, seq, heads, d, dv)).Within(1e-12));
    }

    [TestCase(1, 1, 1, 1, 1)]
    [TestCase(1, 1, 3, 4, 2)]
    [TestCase(2, 5, 3, 4, 6)]
    [TestCase(2, 7, 1, 5, 3)]
    [TestCase(1, 6, 1, 1, 4)]
    [TestCase(2, 4, 2, 8, 8)]
    [TestCase(1, 33, 3, 3, 5)]
    public void Gradients_match_finite_differences(int batch, int seq, int heads, int d, int dv)
    {
        var qkShape = new Shape(batch, seq, heads, d);
        var vShape = new Shape(batch, seq, heads, dv);
        // Positive q and k, as the focusing map produces: q·mean(k) stays well away from 0.
        double[]?[] values = [Positive(64, qkShape.ElementCount), Positive(65, qkShape.ElementCount), null];
        double error = OpGradientCheck.MaxError(
            [qkShape, qkShape, vShape],
            t => FocusedLinearAttention.Forward(t[0], t[1], t[2]),
            (t, dO, g) => FocusedLinearAttention.Backward(t[0], t[1], t[2], dO, g[0], g[1], g[2]),
            seed: 66,
            values: values);
        GradientCheck.AssertClose($"focused linear attention q {qkShape} v {vShape}", error);
    }

    [Test]
    public void Backward_adds_into_the_gradients_and_skips_null_ones()
    {
        var qkShape = new Shape(2, 4, 2, 3);
        var vShape = new Shape(2, 4, 2, 5);
        using var q = Cpu.FromArray(Positive(67, qkShape.ElementCount), qkShape, DType.F64);
        using var k = Cpu.FromArray(Positive(68, qkShape.ElementCount), qkShape, DType.F64);
        using var v = Cpu.FromArray(TestData.Normal(69, vShape.ElementCount), vShape, DType.F64);
        using var dO = Cpu.FromArray(TestData.Normal(70, vShape.ElementCount), vShape, DType.F64);
        using var dqOnly = Cpu.Zeros(qkShape, DType.F64);
        using var dkOnly = Cpu.Zeros(qkShape, DType.F64);
        using var dvOnly = Cpu.Zeros(vShape, DType.F64);
        FocusedLinearAttention.Backward(q, k, v, dO, dqOnly, null, null);
        FocusedLinearAttention.Backward(q, k, v, dO, null, dkOnly, null);
        FocusedLinearAttention.Backward(q, k, v, dO, null, null, dvOnly);

        var dqStart = TestData.Normal(71, qkShape.ElementCount);
        var dkStart = TestData.Normal(72, qkShape.ElementCount);
        var dvStart = TestData.Normal(73, vShape.ElementCount);
        using var dq = Cpu.FromArray(dqStart, qkShape, DType.F64);
        using var dk = Cpu.FromArray(dkStart, qkShape, DType.F64);
        using var dv = Cpu.FromArray(dvStart, vShape, DType.F64);
        FocusedLinearAttention.Backward(q, k, v, dO, dq, dk, dv);
        foreach (var (sum, start, alone) in new[] { (dq, dqStart, dqOnly), (dk, dkStart, dkOnly), (dv, dvStart, dvOnly) })
        {
            Assert.That(alone.ToDoubleArray(), Has.Some.Not.EqualTo(0.0));
            Assert.That(sum.ToDoubleArray(), Is.EqualTo(start.Zip(alone.ToDoubleArray(), (a, b) => a + b)).Within(1e-13));
        }
    }

    [Test]
    public void Backward_is_deterministic_across_runs()
    {
        var qkShape = new Shape(2, 64, 2, 8);
        var vShape = new Shape(2, 64, 2, 6);
        using var q = Cpu.FromArray(Positive(81, qkShape.ElementCount), qkShape, DType.F32);
        using var k = Cpu.FromArray(Positive(82, qkShape.ElementCount), qkShape, DType.F32);
        using var v = Cpu.FromArray(TestData.Normal(83, vShape.ElementCount), vShape, DType.F32);
        using var dO = Cpu.FromArray(TestData.Normal(84, vShape.ElementCount), vShape, DType.F32);
        float[][] Gradients()
        {
            using var dq = Cpu.Zeros(qkShape);
            using var dk = Cpu.Zeros(qkShape);
            using var dv = Cpu.Zeros(vShape);
            FocusedLinearAttention.Backward(q, k, v, dO, dq, dk, dv);
            return [dq.ToArray(), dk.ToArray(), dv.ToArray()];
        }
        var first = Gradients();
        for (int run = 0; run < 5; run++)
        {
            Assert.That(Gradients(), Is.EqualTo(first));
        }
    }

    [Test]
    public void Single_precision_follows_double_precision()
    {
        var qkShape = new Shape(2, 37, 3, 16);
        var vShape = new Shape(2, 37, 3, 12);
        var q = Array.ConvertAll(Positive(74, qkShape.ElementCount), v => (float)v);
        var k = Array.ConvertAll(Positive(75, qkShape.ElementCount), v => (float)v);
        var v = TestData.NormalSingle(76, vShape.ElementCount);
        var dOValues = TestData.NormalSingle(77, vShape.ElementCount);
        (float[] O, float[] Dq, float[] Dk, float[] Dv) Run(DType dtype)
        {
            using var tq = Cpu.FromArray(q, qkShape, dtype);
            using var tk = Cpu.FromArray(k, qkShape, dtype);
            using var tv = Cpu.FromArray(v, vShape, dtype);
            using var dO = Cpu.FromArray(dOValues, vShape, dtype);
            using var dq = Cpu.Zeros(qkShape, dtype);
            using var dk = Cpu.Zeros(qkShape, dtype);
            using var dv = Cpu.Zeros(vShape, dtype);
            using var o = FocusedLinearAttention.Forward(tq, tk, tv);
            FocusedLinearAttention.Backward(tq, tk, tv, dO, dq, dk, dv);
            return (o.ToArray(), dq.ToArray(), dk.ToArray(), dv.ToArray());
        }
        var reference = Run(DType.F64);
        var single = Run(DType.F32);
        string shape = $"q {qkShape} v {vShape}";
        Precision.AssertClose("focused linear attention o f32 vs f64", DType.F32, shape, reference.O, single.O);
        Precision.AssertAdded("focused linear attention dq f32 vs f64", DType.F32, shape, null, reference.Dq, single.Dq);
        Precision.AssertAdded("focused linear attention dk f32 vs f64", DType.F32, shape, null, reference.Dk, single.Dk);
        Precision.AssertAdded("focused linear attention dv f32 vs f64", DType.F32, shape, null, reference.Dv, single.Dv);
    }

    [Test]
    public void Half_precision_storage_is_widened()
    {
        var qkShape = new Shape(1, 6, 2, 4);
        var vShape = new Shape(1, 6, 2, 3);
        var q = TestData.Representable(Array.ConvertAll(Positive(78, qkShape.ElementCount), v => (float)v), DType.F16);
        var k = TestData.Representable(Array.ConvertAll(Positive(79, qkShape.ElementCount), v => (float)v), DType.F16);
        var v = TestData.Representable(TestData.NormalSingle(80, vShape.ElementCount), DType.F16);
        using var q64 = Cpu.FromArray(q, qkShape, DType.F64);
        using var k64 = Cpu.FromArray(k, qkShape, DType.F64);
        using var v64 = Cpu.FromArray(v, vShape, DType.F64);
        using var q16 = Cpu.FromArray(q, qkShape, DType.F16);
        using var k16 = Cpu.FromArray(k, qkShape, DType.F16);
        using var v16 = Cpu.FromArray(v, vShape, DType.F16);
        using var reference = FocusedLinearAttention.Forward(q64, k64, v64);
        using var actual = FocusedLinearAttention.Forward(q16, k16, v16);
        Precision.AssertClose("focused linear attention f16 vs f64", DType.F16, $"q {qkShape} v {vShape}", reference.ToArray(), actual.ToArray());
    }

    [Test]
    public void Bad_arguments_are_rejected_with_expected_and_actual()
    {
        using var q = Cpu.Zeros(new Shape(2, 3, 4, 5));
        using var k = Cpu.Zeros(new Shape(2, 3, 4, 5));
        using var v = Cpu.Zeros(new Shape(2, 3, 4, 6));
        using var o = Cpu.Zeros(new Shape(2, 3, 4, 6));
        using var rank3 = Cpu.Zeros(new Shape(2, 3, 20));
        using var wrongK = Cpu.Zeros(new Shape(2, 3, 4, 6));
        using var wrongV = Cpu.Zeros(new Shape(2, 4, 4, 6));
        using var k64 = Cpu.Zeros(new Shape(2, 3, 4, 5), DType.F64);
        using var wrongO = Cpu.Zeros(new Shape(2, 3, 4, 5));
        using var dq = Cpu.Zeros(new Shape(2, 3, 4, 5));
        LinearTests.AssertArgument(() => FocusedLinearAttention.Forward(rank3, k, v), "q", "rank 4", "[2, 3, 20]");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Forward(q, wrongK, v), "k", "[2, 3, 4, 5]", "[2, 3, 4, 6]");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Forward(q, k64, v), "k", "F32", "F64");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Forward(q, k, wrongV), "v", "[2, 3, 4, dv]", "[2, 4, 4, 6]");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Forward(q, k, rank3), "v", "[2, 3, 4, dv]", "[2, 3, 20]");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Forward(q, k, v, wrongO), "o", "[2, 3, 4, 6]", "[2, 3, 4, 5]");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Forward(q, k, v, v), "o", "distinct from v", "same tensor");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Backward(q, k, v, wrongO, dq, null, null), "dO", "[2, 3, 4, 6]", "[2, 3, 4, 5]");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Backward(q, k, v, o, o, null, null), "dq", "[2, 3, 4, 5]", "[2, 3, 4, 6]");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Backward(q, k, v, o, null, wrongK, null), "dk", "[2, 3, 4, 5]", "[2, 3, 4, 6]");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Backward(q, k, v, o, null, null, dq), "dv", "[2, 3, 4, 6]", "[2, 3, 4, 5]");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Backward(q, k, v, o, null, null, o), "dv", "distinct from dO", "same tensor");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Backward(q, k, v, o, dq, dq, null), "dk", "distinct from dq", "same tensor");
    }

    // |normal| + 0.1: positive like the focusing map's outputs.
    private static double[] Positive(int seed, long count) =>
        TestData.Normal(seed, count).Select(value => Math.Abs(value) + 0.1).ToArray();

    // The definition of variants.md §6, one (batch, head) at a time.
    private static double[] Expected(double[] q, double[] k, double[] v, int batch, int seq, int heads, int d, int dv)
    {
        var o = new double[(long)batch * seq * heads * dv];
        for (int b = 0; b < batch; b++)
        {
            for (int h = 0; h < heads; h++)
            {
                double Q(int t, int i) => q[((((b * seq) + t) * heads) + h) * d + i];
                double K(int t, int i) => k[((((b * seq) + t) * heads) + h) * d + i];
                double V(int t, int j) => v[((((b * seq) + t) * heads) + h) * dv + j];
                var keyMean = new double[d];
                var kv = new double[d, dv];
                for (int s = 0; s < seq; s++)
                {
                    for (int i = 0; i < d; i++)
                    {
                        keyMean[i] += K(s, i) / seq;
                        for (int j = 0; j < dv; j++)
                        {
                            kv[i, j] += K(s, i) * V(s, j) / seq;
                        }
                    }
                }
                for (int t = 0; t < seq; t++)
                {
                    double denominator = 1e-6;
                    for (int i = 0; i < d; i++)
                    {
                        denominator += Q(t, i) * keyMean[i];
                    }
                    for (int j = 0; j < dv; j++)
                    {
                        double numerator = 0;
                        for (int i = 0; i < d; i++)
                        {
                            numerator += Q(t, i) * kv[i, j];
                        }
                        o[(((((b * seq) + t) * heads) + h) * dv) + j] = numerator / denominator;
                    }
                }
            }
        }
        return o;
    }
}

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
        Assert.That(o.ToDoubleArray(), Is.EqualTo(Expected(q, k, v, batch, seq, seq, heads, d, dv)).Within(1e-12));
    }

    // Keys and values on fewer tokens than the queries (flatten-pvt's spatial reduction) and on more; one key alone.
    [TestCase(1, 12, 3, 2, 4, 5)]
    [TestCase(2, 5, 9, 3, 3, 2)]
    [TestCase(2, 7, 1, 1, 2, 3)]
    [TestCase(1, 1, 6, 2, 5, 4)]
    public void Forward_with_another_key_count_equals_the_definition(int batch, int queryTokens, int keyTokens, int heads, int d, int dv)
    {
        var qShape = new Shape(batch, queryTokens, heads, d);
        var kShape = new Shape(batch, keyTokens, heads, d);
        var vShape = new Shape(batch, keyTokens, heads, dv);
        var q = Positive(161, qShape.ElementCount);
        var k = Positive(162, kShape.ElementCount);
        var v = TestData.Normal(163, vShape.ElementCount);
        using var tq = Cpu.FromArray(q, qShape, DType.F64);
        using var tk = Cpu.FromArray(k, kShape, DType.F64);
        using var tv = Cpu.FromArray(v, vShape, DType.F64);
        var expected = Expected(q, k, v, batch, queryTokens, keyTokens, heads, d, dv);
        using (var o = FocusedLinearAttention.Forward(tq, tk, tv))
        {
            Assert.That(o.Shape, Is.EqualTo(new Shape(batch, queryTokens, heads, dv)));
            Assert.That(o.ToDoubleArray(), Is.EqualTo(expected).Within(1e-12));
        }
        using var given = Cpu.FromArray(TestData.Normal(164, expected.LongLength), new Shape(batch, queryTokens, heads, dv), DType.F64);
        FocusedLinearAttention.Forward(tq, tk, tv, given);
        Assert.That(given.ToDoubleArray(), Is.EqualTo(expected).Within(1e-12));
    }

    [TestCase(1, 12, 3, 2, 4, 5)]
    [TestCase(2, 5, 9, 3, 3, 2)]
    [TestCase(1, 3, 40, 1, 6, 4)]
    public void Backward_with_another_key_count_equals_the_formulas(int batch, int queryTokens, int keyTokens, int heads, int d, int valueWidth)
    {
        var qShape = new Shape(batch, queryTokens, heads, d);
        var kShape = new Shape(batch, keyTokens, heads, d);
        var vShape = new Shape(batch, keyTokens, heads, valueWidth);
        var oShape = new Shape(batch, queryTokens, heads, valueWidth);
        var q = Positive(171, qShape.ElementCount);
        var k = Positive(172, kShape.ElementCount);
        var v = TestData.Normal(173, vShape.ElementCount);
        var gradient = TestData.Normal(174, oShape.ElementCount);
        using var tq = Cpu.FromArray(q, qShape, DType.F64);
        using var tk = Cpu.FromArray(k, kShape, DType.F64);
        using var tv = Cpu.FromArray(v, vShape, DType.F64);
        using var dO = Cpu.FromArray(gradient, oShape, DType.F64);
        using var dq = Cpu.Zeros(qShape, DType.F64);
        using var dk = Cpu.Zeros(kShape, DType.F64);
        using var dv = Cpu.Zeros(vShape, DType.F64);
        FocusedLinearAttention.Backward(tq, tk, tv, dO, dq, dk, dv);
        var (eq, ek, ev) = ExpectedGradients(q, k, v, gradient, batch, queryTokens, keyTokens, heads, d, valueWidth);
        Assert.Multiple(() =>
        {
            Assert.That(dq.ToDoubleArray(), Is.EqualTo(eq).Within(1e-12), "dq");
            Assert.That(dk.ToDoubleArray(), Is.EqualTo(ek).Within(1e-12), "dk");
            Assert.That(dv.ToDoubleArray(), Is.EqualTo(ev).Within(1e-12), "dv");
        });
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

    [TestCase(1, 12, 3, 2, 4, 5)]
    [TestCase(2, 5, 9, 3, 3, 2)]
    [TestCase(1, 2, 7, 1, 5, 3)]
    [TestCase(2, 33, 4, 1, 3, 2)]
    public void Gradients_with_another_key_count_match_finite_differences(int batch, int queryTokens, int keyTokens, int heads, int d, int dv)
    {
        var qShape = new Shape(batch, queryTokens, heads, d);
        var kShape = new Shape(batch, keyTokens, heads, d);
        var vShape = new Shape(batch, keyTokens, heads, dv);
        double[]?[] values = [Positive(181, qShape.ElementCount), Positive(182, kShape.ElementCount), null];
        double error = OpGradientCheck.MaxError(
            [qShape, kShape, vShape],
            t => FocusedLinearAttention.Forward(t[0], t[1], t[2]),
            (t, dO, g) => FocusedLinearAttention.Backward(t[0], t[1], t[2], dO, g[0], g[1], g[2]),
            seed: 183,
            values: values);
        GradientCheck.AssertClose($"focused linear attention q {qShape} k {kShape} v {vShape}", error);
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
        var reference = Run(DType.F64, q, k, v, dOValues, qkShape, qkShape, vShape);
        var single = Run(DType.F32, q, k, v, dOValues, qkShape, qkShape, vShape);
        string shape = $"q {qkShape} v {vShape}";
        Precision.AssertClose("focused linear attention o f32 vs f64", DType.F32, shape, reference.O, single.O);
        Precision.AssertAdded("focused linear attention dq f32 vs f64", DType.F32, shape, null, reference.Dq, single.Dq);
        Precision.AssertAdded("focused linear attention dk f32 vs f64", DType.F32, shape, null, reference.Dk, single.Dk);
        Precision.AssertAdded("focused linear attention dv f32 vs f64", DType.F32, shape, null, reference.Dv, single.Dv);
    }

    // F32, and the 16-bit types widened on the CPU, against F64 on the same (representable) inputs, forward and backward.
    [TestCase(DType.F32, 37, 8)]
    [TestCase(DType.F32, 9, 70)]
    [TestCase(DType.F16, 12, 3)]
    [TestCase(DType.F16, 5, 9)]
    [TestCase(DType.BF16, 12, 3)]
    [TestCase(DType.BF16, 5, 9)]
    public void Other_precisions_with_another_key_count_follow_double_precision(DType dtype, int queryTokens, int keyTokens)
    {
        var qShape = new Shape(2, queryTokens, 3, 16);
        var kShape = new Shape(2, keyTokens, 3, 16);
        var vShape = new Shape(2, keyTokens, 3, 12);
        var oShape = new Shape(2, queryTokens, 3, 12);
        var q = TestData.Representable(Array.ConvertAll(Positive(191, qShape.ElementCount), v => (float)v), dtype);
        var k = TestData.Representable(Array.ConvertAll(Positive(192, kShape.ElementCount), v => (float)v), dtype);
        var v = TestData.Representable(TestData.NormalSingle(193, vShape.ElementCount), dtype);
        var dOValues = TestData.Representable(TestData.NormalSingle(194, oShape.ElementCount), dtype);
        var reference = Run(DType.F64, q, k, v, dOValues, qShape, kShape, vShape);
        var actual = Run(dtype, q, k, v, dOValues, qShape, kShape, vShape);
        string shape = $"q {qShape} k {kShape} v {vShape}";
        Assert.That(actual.O, Has.Length.EqualTo(oShape.ElementCount));
        Precision.AssertClose($"focused linear attention o {dtype} vs f64", dtype, shape, reference.O, actual.O);
        Precision.AssertAdded($"focused linear attention dq {dtype} vs f64", dtype, shape, null, reference.Dq, actual.Dq);
        Precision.AssertAdded($"focused linear attention dk {dtype} vs f64", dtype, shape, null, reference.Dk, actual.Dk);
        Precision.AssertAdded($"focused linear attention dv {dtype} vs f64", dtype, shape, null, reference.Dv, actual.Dv);
    }

    // The output and the three gradients (from zeros) in dtype.
    private static (float[] O, float[] Dq, float[] Dk, float[] Dv) Run(DType dtype, float[] q, float[] k, float[] v, float[] dOValues, Shape qShape, Shape kShape, Shape vShape)
    {
        var oShape = new Shape(qShape[0], qShape[1], qShape[2], vShape[3]);
        using var tq = Cpu.FromArray(q, qShape, dtype);
        using var tk = Cpu.FromArray(k, kShape, dtype);
        using var tv = Cpu.FromArray(v, vShape, dtype);
        using var dO = Cpu.FromArray(dOValues, oShape, dtype);
        using var dq = Cpu.Zeros(qShape, dtype);
        using var dk = Cpu.Zeros(kShape, dtype);
        using var dv = Cpu.Zeros(vShape, dtype);
        using var o = FocusedLinearAttention.Forward(tq, tk, tv);
        FocusedLinearAttention.Backward(tq, tk, tv, dO, dq, dk, dv);
        return (o.ToArray(), dq.ToArray(), dk.ToArray(), dv.ToArray());
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

    [Test]
    public void Another_key_count_is_checked_against_the_values_and_the_outputs()
    {
        using var q = Cpu.Zeros(new Shape(2, 3, 4, 5));
        using var k = Cpu.Zeros(new Shape(2, 7, 4, 5));
        using var v = Cpu.Zeros(new Shape(2, 7, 4, 6));
        using var o = Cpu.Zeros(new Shape(2, 3, 4, 6));
        using var dq = Cpu.Zeros(new Shape(2, 3, 4, 5));
        using var vOfQueries = Cpu.Zeros(new Shape(2, 3, 4, 6));
        using var vOfMoreKeys = Cpu.Zeros(new Shape(2, 8, 4, 6));
        using var kOtherHeads = Cpu.Zeros(new Shape(2, 7, 3, 5));
        using var kOtherBatch = Cpu.Zeros(new Shape(1, 7, 4, 5));
        using var kOtherWidth = Cpu.Zeros(new Shape(2, 7, 4, 6));
        using var noKeys = Cpu.Zeros(new Shape(2, 0, 4, 5));
        using var noValues = Cpu.Zeros(new Shape(2, 0, 4, 6));
        LinearTests.AssertArgument(() => FocusedLinearAttention.Forward(q, k, vOfQueries), "v", "[2, 7, 4, dv]", "[2, 3, 4, 6]");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Forward(q, k, vOfMoreKeys), "v", "[2, 7, 4, dv]", "[2, 8, 4, 6]");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Backward(q, k, vOfMoreKeys, o, dq, null, null), "v", "[2, 7, 4, dv]", "[2, 8, 4, 6]");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Forward(q, kOtherHeads, v), "k", "[2, 7, 4, 5]", "[2, 7, 3, 5]");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Forward(q, kOtherBatch, v), "k", "[2, 7, 4, 5]", "[1, 7, 4, 5]");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Forward(q, kOtherWidth, v), "k", "[2, 7, 4, 5]", "[2, 7, 4, 6]");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Forward(q, noKeys, noValues), "k", "at least 1", "[2, 0, 4, 5]");
        // o and dO have the queries' tokens, dk and dv the keys'.
        LinearTests.AssertArgument(() => FocusedLinearAttention.Forward(q, k, v, v), "o", "[2, 3, 4, 6]", "[2, 7, 4, 6]");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Backward(q, k, v, v, dq, null, null), "dO", "[2, 3, 4, 6]", "[2, 7, 4, 6]");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Backward(q, k, v, o, null, dq, null), "dk", "[2, 7, 4, 5]", "[2, 3, 4, 5]");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Backward(q, k, v, o, null, null, vOfQueries), "dv", "[2, 7, 4, 6]", "[2, 3, 4, 6]");
        LinearTests.AssertArgument(() => FocusedLinearAttention.Backward(q, k, v, o, k, null, null), "dq", "[2, 3, 4, 5]", "[2, 7, 4, 5]");
    }

    // |normal| + 0.1: positive like the focusing map's outputs.
    private static double[] Positive(int seed, long count) =>
        TestData.Normal(seed, count).Select(value => Math.Abs(value) + 0.1).ToArray();

    // The definition of variants.md §6, one (batch, head) at a time: queries on seq tokens, keys and values on keySeq.
    private static double[] Expected(double[] q, double[] k, double[] v, int batch, int seq, int keySeq, int heads, int d, int dv)
    {
        var o = new double[(long)batch * seq * heads * dv];
        for (int b = 0; b < batch; b++)
        {
            for (int h = 0; h < heads; h++)
            {
                double Q(int t, int i) => q[((((b * seq) + t) * heads) + h) * d + i];
                double K(int s, int i) => k[((((b * keySeq) + s) * heads) + h) * d + i];
                double V(int s, int j) => v[((((b * keySeq) + s) * heads) + h) * dv + j];
                var keyMean = new double[d];
                var kv = new double[d, dv];
                for (int s = 0; s < keySeq; s++)
                {
                    for (int i = 0; i < d; i++)
                    {
                        keyMean[i] += K(s, i) / keySeq;
                        for (int j = 0; j < dv; j++)
                        {
                            kv[i, j] += K(s, i) * V(s, j) / keySeq;
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
    // The gradients by the documented backward, in plain loops per (batch, head): m = mean_s k_s, kv = Σ_s k_sᵀv_s / Tk,
    // z_t = 1/(q_t·m + 1e-6), c_t = kv·dO_t, e_t = −z_t²(q_t·c_t); dq_t = z_t c_t + e_t m; dkv = Σ_t z_t q_tᵀdO_t;
    // dk_s = (dkv v_s + Σ_t e_t q_t)/Tk; dv_s = k_s dkv/Tk.
    private static (double[] Dq, double[] Dk, double[] Dv) ExpectedGradients(
        double[] q, double[] k, double[] v, double[] dO, int batch, int seq, int keySeq, int heads, int d, int dv)
    {
        var dq = new double[q.Length];
        var dk = new double[k.Length];
        var dvOut = new double[v.Length];
        for (int b = 0; b < batch; b++)
        {
            for (int h = 0; h < heads; h++)
            {
                int Query(int t, int i, int width) => ((((b * seq) + t) * heads) + h) * width + i;
                int Key(int s, int i, int width) => ((((b * keySeq) + s) * heads) + h) * width + i;
                var m = new double[d];
                var kv = new double[d, dv];
                for (int s = 0; s < keySeq; s++)
                {
                    for (int i = 0; i < d; i++)
                    {
                        m[i] += k[Key(s, i, d)] / keySeq;
                        for (int j = 0; j < dv; j++)
                        {
                            kv[i, j] += k[Key(s, i, d)] * v[Key(s, j, dv)] / keySeq;
                        }
                    }
                }
                var dkv = new double[d, dv];
                var dm = new double[d];
                for (int t = 0; t < seq; t++)
                {
                    double qm = 1e-6, qc = 0;
                    var c = new double[d];
                    for (int i = 0; i < d; i++)
                    {
                        qm += q[Query(t, i, d)] * m[i];
                        for (int j = 0; j < dv; j++)
                        {
                            c[i] += kv[i, j] * dO[Query(t, j, dv)];
                        }
                        qc += q[Query(t, i, d)] * c[i];
                    }
                    double z = 1 / qm, e = -z * z * qc;
                    for (int i = 0; i < d; i++)
                    {
                        dq[Query(t, i, d)] = (z * c[i]) + (e * m[i]);
                        dm[i] += e * q[Query(t, i, d)];
                        for (int j = 0; j < dv; j++)
                        {
                            dkv[i, j] += z * q[Query(t, i, d)] * dO[Query(t, j, dv)];
                        }
                    }
                }
                for (int s = 0; s < keySeq; s++)
                {
                    for (int i = 0; i < d; i++)
                    {
                        double sum = dm[i];
                        for (int j = 0; j < dv; j++)
                        {
                            sum += dkv[i, j] * v[Key(s, j, dv)];
                        }
                        dk[Key(s, i, d)] = sum / keySeq;
                    }
                    for (int j = 0; j < dv; j++)
                    {
                        double sum = 0;
                        for (int i = 0; i < d; i++)
                        {
                            sum += k[Key(s, i, d)] * dkv[i, j];
                        }
                        dvOut[Key(s, j, dv)] = sum / keySeq;
                    }
                }
            }
        }
        return (dq, dk, dvOut);
    }
}

using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Gpu;

/// <summary>
/// Runs without a GPU: every gradient case of the GPU attention, Lightning and FLatten suites, in bf16 and fp16, can tell a
/// wrong backward from a right one. Sensitivity depends only on the CPU reference's contribution and the starting values
/// (<see cref="GradientPair.StartingValues"/>, the same seeds as the suites), so it is checked here on the CPU: for each
/// gradient, <see cref="Closeness.Added"/> must reject a backward that added nothing and one that added 0.9×. (Under the old
/// rule, 2e-2·(1 + max|after|) with N(0, 1) starting values, 10 of the 56 16-bit attention checks and 10 of the 19 FLatten
/// ones passed a backward that added nothing.)
/// </summary>
public class GpuGradientSensitivityTests
{
    private static readonly DType[] SixteenBit = [DType.BF16, DType.F16];

    private static Tensor Cpu(float[] values, Shape shape, DType dtype) => Backend.Cpu.FromArray(TestData.Representable(values, dtype), shape);

    private static void AssertSensitive(string what, DType dtype, int seed, Tensor contribution)
    {
        var c = contribution.ToArray();
        var before = GradientPair.StartingValues(seed, c, dtype);
        var r = Closeness.Added(before, c, before, dtype);
        Assert.That(r.Sensitive, Is.True, $"{what} {dtype}: max|contribution| {r.Scale:E2}, bound {r.Bound:E2}");
    }

    private static IEnumerable<TestCaseData> AttentionCases() =>
        from dtype in SixteenBit
        from c in GpuAttentionTests.Cases
        select new TestCaseData(dtype, c).SetName($"Attention gradients can tell a wrong backward {dtype} {c}");

    [TestCaseSource(nameof(AttentionCases))]
    public void Attention_cases(DType dtype, GpuAttentionTests.Problem c)
    {
        var options = new AttentionOptions(1.0 / Math.Sqrt(c.Dqk), c.Causal, c.Length == c.Tk ? null : c.Length);
        var qShape = new Shape(c.B, c.Tq, c.H, c.Dqk);
        using var q = Cpu(TestData.NormalSingle(1, qShape.ElementCount), qShape, dtype);
        using var k = Cpu(GpuAttentionTests.KeyValues(2, c, c.Dqk), new Shape(c.B, c.Tk, c.G, c.Dqk), dtype);
        using var v = Cpu(GpuAttentionTests.KeyValues(3, c, c.Dv), new Shape(c.B, c.Tk, c.G, c.Dv), dtype);
        var biasShape = new Shape(c.H, c.Tq, c.Tk);
        using var bias = c.Bias ? Cpu(TestData.NormalSingle(4, biasShape.ElementCount), biasShape, dtype) : null;
        using var o = SoftmaxAttention.Forward(q, k, v, options, bias, out var lse);
        using var _ = lse;
        using var dO = Cpu(TestData.NormalSingle(5, o.Shape.ElementCount), o.Shape, dtype);
        using var dq = Backend.Cpu.Zeros(q.Shape);
        using var dk = Backend.Cpu.Zeros(k.Shape);
        using var dv = Backend.Cpu.Zeros(v.Shape);
        using var dbias = c.Bias ? Backend.Cpu.Zeros(biasShape) : null;
        SoftmaxAttention.Backward(q, k, v, options, bias, o, lse, dO, dq, dk, dv, dbias);
        Assert.Multiple(() =>
        {
            AssertSensitive("dq", dtype, 6, dq);
            AssertSensitive("dk", dtype, 7, dk);
            AssertSensitive("dv", dtype, 8, dv);
            if (dbias is not null)
            {
                AssertSensitive("dbias", dtype, 9, dbias);
            }
        });
    }

    private static IEnumerable<TestCaseData> LightningCases() =>
        from dtype in SixteenBit
        from s in GpuLinearAttentionTests.LightningShapes
        select new TestCaseData(dtype, s).SetName($"Lightning gradients can tell a wrong backward {dtype} {s.WithDecay}");

    [TestCaseSource(nameof(LightningCases))]
    public void Lightning_cases(DType dtype, GpuLinearAttentionTests.Dims s)
    {
        double scale = 1.0 / Math.Sqrt(s.Dk);
        using var q = Cpu(TestData.NormalSingle(11, s.Keys.ElementCount, scale), s.Keys, dtype);
        using var k = Cpu(TestData.NormalSingle(12, s.Keys.ElementCount, scale), s.Keys, dtype);
        using var v = Cpu(TestData.NormalSingle(13, s.Values.ElementCount), s.Values, dtype);
        using var dO = Cpu(TestData.NormalSingle(14, s.Values.ElementCount), s.Values, dtype);
        using var dq = Backend.Cpu.Zeros(s.Keys);
        using var dk = Backend.Cpu.Zeros(s.Keys);
        using var dv = Backend.Cpu.Zeros(s.Values);
        Lightning.Backward(q, k, v, GpuLinearAttentionTests.Decays(s), dO, dq, dk, dv);
        Assert.Multiple(() =>
        {
            AssertSensitive("dq", dtype, 15, dq);
            AssertSensitive("dk", dtype, 16, dk);
            AssertSensitive("dv", dtype, 17, dv);
        });
    }

    private static IEnumerable<TestCaseData> FlattenCases() =>
        from dtype in SixteenBit
        from s in GpuLinearAttentionTests.FlattenShapes
        select new TestCaseData(dtype, s).SetName($"FLatten gradients can tell a wrong backward {dtype} {s}");

    [TestCaseSource(nameof(FlattenCases))]
    public void Focused_linear_attention_cases(DType dtype, GpuLinearAttentionTests.Dims s) =>
        FocusedLinearAttentionCase(dtype, s.Keys, s.Keys, s.Values, s.Values);

    private static IEnumerable<TestCaseData> FlattenKeyCases() =>
        from dtype in SixteenBit
        from s in GpuLinearAttentionTests.FlattenKeyShapes
        select new TestCaseData(dtype, s).SetName($"FLatten gradients can tell a wrong backward, other key count {dtype} {s}");

    [TestCaseSource(nameof(FlattenKeyCases))]
    public void Focused_linear_attention_cases_with_another_key_count(DType dtype, GpuLinearAttentionTests.FlattenDims s) =>
        FocusedLinearAttentionCase(dtype, s.Queries, s.Keys, s.Values, s.Outputs);

    private static void FocusedLinearAttentionCase(DType dtype, Shape queries, Shape keys, Shape values, Shape outputs)
    {
        float[] Uniform(int seed, long n)
        {
            var r = new Random(seed);
            return [.. Enumerable.Range(0, (int)n).Select(_ => (float)(0.05 + ((1.0 - 0.05) * r.NextDouble())))]; // as GpuPair.Uniform
        }
        using var q = Cpu(Uniform(71, queries.ElementCount), queries, dtype);
        using var k = Cpu(Uniform(72, keys.ElementCount), keys, dtype);
        using var v = Cpu(TestData.NormalSingle(73, values.ElementCount), values, dtype);
        using var dO = Cpu(TestData.NormalSingle(75, outputs.ElementCount), outputs, dtype);
        using var dq = Backend.Cpu.Zeros(queries);
        using var dk = Backend.Cpu.Zeros(keys);
        using var dv = Backend.Cpu.Zeros(values);
        FocusedLinearAttention.Backward(q, k, v, dO, dq, dk, dv);
        Assert.Multiple(() =>
        {
            AssertSensitive("dq", dtype, 76, dq);
            AssertSensitive("dk", dtype, 77, dk);
            AssertSensitive("dv", dtype, 78, dv);
        });
    }
}

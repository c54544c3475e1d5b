using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Gpu;

/// <summary>Softmax attention on the CUDA backend (flash forward, split-KV decode, three-pass backward) against the CPU reference.</summary>
[Category("Gpu")]
public class GpuAttentionTests
{
    /// <summary>One attention problem: T_k keys of which <c>Length</c> are valid (the rest is garbage that must not count).</summary>
    public sealed record Problem(int B, int Tq, int H, int G, int Dqk, int Dv, bool Causal, int Tk, int Length, bool Bias)
    {
        public override string ToString() =>
            $"B{B} Tq{Tq} H{H} G{G} dqk{Dqk} dv{Dv} {(Causal ? "causal" : "full")} Tk{Tk} L{Length}{(Bias ? " bias" : "")}";
    }

    private static Problem Full(int b, int t, int h, int g, int dqk, int dv, bool causal) => new(b, t, h, g, dqk, dv, causal, t, t, false);

    internal static readonly Problem[] Cases =
    [
        Full(1, 1, 1, 1, 8, 8, false),
        Full(2, 7, 4, 2, 64, 64, true),
        Full(1, 129, 4, 1, 128, 128, true),        // one KV head (MQA)
        Full(1, 129, 2, 2, 256, 256, false),       // widest heads
        Full(1, 1000, 2, 1, 128, 128, true),
        Full(1, 1000, 2, 2, 64, 64, false),
        Full(1, 200, 4, 4, 192, 128, true),        // MLA widths
        Full(2, 65, 4, 4, 96, 64, false),          // SAS-like d_qk ≠ d_v
        new(2, 49, 4, 4, 32, 32, false, 100, 100, true), // agent: bias, T_q ≠ T_k
        new(1, 3, 8, 2, 64, 64, true, 300, 200, false),  // a prefill chunk against a longer preallocated cache
        new(1, 1, 8, 2, 128, 128, true, 6000, 5000, false), // decode: split-KV
        new(2, 1, 4, 1, 256, 256, true, 1024, 1000, false), // decode: split-KV, one KV head, widest heads
        new(1, 2, 16, 1, 192, 128, false, 4096, 4000, false), // MQA decode with MLA widths
        // Tensor-core forward (bf16/fp16, d 64 and 128, no bias): several query and key tiles, ragged ends, GQA, a cache tail.
        Full(2, 300, 8, 2, 128, 128, false),
        new(1, 200, 4, 1, 64, 64, true, 500, 450, false),
        // Tensor-core wide heads (the 8-warp backward): SAS widths with GQA against a cache tail; MLA widths non-causal.
        new(1, 70, 4, 2, 256, 128, true, 200, 180, false),
        Full(2, 150, 4, 4, 192, 128, false),
        // 16-bit decode (attention_decode.cu): MQA's 16 packed rows in two row blocks; SAS's expanded widths, batched.
        new(1, 1, 16, 1, 128, 128, true, 3000, 2900, false),
        new(2, 1, 4, 4, 256, 128, true, 700, 650, false),
        // MFA (Step-3): 64 query heads of width 256 on one KV head, one decode row: 64 packed rows in 8 row blocks; two
        // speculative rows of a smaller group, causal limits per row.
        new(1, 1, 64, 1, 256, 256, true, 2048, 2000, false),
        new(2, 2, 8, 1, 256, 256, true, 600, 550, false),
    ];

    private static IEnumerable<TestCaseData> CaseData() =>
        from dtype in GpuPair.StorageTypes
        from c in Cases
        select new TestCaseData(dtype, c).SetName($"Attention {dtype} {c}");

    private static GpuPair Keys(CudaBackend gpu, int seed, Problem c, int width, DType dtype) =>
        GpuPair.Of(gpu, KeyValues(seed, c, width), new Shape(c.B, c.Tk, c.G, width), dtype);

    /// <summary>Keys or values <c>[B, T_k, G, width]</c>: normal, with garbage (1000) at the positions at or past Length.</summary>
    internal static float[] KeyValues(int seed, Problem c, int width)
    {
        var values = TestData.NormalSingle(seed, (long)c.B * c.Tk * c.G * width);
        // Positions at or past Length hold garbage the kernels must never read into the result.
        for (int b = 0; b < c.B; b++)
        {
            for (long at = (((long)b * c.Tk) + c.Length) * c.G * width; at < ((long)b + 1) * c.Tk * c.G * width; at++)
            {
                values[at] = 1000f;
            }
        }
        return values;
    }

    [TestCaseSource(nameof(CaseData))]
    public void Forward_and_backward_match_the_cpu(DType dtype, Problem c)
    {
        var gpu = Requires.CudaDevice();
        var options = new AttentionOptions(1.0 / Math.Sqrt(c.Dqk), c.Causal, c.Length == c.Tk ? null : c.Length);
        using var q = GpuPair.Random(gpu, 1, new Shape(c.B, c.Tq, c.H, c.Dqk), dtype);
        using var k = Keys(gpu, 2, c, c.Dqk, dtype);
        using var v = Keys(gpu, 3, c, c.Dv, dtype);
        using var bias = c.Bias ? GpuPair.Random(gpu, 4, new Shape(c.H, c.Tq, c.Tk), dtype) : null;

        var oCpu = SoftmaxAttention.Forward(q.Cpu, k.Cpu, v.Cpu, options, bias?.Cpu, out var lseCpu);
        var oGpu = SoftmaxAttention.Forward(q.Gpu, k.Gpu, v.Gpu, options, bias?.Gpu, out var lseGpu);
        using var o = GpuPair.Wrap(oCpu, oGpu);
        using var lse = GpuPair.Wrap(lseCpu, lseGpu);
        o.Compare($"attention {c} o", dtype);
        lse.Compare($"attention {c} lse", DType.F32); // lse is fp32 whatever the storage type: fp32's tolerance

        // The CPU reference into zeros gives each gradient's contribution; the GPU adds into starting values of that size.
        using var dO = GpuPair.Random(gpu, 5, o.Cpu.Shape, dtype);
        using var dq = GradientPair.Zeros(gpu, 6, q.Cpu.Shape, dtype);
        using var dk = GradientPair.Zeros(gpu, 7, k.Cpu.Shape, dtype);
        using var dv = GradientPair.Zeros(gpu, 8, v.Cpu.Shape, dtype);
        using var dbias = c.Bias ? GradientPair.Zeros(gpu, 9, bias!.Cpu.Shape, dtype) : null;
        SoftmaxAttention.Backward(q.Cpu, k.Cpu, v.Cpu, options, bias?.Cpu, o.Cpu, lse.Cpu, dO.Cpu, dq.Cpu, dk.Cpu, dv.Cpu, dbias?.Cpu);
        GradientPair.Start(true, dq, dk, dv, dbias);
        SoftmaxAttention.Backward(q.Gpu, k.Gpu, v.Gpu, options, bias?.Gpu, o.Gpu, lse.Gpu, dO.Gpu, dq.Gpu, dk.Gpu, dv.Gpu, dbias?.Gpu);
        dq.Compare($"attention {c} dq", dtype);
        dk.Compare($"attention {c} dk", dtype);
        dv.Compare($"attention {c} dv", dtype);
        dbias?.Compare($"attention {c} dbias", dtype);
    }

    /// <summary>
    /// 16-bit heads of widths 64/64, 128/128, MLA's 192/128 and SAS's 256/128 take the tensor-core forward and backward
    /// (so the cases above test them); fp32 heads and other widths (MFA's 256/256: the CUDA-core kernels) do not.
    /// </summary>
    [Test]
    public void Sixteen_bit_heads_take_the_tensor_core_kernels()
    {
        var gpu = Requires.CudaDevice();
        Assume.That(gpu.Device.ComputeCapabilityMajor, Is.GreaterThanOrEqualTo(8), "tensor-core kernels need sm_80 or newer");
        Assume.That(SoftmaxAttentionTensorCoreCuda.Enabled, Is.True, $"{SoftmaxAttentionTensorCoreCuda.DisableVariable}=0: tensor cores disabled");
        foreach (var (dtype, qk, vw, forward, backward) in new[]
        {
            (DType.BF16, 64, 64, true, true), (DType.F16, 128, 128, true, true), (DType.BF16, 192, 128, true, true),
            (DType.F16, 256, 128, true, true), (DType.F32, 128, 128, false, false), (DType.BF16, 96, 64, false, false),
            (DType.BF16, 256, 256, false, false),
        })
        {
            using var q = gpu.Zeros(new Shape(1, 70, 4, qk), dtype);
            using var v = gpu.Zeros(new Shape(1, 70, 4, vw), dtype);
            Assert.That(SoftmaxAttentionTensorCoreCuda.Handles(gpu, q, q, v, null, v), Is.EqualTo(forward), $"{dtype} {qk}/{vw} forward");
            Assert.That(SoftmaxAttentionTensorCoreCuda.HandlesBackward(gpu, q, q, v, null, v), Is.EqualTo(backward), $"{dtype} {qk}/{vw} backward");
            Assert.That(SoftmaxAttentionTensorCoreCuda.Handles(gpu, q, q, v, q, v), Is.False, $"{dtype} {qk}/{vw} with a bias");
        }
    }

    /// <summary>
    /// A few 16-bit query rows against a cache take the decode kernel (so the decode cases above test it): not with a bias,
    /// fp32, other widths, or more query rows than decode has.
    /// </summary>
    [Test]
    public void Few_sixteen_bit_query_rows_take_the_decode_kernel()
    {
        var gpu = Requires.CudaDevice();
        Assume.That(SoftmaxAttentionTensorCoreCuda.Enabled, Is.True, $"{SoftmaxAttentionTensorCoreCuda.DisableVariable}=0: fast kernels disabled");
        foreach (var (dtype, tq, heads, kvHeads, qk, vw, bias, expected) in new[]
        {
            (DType.BF16, 1, 16, 4, 128, 128, false, true), (DType.F16, 3, 8, 2, 64, 64, false, true),
            (DType.BF16, 1, 32, 32, 256, 128, false, true), (DType.BF16, 1, 16, 4, 128, 128, true, false),
            (DType.F32, 1, 16, 4, 128, 128, false, false), (DType.BF16, 1, 16, 1, 192, 128, false, false),
            (DType.BF16, 64, 16, 4, 128, 128, false, false), (DType.BF16, 8, 64, 1, 64, 64, false, false),
            (DType.BF16, 1, 64, 1, 256, 256, false, true), (DType.F16, 1, 64, 1, 256, 256, false, true),
            (DType.BF16, 2, 64, 1, 256, 256, false, false),
        })
        {
            using var q = gpu.Zeros(new Shape(1, tq, heads, qk), dtype);
            using var k = gpu.Zeros(new Shape(1, 100, kvHeads, qk), dtype);
            using var v = gpu.Zeros(new Shape(1, 100, kvHeads, vw), dtype);
            using var o = gpu.Zeros(new Shape(1, tq, heads, vw), dtype);
            using var b = bias ? gpu.Zeros(new Shape(heads, tq, 100), dtype) : null;
            var shape = new SoftmaxAttentionCuda.Shape(1, tq, heads, qk, 100, kvHeads, vw, 100, 0.1f, 1);
            Assert.That(SoftmaxAttentionDecodeCuda.Handles(gpu, q, k, v, b, o, shape), Is.EqualTo(expected),
                $"{dtype} Tq {tq} H {heads} G {kvHeads} {qk}/{vw}{(bias ? " bias" : "")}");
        }
    }

    [Test]
    public void Backward_with_only_some_gradients_leaves_the_others_alone()
    {
        var gpu = Requires.CudaDevice();
        var c = Full(1, 40, 4, 2, 32, 32, true);
        var options = new AttentionOptions(0.2, true);
        using var q = GpuPair.Random(gpu, 11, new Shape(c.B, c.Tq, c.H, c.Dqk), DType.F32);
        using var k = GpuPair.Random(gpu, 12, new Shape(c.B, c.Tk, c.G, c.Dqk), DType.F32);
        using var v = GpuPair.Random(gpu, 13, new Shape(c.B, c.Tk, c.G, c.Dv), DType.F32);
        var o = SoftmaxAttention.Forward(q.Gpu, k.Gpu, v.Gpu, options, null, out var lse);
        using var dO = gpu.FromArray(TestData.NormalSingle(14, o.Shape.ElementCount), o.Shape);
        using var dk = gpu.Zeros(k.Gpu.Shape);
        SoftmaxAttention.Backward(q.Gpu, k.Gpu, v.Gpu, options, null, o, lse, dO, null, dk, null);
        using var dkCpu = Backend.Cpu.Zeros(k.Cpu.Shape);
        var oCpu = SoftmaxAttention.Forward(q.Cpu, k.Cpu, v.Cpu, options, null, out var lseCpu);
        using var dOCpu = Backend.Cpu.FromArray(dO.ToArray(), dO.Shape);
        SoftmaxAttention.Backward(q.Cpu, k.Cpu, v.Cpu, options, null, oCpu, lseCpu, dOCpu, null, dkCpu, null);
        Parity.AssertAdded("attention dk only", DType.F32, dk.Shape.ToString(), null, dkCpu.ToArray(), dk.ToArray());
        o.Dispose();
        lse.Dispose();
        oCpu.Dispose();
        lseCpu.Dispose();
    }

    [Test]
    public void Heads_wider_than_256_are_refused_naming_the_argument()
    {
        var gpu = Requires.CudaDevice();
        using var q = gpu.Zeros(new Shape(1, 2, 1, 320));
        using var v = gpu.Zeros(new Shape(1, 2, 1, 64));
        var e = Assert.Throws<ArgumentException>(() => SoftmaxAttention.Forward(q, q, v, new AttentionOptions(0.1, false)).Dispose());
        Assert.That(e!.ParamName, Is.EqualTo("q"));
        Assert.That(e.Message, Does.Contain("256").And.Contain("320"));
    }

    /// <summary>
    /// Forward + backward at B=1, H=8, T=32768, d=128 in bf16 completes, and its peak device allocation grows linearly with T:
    /// from T=8192 to T=32768 (4×) the peak grows by at most 4.5×, where a T×T score matrix would grow it 16×.
    /// </summary>
    [Test]
    public void Long_sequences_run_in_memory_linear_in_T()
    {
        var gpu = Requires.CudaDevice();
        long Peak(int t)
        {
            gpu.Synchronize();
            gpu.Context.ResetPeakAllocatedBytes();
            long before = gpu.Context.AllocatedBytes;
            var shape = new Shape(1, t, 8, 128);
            using var q = gpu.FromArray(TestData.NormalSingle(21, shape.ElementCount), shape, DType.BF16);
            using var k = gpu.FromArray(TestData.NormalSingle(22, shape.ElementCount), shape, DType.BF16);
            using var v = gpu.FromArray(TestData.NormalSingle(23, shape.ElementCount), shape, DType.BF16);
            using var dO = gpu.FromArray(TestData.NormalSingle(24, shape.ElementCount), shape, DType.BF16);
            using var dq = gpu.Zeros(shape, DType.BF16);
            using var dk = gpu.Zeros(shape, DType.BF16);
            using var dv = gpu.Zeros(shape, DType.BF16);
            var options = new AttentionOptions(1.0 / Math.Sqrt(128), Causal: true);
            using var o = SoftmaxAttention.Forward(q, k, v, options, null, out var lse);
            SoftmaxAttention.Backward(q, k, v, options, null, o, lse, dO, dq, dk, dv);
            var sample = dq.ToArray(); // waits for the work
            Assert.That(sample.All(float.IsFinite), Is.True, $"T={t}: dq has non-finite values");
            lse.Dispose();
            return gpu.Context.PeakAllocatedBytes - before;
        }
        long small = Peak(8192), large = Peak(32768);
        TestContext.Out.WriteLine($"peak device allocation: T=8192 {small / 1048576.0:F1} MiB, T=32768 {large / 1048576.0:F1} MiB");
        Assert.That(large, Is.LessThanOrEqualTo(4.5 * small), "peak allocation grows faster than linearly in T");
    }
}

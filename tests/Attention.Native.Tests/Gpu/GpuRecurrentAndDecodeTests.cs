using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Gpu;

/// <summary>
/// Lightning (forward with carried state, the in-place decode step, backward), FLatten's linear attention, and the decode
/// kernels (MLA absorbed, TPA from factors) on the CUDA backend against the CPU reference.
/// </summary>
[Category("Gpu")]
public class GpuRecurrentAndDecodeTests
{
    public sealed record LightningShape(int B, int T, int H, int Dk, int Dv)
    {
        public override string ToString() => $"B{B} T{T} H{H} dk{Dk} dv{Dv}";
    }

    private static readonly LightningShape[] LightningShapes =
    [
        new(1, 1, 1, 8, 8), new(2, 7, 4, 24, 40), new(1, 129, 4, 64, 64), new(1, 1000, 2, 128, 128), new(1, 129, 1, 256, 256), new(2, 65, 70, 8, 16),
    ];

    private static IEnumerable<TestCaseData> LightningCases() =>
        from dtype in GpuPair.StorageTypes
        from s in LightningShapes
        select new TestCaseData(dtype, s).SetName($"Lightning {dtype} {s}");

    private static double[] Decays(int heads) => [.. Enumerable.Range(0, heads).Select(h => h % 4 == 3 ? 1.0 : 0.5 + (0.49 * ((h % 4) + 1) / 4))];

    [TestCaseSource(nameof(LightningCases))]
    public void Lightning_forward_with_state_and_backward(DType dtype, LightningShape s)
    {
        var gpu = Requires.CudaDevice();
        var keys = new Shape(s.B, s.T, s.H, s.Dk);
        var values = new Shape(s.B, s.T, s.H, s.Dv);
        var states = new Shape(s.B, s.H, s.Dk, s.Dv);
        double[] decay = Decays(s.H);
        double scale = 1.0 / Math.Sqrt(s.Dk);
        using var q = GpuPair.Random(gpu, 1, keys, dtype, scale);
        using var k = GpuPair.Random(gpu, 2, keys, dtype, scale);
        using var v = GpuPair.Random(gpu, 3, values, dtype);
        using var initial = GpuPair.Random(gpu, 4, states, dtype, 0.1);
        using var final = GpuPair.Zeros(gpu, states, dtype);
        using var o = GpuPair.Zeros(gpu, values, dtype);
        Lightning.Forward(q.Cpu, k.Cpu, v.Cpu, decay, o.Cpu, initial.Cpu, final.Cpu);
        Lightning.Forward(q.Gpu, k.Gpu, v.Gpu, decay, o.Gpu, initial.Gpu, final.Gpu);
        o.Compare($"lightning {s} o", dtype);
        final.Compare($"lightning {s} final state", dtype);

        // Without states.
        using var plain = GpuPair.Wrap(Lightning.Forward(q.Cpu, k.Cpu, v.Cpu, decay), Lightning.Forward(q.Gpu, k.Gpu, v.Gpu, decay));
        plain.Compare($"lightning {s} o without state", dtype);

        using var dO = GpuPair.Random(gpu, 5, values, dtype);
        using var dq = GpuPair.Random(gpu, 6, keys, dtype);
        using var dk = GpuPair.Random(gpu, 7, keys, dtype);
        using var dv = GpuPair.Random(gpu, 8, values, dtype);
        Lightning.Backward(q.Cpu, k.Cpu, v.Cpu, decay, dO.Cpu, dq.Cpu, dk.Cpu, dv.Cpu);
        Lightning.Backward(q.Gpu, k.Gpu, v.Gpu, decay, dO.Gpu, dq.Gpu, dk.Gpu, dv.Gpu);
        dq.Compare($"lightning {s} dq", dtype);
        dk.Compare($"lightning {s} dk", dtype);
        dv.Compare($"lightning {s} dv", dtype);
    }

    [TestCaseSource(nameof(DecodeStepCases))]
    public void Lightning_decode_steps_update_the_state_in_place(DType dtype)
    {
        var gpu = Requires.CudaDevice();
        const int B = 2, H = 4, Dk = 32, Dv = 48, Steps = 5;
        double[] decay = Decays(H);
        using var state = GpuPair.Random(gpu, 9, new Shape(B, H, Dk, Dv), dtype, 0.1);
        for (int step = 0; step < Steps; step++)
        {
            using var q = GpuPair.Random(gpu, 10 + step, new Shape(B, 1, H, Dk), dtype, 0.2);
            using var k = GpuPair.Random(gpu, 20 + step, new Shape(B, 1, H, Dk), dtype, 0.2);
            using var v = GpuPair.Random(gpu, 30 + step, new Shape(B, 1, H, Dv), dtype);
            using var o = GpuPair.Zeros(gpu, new Shape(B, 1, H, Dv), dtype);
            Lightning.Forward(q.Cpu, k.Cpu, v.Cpu, decay, o.Cpu, state.Cpu, state.Cpu);
            Lightning.Forward(q.Gpu, k.Gpu, v.Gpu, decay, o.Gpu, state.Gpu, state.Gpu);
            o.Compare($"lightning decode step {step} o", dtype);
            state.Compare($"lightning decode step {step} state", dtype);
        }
    }

    private static IEnumerable<TestCaseData> DecodeStepCases() => GpuPair.StorageTypes.Select(d => new TestCaseData(d).SetName($"Lightning decode steps {d}"));

    private static IEnumerable<TestCaseData> FlattenCases() =>
        from dtype in GpuPair.StorageTypes
        from s in new[] { new LightningShape(1, 1, 1, 8, 8), new LightningShape(2, 7, 4, 32, 32), new LightningShape(1, 129, 8, 128, 128), new LightningShape(1, 1000, 2, 64, 96) }
        select new TestCaseData(dtype, s).SetName($"FocusedLinearAttention {dtype} {s}");

    [TestCaseSource(nameof(FlattenCases))]
    public void FocusedLinearAttention_forward_and_backward(DType dtype, LightningShape s)
    {
        var gpu = Requires.CudaDevice();
        var keys = new Shape(s.B, s.T, s.H, s.Dk);
        var values = new Shape(s.B, s.T, s.H, s.Dv);
        // Positive inputs, as the focusing map produces them.
        using var q = GpuPair.Uniform(gpu, 41, keys, dtype, 0.05, 1.0);
        using var k = GpuPair.Uniform(gpu, 42, keys, dtype, 0.05, 1.0);
        using var v = GpuPair.Random(gpu, 43, values, dtype);
        using var o = GpuPair.Zeros(gpu, values, dtype);
        FocusedLinearAttention.Forward(q.Cpu, k.Cpu, v.Cpu, o.Cpu);
        FocusedLinearAttention.Forward(q.Gpu, k.Gpu, v.Gpu, o.Gpu);
        o.Compare($"focused linear attention {s} o", dtype);
        using var dO = GpuPair.Random(gpu, 44, values, dtype);
        using var dq = GpuPair.Random(gpu, 45, keys, dtype);
        using var dk = GpuPair.Random(gpu, 46, keys, dtype);
        using var dv = GpuPair.Random(gpu, 47, values, dtype);
        FocusedLinearAttention.Backward(q.Cpu, k.Cpu, v.Cpu, dO.Cpu, dq.Cpu, dk.Cpu, dv.Cpu);
        FocusedLinearAttention.Backward(q.Gpu, k.Gpu, v.Gpu, dO.Gpu, dq.Gpu, dk.Gpu, dv.Gpu);
        dq.Compare($"focused linear attention {s} dq", dtype);
        dk.Compare($"focused linear attention {s} dk", dtype);
        dv.Compare($"focused linear attention {s} dv", dtype);
    }

    public sealed record DecodeShape(int B, int Tq, int Length, int Capacity, int H)
    {
        public override string ToString() => $"B{B} Tq{Tq} L{Length} cap{Capacity} H{H}";
    }

    private static readonly DecodeShape[] DecodeShapes =
    [
        new(1, 1, 1, 4, 4), new(2, 1, 7, 16, 4), new(1, 3, 129, 200, 4), new(2, 1, 1000, 1024, 8), new(1, 1, 5000, 6000, 16), new(1, 3, 5000, 5000, 4),
    ];

    private static IEnumerable<TestCaseData> DecodeCases(string name) =>
        from dtype in GpuPair.StorageTypes
        from s in DecodeShapes
        select new TestCaseData(dtype, s).SetName($"{name} {dtype} {s}");

    private static IEnumerable<TestCaseData> LatentCases() => DecodeCases("LatentAttention decode");

    private static IEnumerable<TestCaseData> TpaCases() => DecodeCases("TpaDecode");

    // Cache rows at or past Length hold large garbage that must not reach the result.
    private static GpuPair Cache(CudaBackend gpu, int seed, int b, int capacity, int length, int rowWidth, DType dtype, double scale = 1.0)
    {
        var values = TestData.NormalSingle(seed, (long)b * capacity * rowWidth, scale);
        for (int bb = 0; bb < b; bb++)
        {
            for (long at = (((long)bb * capacity) + length) * rowWidth; at < ((long)bb + 1) * capacity * rowWidth; at++)
            {
                values[at] = 1000f;
            }
        }
        return GpuPair.Of(gpu, values, new Shape(b, capacity, rowWidth), dtype);
    }

    [TestCaseSource(nameof(LatentCases))]
    public void LatentAttention_decode_matches_the_cpu(DType dtype, DecodeShape s)
    {
        var gpu = Requires.CudaDevice();
        // Small widths for short caches; the benchmark widths (d_c 512, d_r 64, d_n 128, d_v 128) for the long ones.
        bool wide = s.Length >= 1000;
        int nope = wide ? 128 : 16, rope = wide ? 64 : 8, latent = wide ? 512 : 32, dv = wide ? 128 : 16;
        using var q = GpuPair.Random(gpu, 51, new Shape(s.B, s.Tq, s.H, nope + rope), dtype);
        using var cache = Cache(gpu, 52, s.B, s.Capacity, s.Length, latent + rope, dtype);
        using var kvUp = GpuPair.Random(gpu, 53, new Shape(s.H * (nope + dv), latent), dtype, 1.0 / Math.Sqrt(latent));
        double scale = 1.0 / Math.Sqrt(nope + rope);
        using var o = GpuPair.Wrap(
            LatentAttention.Decode(q.Cpu, cache.Cpu, kvUp.Cpu, nope, s.Length, scale),
            LatentAttention.Decode(q.Gpu, cache.Gpu, kvUp.Gpu, nope, s.Length, scale));
        o.Compare($"latent attention decode {s}", dtype);
    }

    [TestCaseSource(nameof(TpaCases))]
    public void TpaDecode_matches_the_cpu(DType dtype, DecodeShape s)
    {
        var gpu = Requires.CudaDevice();
        const int Rq = 6, Rk = 2, Rv = 2;
        int d = s.Length >= 1000 ? 128 : 32;
        using var aq = GpuPair.Random(gpu, 61, new Shape(s.B, s.Tq, s.H, Rq), dtype);
        using var bq = GpuPair.Random(gpu, 62, new Shape(s.B, s.Tq, Rq, d), dtype);
        using var ak = Cache(gpu, 63, s.B, s.Capacity, s.Length, s.H * Rk, dtype);
        using var bk = Cache(gpu, 64, s.B, s.Capacity, s.Length, Rk * d, dtype);
        using var av = Cache(gpu, 65, s.B, s.Capacity, s.Length, s.H * Rv, dtype);
        using var bv = Cache(gpu, 66, s.B, s.Capacity, s.Length, Rv * d, dtype);
        Tensor R(Tensor t, int inner, int width) => t.Reshape(new Shape(s.B, s.Capacity, inner, width));
        using var akC = R(ak.Cpu, s.H, Rk);
        using var bkC = R(bk.Cpu, Rk, d);
        using var avC = R(av.Cpu, s.H, Rv);
        using var bvC = R(bv.Cpu, Rv, d);
        using var akG = R(ak.Gpu, s.H, Rk);
        using var bkG = R(bk.Gpu, Rk, d);
        using var avG = R(av.Gpu, s.H, Rv);
        using var bvG = R(bv.Gpu, Rv, d);
        using var o = GpuPair.Wrap(
            TpaDecode.Forward(aq.Cpu, bq.Cpu, akC, bkC, avC, bvC, s.Length),
            TpaDecode.Forward(aq.Gpu, bq.Gpu, akG, bkG, avG, bvG, s.Length));
        o.Compare($"tpa decode {s}", dtype);
    }
}

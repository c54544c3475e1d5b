using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Gpu;

/// <summary>
/// The decode kernels (MLA absorbed, TPA from factors; split-KV over long caches) on the CUDA backend against the CPU reference.
/// Lightning and FLatten are in <see cref="GpuLinearAttentionTests"/>.
/// </summary>
[Category("Gpu")]
public class GpuDecodeTests
{
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

    /// <summary>16-bit caches of DeepSeek's widths (latent 512, rope 64) take the tensor-core split kernel (so the long cases above test it).</summary>
    [Test]
    public void Deepseek_widths_take_the_tensor_core_decode()
    {
        var gpu = Requires.CudaDevice();
        Assume.That(gpu.Device.ComputeCapabilityMajor, Is.GreaterThanOrEqualTo(8), "tensor-core kernels need sm_80 or newer");
        Assume.That(SoftmaxAttentionTensorCoreCuda.Enabled, Is.True, $"{SoftmaxAttentionTensorCoreCuda.DisableVariable}=0: fast kernels disabled");
        foreach (var (dtype, latent, rope, expected) in new[]
        {
            (DType.BF16, 512, 64, true), (DType.F16, 512, 64, true), (DType.F32, 512, 64, false), (DType.BF16, 32, 8, false), (DType.BF16, 512, 32, false),
        })
        {
            using var cache = gpu.Zeros(new Shape(1, 10, latent + rope), dtype);
            Assert.That(LatentAttentionCuda.TensorCoresFit(gpu, cache, latent, rope), Is.EqualTo(expected), $"{dtype} latent {latent} rope {rope}");
        }
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

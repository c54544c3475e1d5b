using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Gpu;

/// <summary>
/// The decode launchers (MLA absorbed, TPA from factors) over many query tokens, as in a prefill through the cache: the
/// B·T_q tokens go in chunks (grid.y holds at most 65535 of them, and the scratch stays under a budget). Here the chunk is
/// forced small so that small shapes run several chunks, an uneven last one and chunks together with several KV splits.
/// The plain decode matrix (cache lengths 1 … 5000, T_q 1 and 3, B 1 and 2) is in <see cref="GpuRecurrentAndDecodeTests"/>.
/// </summary>
[Category("Gpu")]
public class GpuDecodeChunkTests
{
    public sealed record ChunkShape(int B, int Tq, int Length, int Capacity, int H, int MaxChunk)
    {
        public override string ToString() => $"B{B} Tq{Tq} L{Length} cap{Capacity} H{H} chunk{MaxChunk}";
    }

    private static readonly ChunkShape[] ChunkShapes =
    [
        new(2, 5, 5, 9, 3, 1),          // one token per chunk; query 0 sees key 0 only
        new(2, 40, 300, 320, 4, 7),     // 80 tokens in chunks of 7 (last one 3), crossing the batch boundary
        new(1, 3, 5000, 5100, 4, 2),    // several KV splits and two chunks
    ];

    private static IEnumerable<TestCaseData> Cases(string name) =>
        from dtype in GpuPair.StorageTypes
        from s in ChunkShapes
        select new TestCaseData(dtype, s).SetName($"{name} {dtype} {s}");

    private static IEnumerable<TestCaseData> LatentCases() => Cases("LatentAttention chunked decode");

    // Both TPA kernels: the all-heads one the launcher picks for these shapes, and the per-head one it falls back to.
    private static IEnumerable<TestCaseData> TpaCases() =>
        from dtype in GpuPair.StorageTypes
        from s in ChunkShapes
        from allHeads in new[] { true, false }
        select new TestCaseData(dtype, s, allHeads).SetName($"TpaDecode chunked decode {dtype} {s} {(allHeads ? "all heads" : "per head")}");

    // Cache rows at or past Length hold large garbage that must not reach the result.
    private static GpuPair Cache(CudaBackend gpu, int seed, int b, int capacity, int length, int rowWidth, DType dtype)
    {
        var values = TestData.NormalSingle(seed, (long)b * capacity * rowWidth, 1.0);
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
    public void LatentAttention_in_chunks_matches_the_cpu(DType dtype, ChunkShape s)
    {
        var gpu = Requires.CudaDevice();
        const int Nope = 16, Rope = 8, Latent = 48, Dv = 24;
        using var q = GpuPair.Random(gpu, 71, new Shape(s.B, s.Tq, s.H, Nope + Rope), dtype);
        using var cache = Cache(gpu, 72, s.B, s.Capacity, s.Length, Latent + Rope, dtype);
        using var kvUp = GpuPair.Random(gpu, 73, new Shape(s.H * (Nope + Dv), Latent), dtype, 1.0 / Math.Sqrt(Latent));
        double scale = 1.0 / Math.Sqrt(Nope + Rope);
        var oGpu = gpu.Zeros(new Shape(s.B, s.Tq, s.H, Dv), dtype);
        LatentAttentionCuda.Decode(gpu, q.Gpu, cache.Gpu, kvUp.Gpu, oGpu, Nope, s.Length, scale, s.MaxChunk);
        using var o = GpuPair.Wrap(LatentAttention.Decode(q.Cpu, cache.Cpu, kvUp.Cpu, Nope, s.Length, scale), oGpu);
        o.Compare($"latent attention chunked decode {s}", dtype);
    }

    [TestCaseSource(nameof(TpaCases))]
    public void TpaDecode_in_chunks_matches_the_cpu(DType dtype, ChunkShape s, bool allHeads)
    {
        var gpu = Requires.CudaDevice();
        const int Rq = 3, Rk = 2, Rv = 3, D = 40;
        using var aq = GpuPair.Random(gpu, 81, new Shape(s.B, s.Tq, s.H, Rq), dtype);
        using var bq = GpuPair.Random(gpu, 82, new Shape(s.B, s.Tq, Rq, D), dtype);
        using var ak = Cache(gpu, 83, s.B, s.Capacity, s.Length, s.H * Rk, dtype);
        using var bk = Cache(gpu, 84, s.B, s.Capacity, s.Length, Rk * D, dtype);
        using var av = Cache(gpu, 85, s.B, s.Capacity, s.Length, s.H * Rv, dtype);
        using var bv = Cache(gpu, 86, s.B, s.Capacity, s.Length, Rv * D, dtype);
        Tensor R(Tensor t, int inner, int width) => t.Reshape(new Shape(s.B, s.Capacity, inner, width));
        using var akC = R(ak.Cpu, s.H, Rk);
        using var bkC = R(bk.Cpu, Rk, D);
        using var avC = R(av.Cpu, s.H, Rv);
        using var bvC = R(bv.Cpu, Rv, D);
        using var akG = R(ak.Gpu, s.H, Rk);
        using var bkG = R(bk.Gpu, Rk, D);
        using var avG = R(av.Gpu, s.H, Rv);
        using var bvG = R(bv.Gpu, Rv, D);
        var oGpu = gpu.Zeros(new Shape(s.B, s.Tq, s.H, D), dtype);
        TpaDecodeCuda.Forward(gpu, aq.Gpu, bq.Gpu, akG, bkG, avG, bvG, s.Length, oGpu, s.MaxChunk, allHeads);
        using var o = GpuPair.Wrap(TpaDecode.Forward(aq.Cpu, bq.Cpu, akC, bkC, avC, bvC, s.Length), oGpu);
        o.Compare($"tpa chunked decode {s} {(allHeads ? "all heads" : "per head")}", dtype);
    }
}

/// <summary>The chunk planner of the decode launchers (host arithmetic only; runs without a GPU).</summary>
public class DecodeChunkPlanTests
{
    private const long Budget = LatentAttentionCuda.ScratchBudgetBytes;

    [TestCase(10, 1L, int.MaxValue, ExpectedResult = 10)]                 // everything in one chunk
    [TestCase(100_000, 1L, int.MaxValue, ExpectedResult = 65535)]        // grid.y bound
    [TestCase(100_000, Budget / 4, int.MaxValue, ExpectedResult = 4)]    // scratch budget
    [TestCase(100_000, Budget + 1, int.MaxValue, ExpectedResult = 1)]    // one token even over the budget
    [TestCase(100_000, 1L, 7, ExpectedResult = 7)]                       // forced chunk
    [TestCase(5, 1L, 0, ExpectedResult = 1)]                             // a forced chunk below one is one
    public int Chunk_tokens(int tokens, long bytesPerToken, int maxChunk) => LatentAttentionCuda.ChunkTokens(tokens, bytesPerToken, maxChunk);

    // tpa_decode_heads's shared memory, array by array (cuda/tpa_decode.cu; tests/emulation/tpa_decode_harness.cpp counts the same):
    // B_q, A_q, padded B_k tile, A_k, B_v, A_v tiles, G quarter sums, scores, running state.
    [TestCase(32, 64, 6, 2, 2, 227 * 1024, ExpectedResult = 4 * ((6 * 64) + (32 * 6) + (32 * 2 * 65) + (32 * 32 * 2) + (32 * 2 * 64) + (32 * 32 * 2) + (4 * 32 * 2 * 6) + (32 * 32) + (3 * 32)))]
    [TestCase(4, 16, 6, 2, 2, 48 * 1024, ExpectedResult = 4 * ((6 * 16) + (4 * 6) + (32 * 2 * 17) + (32 * 4 * 2) + (32 * 2 * 16) + (32 * 4 * 2) + (4 * 32 * 2 * 6) + (4 * 32) + (3 * 4)))]
    [TestCase(32, 64, 6, 2, 2, 48 * 1024, ExpectedResult = null)]   // over the device's opt-in shared memory
    [TestCase(4, 16, 17, 2, 2, 227 * 1024, ExpectedResult = null)]  // query rank past the kernel's registers
    [TestCase(64, 256, 2, 1, 1, 227 * 1024, ExpectedResult = null)] // more output groups (32 head pairs × 64 column quads) than 4 per thread
    public int? Tpa_all_heads_shared_memory(int heads, int width, int rq, int rk, int rv, int optin) =>
        TpaDecodeCuda.HeadsSharedBytes(heads, width, rq, rk, rv, optin);
}

using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>
    /// CUDA launcher of <see cref="LatentAttention"/> (cuda/latent_attention.cu): absorb W_kb into the queries, split-KV attention
    /// over the cached latent (the split count from <see cref="SoftmaxAttentionCuda.PlanSplits"/>; on tensor cores for DeepSeek's
    /// widths, <see cref="TensorCoreProgram"/>), then combine and lift with W_vb.
    /// </summary>
    internal static class LatentAttentionCuda
    {
        /// <summary>Widest latent a block accumulates (cuda/include/split_kv.cuh SPLIT_MAX_WIDTH).</summary>
        public const int MaxLatent = 1024;

        private const int Threads = 256;

        private static readonly KernelNames Absorb = new("latent_attention_absorb");
        private static readonly KernelNames Split = new("latent_attention_decode_split");
        private static readonly KernelNames Combine = new("latent_attention_decode_combine");

        public static KernelProgram Program { get; } = KernelProgram.ForStorageTypes("latent_attention.cu", Absorb.Template, Split.Template, Combine.Template);

        /// <summary>
        /// The tensor-core split kernel (cuda/latent_attention_mma.cu) for DeepSeek's widths: every head of a query token is a row
        /// of one mma tile scoring the same cache rows, which on CUDA cores costs more arithmetic per cached byte than they keep
        /// up with. bf16/fp16, sm_80+, latent 512 and rope 64; same arguments and partials as the CUDA-core split kernel.
        /// </summary>
        public static KernelProgram TensorCoreProgram { get; } = new(
            "latent_attention_mma.cu",
            [$"latent_attention_decode_mma<bf16_t, {MmaLatent}, {MmaRope}>", $"latent_attention_decode_mma<half_t, {MmaLatent}, {MmaRope}>"]);

        private const int MmaLatent = 512, MmaRope = 64, MmaThreads = 128, MmaHeadsPerBlock = 16, MmaKeyTile = 32;

        /// <summary>True when the tensor-core split kernel serves this decode on this device.</summary>
        internal static bool TensorCoresFit(CudaBackend backend, Tensor cache, int latent, int rope) =>
            SoftmaxAttentionTensorCoreCuda.Enabled
            && cache.DType is DType.BF16 or DType.F16
            && latent == MmaLatent && rope == MmaRope
            && backend.Device.ComputeCapabilityMajor >= 8
            && SoftmaxAttentionTensorCoreCuda.Aligned(cache)
            && MmaSharedBytes + MmaStaticSharedBytes <= backend.Device.MaxSharedMemoryPerBlockOptin;

        // Q̂ tile, two cache tiles, probabilities (16-bit); scores and the running state (fp32). The tiles' cache rows (two
        // tiles of 64-bit indices) are static shared memory, counted against the opt-in limit with the rest.
        private const int MmaSharedBytes = ((MmaHeadsPerBlock * (MmaLatent + MmaRope)) + (2 * MmaKeyTile * (MmaLatent + MmaRope))
            + (MmaHeadsPerBlock * MmaKeyTile)) * 2 + ((MmaHeadsPerBlock * MmaKeyTile) + (3 * MmaHeadsPerBlock)) * 4;

        private const int MmaStaticSharedBytes = 2 * MmaKeyTile * sizeof(long);

        public static void Decode(CudaBackend backend, Tensor q, Tensor cache, Tensor kvUp, Tensor o, int nopeDim, int length, double scale) =>
            Decode(backend, q, cache, kvUp, o, nopeDim, length, scale, MaxGridY);

        /// <summary>
        /// As <see cref="Decode(CudaBackend, Tensor, Tensor, Tensor, Tensor, int, int, double)"/>, over the B·T_q query tokens in
        /// chunks of at most <paramref name="maxChunk"/> tokens (fewer where the scratch budget says so); tests lower it to run
        /// several chunks on small shapes.
        /// </summary>
        internal static void Decode(CudaBackend backend, Tensor q, Tensor cache, Tensor kvUp, Tensor o, int nopeDim, int length, double scale, int maxChunk) =>
            Run(backend, q, cache, kvUp, o, nopeDim, q.Shape[1], cache.Shape[1], length, scale, maxChunk, PagedKeys.Dense);

        /// <summary>
        /// The paged form (<see cref="PagedAttention.Latent"/>): <paramref name="q"/> <c>[1, N_q, H, d_n + d_r]</c> packs the query
        /// tokens of every sequence, <paramref name="pages"/> <c>[P, page_size, d_c + d_r]</c> is read through the block tables of
        /// <paramref name="paged"/>, and the splits are planned for <paramref name="maxLength"/>, the longest sequence. One launch
        /// of each kernel per chunk of query tokens, as the dense decode.
        /// </summary>
        internal static void Paged(CudaBackend backend, Tensor q, Tensor pages, Tensor kvUp, Tensor o, int nopeDim, PagedKeys paged, int maxLength, double scale,
            int maxChunk) =>
            Run(backend, q, pages, kvUp, o, nopeDim, 1, 0, maxLength, scale, maxChunk, paged);

        // Both forms: the B·T_q (dense) or N_q (paged) query tokens in chunks; `length` sizes the splits (the longest sequence's
        // keys when paged, where each token's own keys come from `paged`).
        private static void Run(CudaBackend backend, Tensor q, Tensor cache, Tensor kvUp, Tensor o, int nopeDim, int tq, int capacity, int length, double scale,
            int maxChunk, PagedKeys paged)
        {
            int batch = q.Shape[0], heads = q.Shape[2], rope = q.Shape[3] - nopeDim, latent = kvUp.Shape[1], dv = o.Shape[3];
            if (latent > MaxLatent)
            {
                throw new ArgumentException($"kvUp: expected a latent width ≤ {MaxLatent} on the CUDA backend, actual {latent}", nameof(kvUp));
            }
            int tokens = batch * q.Shape[1];
            long rows = (long)tokens * heads;
            if (rows == 0 || dv == 0)
            {
                return;
            }
            int width = latent + rope;
            bool tensorCores = TensorCoresFit(backend, cache, latent, rope);
            int headBlocks = (heads + MmaHeadsPerBlock - 1) / MmaHeadsPerBlock;
            var (splits, keysPerSplit) = SoftmaxAttentionCuda.PlanSplits(backend.Device.MultiprocessorCount, tensorCores ? (long)tokens * headBlocks : rows, length);
            CudaKernel? mma = null;
            if (tensorCores)
            {
                mma = backend.Kernel(TensorCoreProgram, TensorCoreProgram.NameExpressions[q.DType == DType.BF16 ? 0 : 1]);
                mma.SetMaxDynamicSharedMemory(MmaSharedBytes);
            }
            // Per query token: q̂ (H·width floats) and the partials (splits·H·(latent + 2) floats).
            int chunk = ChunkTokens(tokens, (long)heads * (width + ((long)splits * (latent + 2))) * sizeof(float), maxChunk);
            long chunkRows = (long)chunk * heads;
            long qBytes = AlignUp(chunkRows * width * sizeof(float));
            long oBytes = AlignUp((long)splits * chunkRows * latent * sizeof(float));
            var scratch = backend.Scratch(qBytes + oBytes + ((long)splits * chunkRows * 2 * sizeof(float))).Pointer;
            var qhat = scratch;
            var partialO = scratch + qBytes;
            var partialMl = partialO + oBytes;
            int elementSize = q.DType.SizeInBytes();

            // The argument storage lives outside the loop (no stackalloc per chunk).
            Span<byte> absorbBytes = stackalloc byte[96];
            Span<int> absorbOffsets = stackalloc int[12];
            Span<byte> splitBytes = stackalloc byte[160];
            Span<int> splitOffsets = stackalloc int[16];
            Span<byte> combineBytes = stackalloc byte[112];
            Span<int> combineOffsets = stackalloc int[12];
            for (int bt0 = 0; bt0 < tokens; bt0 += chunk)
            {
                int count = Math.Min(chunk, tokens - bt0);
                long countRows = (long)count * heads;

                var absorb = new KernelArgs(absorbBytes, absorbOffsets);
                absorb.Add(qhat);
                absorb.Add(Ptr(q) + ((long)bt0 * heads * (nopeDim + rope) * elementSize));
                absorb.Add(Ptr(kvUp));
                absorb.Add(countRows);
                absorb.Add(heads);
                absorb.Add(nopeDim);
                absorb.Add(rope);
                absorb.Add(latent);
                absorb.Add(dv);
                backend.Kernel(Program, Absorb[q.DType]).Launch(Elementwise.Grid(backend, countRows * width), Elementwise.Threads, 0, backend.Stream, absorb);

                var split = new KernelArgs(splitBytes, splitOffsets);
                split.Add(partialO);
                split.Add(partialMl);
                split.Add(qhat);
                split.Add(Ptr(cache));
                split.Add(bt0);
                split.Add(tq);
                split.Add(heads);
                split.Add(latent);
                split.Add(rope);
                split.Add(capacity);
                split.Add(length);
                split.Add((float)scale);
                split.Add(keysPerSplit);
                split.Add(paged);
                if (mma is not null)
                {
                    mma.Launch(Dim3.Grid(splits, count, headBlocks, nameof(q), "splits", "query tokens of a chunk", "16-head blocks"), MmaThreads, (uint)MmaSharedBytes, backend.Stream, split);
                }
                else
                {
                    Launch(backend, Split[q.DType], Dim3.Grid(splits, count, heads, nameof(q), "splits", "query tokens of a chunk", "heads"), width * sizeof(float), split);
                }

                var combine = new KernelArgs(combineBytes, combineOffsets);
                combine.Add(Ptr(o) + ((long)bt0 * heads * dv * elementSize));
                combine.Add(partialO);
                combine.Add(partialMl);
                combine.Add(Ptr(kvUp));
                combine.Add(heads);
                combine.Add(nopeDim);
                combine.Add(latent);
                combine.Add(dv);
                combine.Add(splits);
                combine.Add(paged.VisibleFrom(bt0));
                combine.Add(keysPerSplit);
                Launch(backend, Combine[q.DType], checked((uint)countRows), latent * sizeof(float), combine);
            }
        }

        /// <summary>Largest grid.y of a launch: the split kernels put the query tokens of one chunk there.</summary>
        internal const int MaxGridY = 65535;

        /// <summary>Scratch the decode ops aim to stay under when the query tokens are many (a prefill through the cache).</summary>
        internal const long ScratchBudgetBytes = 256L << 20;

        /// <summary>
        /// Query tokens per chunk: at most <paramref name="maxChunk"/>, <see cref="MaxGridY"/> and <paramref name="tokens"/>, and
        /// within <see cref="ScratchBudgetBytes"/> at <paramref name="bytesPerToken"/> (at least one token whatever the budget).
        /// </summary>
        internal static int ChunkTokens(int tokens, long bytesPerToken, int maxChunk) =>
            (int)Math.Clamp(ScratchBudgetBytes / Math.Max(bytesPerToken, 1), 1, Math.Min(Math.Min(tokens, MaxGridY), Math.Max(maxChunk, 1)));

        internal static void Launch(CudaBackend backend, string name, Dim3 grid, int sharedBytes, in KernelArgs args)
        {
            var kernel = backend.Kernel(Program, name);
            if (sharedBytes > 48 * 1024)
            {
                kernel.SetMaxDynamicSharedMemory(sharedBytes);
            }
            kernel.Launch(grid, Threads, (uint)sharedBytes, backend.Stream, args);
        }

        internal static long AlignUp(long n) => (n + 255) / 256 * 256;
    }
}

namespace Attention.Native
{
    using Attention.Native.Ops;

    // The op-table entry of LatentAttention on the CUDA backend.
    public sealed partial class CudaBackend
    {
        internal override void LatentAttentionDecode(Tensor q, Tensor cache, Tensor kvUp, Tensor o, int nopeDim, int length, double scale) =>
            LatentAttentionCuda.Decode(this, q, cache, kvUp, o, nopeDim, length, scale);
    }
}

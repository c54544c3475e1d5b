using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>
    /// CUDA launcher of <see cref="TpaDecode"/> (cuda/tpa_decode.cu): split-KV attention that scores and averages straight from
    /// the cached factors, and a combine pass that merges the splits. Where its shared memory fits, one block serves every head
    /// of a query token (tpa_decode_heads), so a step reads the cache once; otherwise the query factors collapse to one vector
    /// per head and a block per head does the work (tpa_decode_split), re-reading the factors the heads share.
    /// </summary>
    internal static class TpaDecodeCuda
    {
        /// <summary>Widest head a block accumulates (cuda/include/split_kv.cuh SPLIT_MAX_WIDTH).</summary>
        public const int MaxWidth = 1024;

        private const int Threads = 256;

        private static readonly KernelNames Query = new("tpa_decode_query");
        private static readonly KernelNames Split = new("tpa_decode_split");
        private static readonly KernelNames Combine = new("tpa_decode_combine");
        private static readonly KernelNames Heads = new("tpa_decode_heads");

        public static KernelProgram Program { get; } =
            KernelProgram.ForStorageTypes("tpa_decode.cu", Query.Template, Split.Template, Combine.Template, Heads.Template);

        private const int KeyTile = 32;       // TPA_KT
        private const int MaxQueryRank = 16;  // TPA_MAX_QRANK
        private const int GroupsPerThread = 4; // TPA_GROUPS

        // tpa_decode_heads's static shared memory: a key tile's cache rows (paged), 64-bit each.
        private const int HeadsStaticSharedBytes = KeyTile * sizeof(long);

        /// <summary>
        /// Dynamic shared memory of tpa_decode_heads in bytes (its layout, array by array), or null where that kernel does not
        /// take the shape (query rank, output groups per thread, or the device's opt-in shared memory, which its static shared
        /// memory shares).
        /// </summary>
        internal static int? HeadsSharedBytes(int heads, int width, int queryRank, int keyRank, int valueRank, int maxSharedOptin)
        {
            long groups = (long)((heads + 1) / 2) * ((width + 3) / 4);
            if (queryRank > MaxQueryRank || groups > (long)GroupsPerThread * Threads)
            {
                return null;
            }
            long floats = ((long)queryRank * width) + ((long)heads * queryRank) + ((long)KeyTile * keyRank * (width + 1))
                + ((long)KeyTile * heads * keyRank) + ((long)KeyTile * valueRank * width) + ((long)KeyTile * heads * valueRank)
                + (4L * KeyTile * keyRank * queryRank) + ((long)heads * KeyTile) + (3L * heads);
            long bytes = floats * sizeof(float);
            return bytes + HeadsStaticSharedBytes <= maxSharedOptin ? (int)bytes : null;
        }

        public static void Forward(CudaBackend backend, Tensor aq, Tensor bq, Tensor ak, Tensor bk, Tensor av, Tensor bv, int length, Tensor o) =>
            Forward(backend, aq, bq, ak, bk, av, bv, length, o, LatentAttentionCuda.MaxGridY);

        /// <summary>
        /// As <see cref="Forward(CudaBackend, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, int, Tensor)"/>, over the B·T_q query
        /// tokens in chunks of at most <paramref name="maxChunk"/> tokens (fewer where the scratch budget says so); tests lower it
        /// to run several chunks on small shapes, and clear <paramref name="allHeads"/> to test the per-head kernel.
        /// </summary>
        internal static void Forward(CudaBackend backend, Tensor aq, Tensor bq, Tensor ak, Tensor bk, Tensor av, Tensor bv, int length, Tensor o, int maxChunk,
            bool allHeads = true) =>
            Run(backend, aq, bq, ak, bk, av, bv, aq.Shape[1], ak.Shape[1], length, o, maxChunk, allHeads, PagedKeys.Dense);

        /// <summary>
        /// The paged form (<see cref="PagedAttention.Tpa"/>): <paramref name="aq"/> <c>[1, N_q, H, R_q]</c> and <paramref name="bq"/>
        /// pack the query tokens of every sequence, the factor pools <c>[P, page_size, …]</c> are read through the block tables of
        /// <paramref name="paged"/>, and the splits are planned for <paramref name="maxLength"/>, the longest sequence. One launch of
        /// each kernel per chunk of query tokens, as the dense decode; <paramref name="allHeads"/> as there.
        /// </summary>
        internal static void Paged(CudaBackend backend, Tensor aq, Tensor bq, Tensor akPages, Tensor bkPages, Tensor avPages, Tensor bvPages, PagedKeys paged,
            int maxLength, Tensor o, int maxChunk, bool allHeads = true) =>
            Run(backend, aq, bq, akPages, bkPages, avPages, bvPages, 1, 0, maxLength, o, maxChunk, allHeads, paged);

        // Both forms: the B·T_q (dense) or N_q (paged) query tokens in chunks; `length` sizes the splits (the longest sequence's
        // keys when paged, where each token's own keys come from `paged`).
        private static void Run(CudaBackend backend, Tensor aq, Tensor bq, Tensor ak, Tensor bk, Tensor av, Tensor bv, int tq, int capacity, int length, Tensor o,
            int maxChunk, bool allHeads, PagedKeys paged)
        {
            int batch = aq.Shape[0], heads = aq.Shape[2], queryRank = aq.Shape[3];
            int keyRank = ak.Shape[3], valueRank = av.Shape[3], width = bq.Shape[3];
            if (width > MaxWidth)
            {
                throw new ArgumentException($"bq: expected a head width ≤ {MaxWidth} on the CUDA backend, actual {width}", nameof(bq));
            }
            int tokens = batch * aq.Shape[1];
            long rows = (long)tokens * heads;
            if (rows == 0 || width == 0)
            {
                return;
            }
            int? headsShared = HeadsSharedBytes(heads, width, queryRank, keyRank, valueRank, backend.Device.MaxSharedMemoryPerBlockOptin);
            if (allHeads && headsShared is { } shared)
            {
                ForwardAllHeads(backend, aq, bq, ak, bk, av, bv, tq, capacity, length, o, maxChunk, shared, paged);
                return;
            }
            var (splits, keysPerSplit) = SoftmaxAttentionCuda.PlanSplits(backend.Device.MultiprocessorCount, rows, length);
            // Per query token: q̃ (H·d floats) and the partials (splits·H·(d + 2) floats).
            int chunk = LatentAttentionCuda.ChunkTokens(tokens, (long)heads * (width + ((long)splits * (width + 2))) * sizeof(float), maxChunk);
            long chunkRows = (long)chunk * heads;
            long qBytes = LatentAttentionCuda.AlignUp(chunkRows * width * sizeof(float));
            long oBytes = LatentAttentionCuda.AlignUp((long)splits * chunkRows * width * sizeof(float));
            var scratch = backend.Scratch(qBytes + oBytes + ((long)splits * chunkRows * 2 * sizeof(float))).Pointer;
            var qtilde = scratch;
            var partialO = scratch + qBytes;
            var partialMl = partialO + oBytes;
            int elementSize = aq.DType.SizeInBytes();
            double scale = 1.0 / (queryRank * keyRank * Math.Sqrt(width));

            // The argument storage lives outside the loop (no stackalloc per chunk).
            Span<byte> queryBytes = stackalloc byte[64];
            Span<int> queryOffsets = stackalloc int[8];
            Span<byte> splitBytes = stackalloc byte[192];
            Span<int> splitOffsets = stackalloc int[20];
            for (int bt0 = 0; bt0 < tokens; bt0 += chunk)
            {
                int count = Math.Min(chunk, tokens - bt0);
                long countRows = (long)count * heads;

                var query = new KernelArgs(queryBytes, queryOffsets);
                query.Add(qtilde);
                query.Add(Ptr(aq) + ((long)bt0 * heads * queryRank * elementSize));
                query.Add(Ptr(bq) + ((long)bt0 * queryRank * width * elementSize));
                query.Add((long)count);
                query.Add(heads);
                query.Add(queryRank);
                query.Add(width);
                backend.Kernel(Program, Query[aq.DType]).Launch(Elementwise.Grid(backend, countRows * width), Elementwise.Threads, 0, backend.Stream, query);

                var split = new KernelArgs(splitBytes, splitOffsets);
                split.Add(partialO);
                split.Add(partialMl);
                split.Add(qtilde);
                split.Add(Ptr(ak));
                split.Add(Ptr(bk));
                split.Add(Ptr(av));
                split.Add(Ptr(bv));
                split.Add(bt0);
                split.Add(tq);
                split.Add(heads);
                split.Add(keyRank);
                split.Add(valueRank);
                split.Add(width);
                split.Add(capacity);
                split.Add(length);
                split.Add((float)scale);
                split.Add(keysPerSplit);
                split.Add(paged);
                Launch(backend, Split[aq.DType], Dim3.Grid(splits, count, heads, nameof(aq), "splits", "query tokens of a chunk", "heads"), width * sizeof(float), split);

                LaunchCombine(backend, Ptr(o) + ((long)bt0 * heads * width * elementSize), partialO, partialMl, width, valueRank, splits,
                    heads, count, paged.VisibleFrom(bt0), keysPerSplit, aq.DType);
            }
        }

        // tpa_decode_heads: a block per (split, query token) serving every head, then the combine.
        private static void ForwardAllHeads(CudaBackend backend, Tensor aq, Tensor bq, Tensor ak, Tensor bk, Tensor av, Tensor bv, int tq, int capacity,
            int length, Tensor o, int maxChunk, int sharedBytes, PagedKeys paged)
        {
            int batch = aq.Shape[0], heads = aq.Shape[2], queryRank = aq.Shape[3];
            int keyRank = ak.Shape[3], valueRank = av.Shape[3], width = bq.Shape[3];
            int tokens = batch * aq.Shape[1];
            var (splits, keysPerSplit) = SoftmaxAttentionCuda.PlanSplits(backend.Device.MultiprocessorCount, tokens, length);
            // Per query token: the partials (splits·H·(d + 2) floats).
            int chunk = LatentAttentionCuda.ChunkTokens(tokens, (long)heads * splits * (width + 2) * sizeof(float), maxChunk);
            long chunkRows = (long)chunk * heads;
            long oBytes = LatentAttentionCuda.AlignUp((long)splits * chunkRows * width * sizeof(float));
            var partialO = backend.Scratch(oBytes + ((long)splits * chunkRows * 2 * sizeof(float))).Pointer;
            var partialMl = partialO + oBytes;
            int elementSize = aq.DType.SizeInBytes();
            double scale = 1.0 / (queryRank * keyRank * Math.Sqrt(width));
            var kernel = backend.Kernel(Program, Heads[aq.DType]);
            if (sharedBytes > 48 * 1024)
            {
                kernel.SetMaxDynamicSharedMemory(sharedBytes);
            }

            Span<byte> splitBytes = stackalloc byte[224];
            Span<int> splitOffsets = stackalloc int[24];
            for (int bt0 = 0; bt0 < tokens; bt0 += chunk)
            {
                int count = Math.Min(chunk, tokens - bt0);
                var split = new KernelArgs(splitBytes, splitOffsets);
                split.Add(partialO);
                split.Add(partialMl);
                split.Add(Ptr(aq));
                split.Add(Ptr(bq));
                split.Add(Ptr(ak));
                split.Add(Ptr(bk));
                split.Add(Ptr(av));
                split.Add(Ptr(bv));
                split.Add(bt0);
                split.Add(tq);
                split.Add(heads);
                split.Add(queryRank);
                split.Add(keyRank);
                split.Add(valueRank);
                split.Add(width);
                split.Add(capacity);
                split.Add(length);
                split.Add((float)scale);
                split.Add(keysPerSplit);
                split.Add(paged);
                kernel.Launch(Dim3.Grid(splits, count, 1, nameof(aq), "splits", "query tokens of a chunk", "one block"), Threads, (uint)sharedBytes, backend.Stream, split);

                LaunchCombine(backend, Ptr(o) + ((long)bt0 * heads * width * elementSize), partialO, partialMl, width, valueRank, splits,
                    heads, count, paged.VisibleFrom(bt0), keysPerSplit, aq.DType);
            }
        }

        // tpa_decode_combine over the `tokens`·H rows of a chunk: merge the splits (those holding keys when paged: `visible` is
        // the chunk's tokens' visible keys), scale by 1/R_v, write o.
        private static void LaunchCombine(CudaBackend backend, Interop.CUdeviceptr o, Interop.CUdeviceptr partialO, Interop.CUdeviceptr partialMl,
            int width, int valueRank, int splits, int heads, int tokens, Interop.CUdeviceptr visible, int keysPerSplit, DType dtype)
        {
            var combine = new KernelArgs(stackalloc byte[80], stackalloc int[10]);
            combine.Add(o);
            combine.Add(partialO);
            combine.Add(partialMl);
            combine.Add(width);
            combine.Add(valueRank);
            combine.Add(splits);
            combine.Add(heads);
            combine.Add(visible);
            combine.Add(keysPerSplit);
            Launch(backend, Combine[dtype], checked((uint)((long)tokens * heads)), width * sizeof(float), combine);
        }

        private static void Launch(CudaBackend backend, string name, Dim3 grid, int sharedBytes, in KernelArgs args) =>
            backend.Kernel(Program, name).Launch(grid, Threads, (uint)sharedBytes, backend.Stream, args);
    }
}

namespace Attention.Native
{
    using Attention.Native.Ops;

    // The op-table entry of TpaDecode on the CUDA backend.
    public sealed partial class CudaBackend
    {
        internal override void TpaDecodeForward(Tensor aq, Tensor bq, Tensor ak, Tensor bk, Tensor av, Tensor bv, int length, Tensor o) =>
            TpaDecodeCuda.Forward(this, aq, bq, ak, bk, av, bv, length, o);
    }
}

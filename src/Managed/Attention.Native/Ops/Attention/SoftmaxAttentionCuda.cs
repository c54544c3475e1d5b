using System.Buffers;
using System.Runtime.InteropServices;
using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>
    /// CUDA launcher of <see cref="SoftmaxAttention"/> (cuda/attention.cu): flash-style forward (online softmax over key tiles in
    /// shared memory, split-KV with a combine pass when few query rows face a long cache, as in decode) and a backward in three
    /// passes (row deltas; dq and dbias per query tile; dk and dv per key tile summed over the KV group), all without atomics.
    /// A ragged batch (<see cref="AttentionOptions.Sequences"/>) runs as one launch per kernel over all its sequences: the
    /// offsets go to the device in one queued upload (<see cref="CudaBackend.UploadLaunchIndices"/>), the grids are planned for the longest sequence with
    /// the sequence as their batch index, and each block narrows itself to its sequence (cuda/include/attention_shape.cuh).
    /// Every tensor's rows go to the kernels as strides (<see cref="Strides"/>), so q, k, v, o, dO and the gradients may be any
    /// view whose last axis is contiguous (<see cref="Tensor.Transpose"/>), read and written in place as on the CPU backend.
    /// </summary>
    internal static class SoftmaxAttentionCuda
    {
        /// <summary>Widest qk or v head the kernels hold (columns per lane × 32).</summary>
        public const int MaxWidth = 256;

        private const int Threads = 256;
        private const int Warps = Threads / 32;
        private const int QueryRowsPerBlock = 16; // ATTN_BQ
        private const int KeyTile = 32;           // ATTN_BK
        private const int KeysPerBlock = 16;      // ATTN_BKEYS
        private const int DefaultSharedLimit = 48 * 1024;
        private const int MinKeysPerSplit = 256;

        /// <summary>Argument storage of every softmax-attention launch: the largest, the CUDA-core kernels', hold up to nine
        /// pointers and the 200-byte <see cref="Shape"/> (272 bytes).</summary>
        internal const int ArgumentBytes = 320;

        private static readonly KernelNames ForwardKernel = new("attention_forward");
        private static readonly KernelNames CombineKernel = new("attention_combine");
        private static readonly KernelNames DeltaKernel = new("attention_backward_delta");
        private static readonly KernelNames DqKernel = new("attention_backward_dq");
        private static readonly KernelNames DkDvKernel = new("attention_backward_dkdv");

        public static KernelProgram Program { get; } = KernelProgram.ForStorageTypes(
            "attention.cu", ForwardKernel.Template, CombineKernel.Template, DeltaKernel.Template, DqKernel.Template, DkDvKernel.Template);

        /// <summary>
        /// The kernels' by-value shape argument (struct AttentionShape in attention_shape.cuh, field for field). A ragged batch has
        /// the device offsets of its queries and keys, <see cref="Batch"/> its sequence count and <see cref="Tq"/>, <see cref="Tk"/>,
        /// <see cref="Length"/> its longest sequence's lengths (what grids are planned for); a dense batch has null offsets.
        /// </summary>
        /// <remarks>
        /// Paged keys (<see cref="Pages"/> set, <see cref="Paged"/>): a ragged batch whose k and v are page pools read through the
        /// block tables <c>[Batch, PagesPerSequence]</c>; <see cref="KeyOffsets"/> then counts each sequence's cached keys.
        /// <see cref="Strides"/>: the rows of every tensor the kernels address.
        /// </remarks>
        [StructLayout(LayoutKind.Sequential)]
        internal readonly record struct Shape(int Batch, int Tq, int Heads, int Dqk, int Tk, int KvHeads, int Dv, int Length, float Scale, int Causal,
            Interop.CUdeviceptr QueryOffsets = default, Interop.CUdeviceptr KeyOffsets = default,
            Interop.CUdeviceptr Pages = default, int PagesPerSequence = 0, int PageSize = 0, Strides Strides = default);

        /// <summary>
        /// Element strides of one tensor's rows (struct RowStrides in attention_shape.cuh): row (b, t, h) starts at
        /// <c>b·Batch + t·Token + h·Head</c>. 32-bit token and head strides keep the kernels' address arithmetic short.
        /// </summary>
        [StructLayout(LayoutKind.Sequential)]
        internal readonly record struct Rows(long Batch, int Token, int Head)
        {
            /// <summary>
            /// The kernels' form of <paramref name="rows"/>; <paramref name="packed"/>: a ragged batch's packed tensor, whose rows
            /// the kernels address by packed token, so its batch stride is 0 (the kernels' batch index is the sequence).
            /// </summary>
            public static Rows Of(SoftmaxAttention.RowStrides rows, string name, bool packed)
            {
                if (rows.Token is < int.MinValue or > int.MaxValue || rows.Head is < int.MinValue or > int.MaxValue)
                {
                    throw new ArgumentException($"{name}: expected token and head strides within 32 bits on the CUDA backend, actual [{rows.Batch}, {rows.Token}, {rows.Head}]", name);
                }
                return new(packed ? 0 : rows.Batch, (int)rows.Token, (int)rows.Head);
            }
        }

        /// <summary>The rows of q, k, v, o, dO, dq, dk, dv (struct AttentionStrides in attention_shape.cuh), those of a null tensor 0.</summary>
        [StructLayout(LayoutKind.Sequential)]
        internal readonly record struct Strides(Rows Q, Rows K, Rows V, Rows O, Rows DO, Rows DQ, Rows DK, Rows DV)
        {
            /// <summary>The kernels' form of <paramref name="layouts"/> (<paramref name="packed"/>: a ragged batch's, <see cref="Rows.Of"/>).</summary>
            public static Strides Of(in SoftmaxAttention.Layouts layouts, bool packed) =>
                new(Rows.Of(layouts.Q, "q", packed), Rows.Of(layouts.K, "k", packed), Rows.Of(layouts.V, "v", packed), Rows.Of(layouts.O, "o", packed),
                    Rows.Of(layouts.DO, "dO", packed), Rows.Of(layouts.DQ, "dq", packed), Rows.Of(layouts.DK, "dk", packed), Rows.Of(layouts.DV, "dv", packed));
        }

        public static void Forward(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor o, Tensor lse, AttentionOptions options)
        {
            var d = SoftmaxAttention.DimsOf(q, k, v, options);
            CheckWidths(q, v);
            if (d.B == 0 || d.Tq == 0 || d.H == 0)
            {
                return;
            }
            var (shape, rowsShape) = ShapesOf(backend, d, options, SoftmaxAttention.Layouts.Of(q, k, v, o));
            Launch(backend, q, k, v, bias, o, lse, shape, rowsShape);
        }

        /// <summary>
        /// Causal softmax attention of the packed queries <paramref name="q"/> <c>[1, N_q, H, d_qk]</c> over the page pools
        /// <paramref name="kPages"/> <c>[P, page_size, G, d_qk]</c> and <paramref name="vPages"/> (<see cref="PagedAttention.Forward"/>):
        /// the forward kernels of a ragged batch (memory-speed decode, tensor cores, CUDA cores; whichever the problem takes), each
        /// key row looked up in its sequence's block table. One upload of <c>[query offsets | key counts' offsets | table]</c>; the
        /// row log-sum-exp goes to a pooled tensor (no driver allocation once warm).
        /// </summary>
        public static void Paged(CudaBackend backend, Tensor q, Tensor kPages, Tensor vPages, Tensor o, SequenceLayout queries, PageTable table, double scale)
        {
            CheckWidths(q, vPages);
            int tokens = queries.TokenCount, heads = q.Shape[2];
            if (tokens == 0 || heads == 0)
            {
                return;
            }
            int count = queries.Count, staged = (2 * (count + 1)) + table.Pages.Length;
            FillPaged(backend.PagedMetadataStaging(staged), queries, table);
            var device = backend.UploadPagedMetadata(staged);
            int kvHeads = kPages.Shape[2], dqk = q.Shape[3], dv = vPages.Shape[3];
            var rowsShape = new Shape(1, tokens, heads, dqk, table.MaxLength, kvHeads, dv, table.MaxLength, (float)scale, 1,
                Strides: Strides.Of(SoftmaxAttention.Layouts.Of(q, kPages, vPages, o), packed: true));
            var shape = rowsShape with
            {
                Batch = count, Tq = queries.MaxLength,
                QueryOffsets = device, KeyOffsets = device + ((long)(count + 1) * sizeof(int)),
                Pages = device + ((long)2 * (count + 1) * sizeof(int)), PagesPerSequence = table.PagesPerSequence, PageSize = table.PageSize,
            };
            using var lse = backend.Empty(new Native.Shape(1, heads, tokens), DType.F32);
            Launch(backend, q, kPages, vPages, null, o, lse, shape, rowsShape);
        }

        /// <summary>
        /// What <see cref="Paged"/> uploads, into <paramref name="staged"/>: the query offsets, the offsets of each sequence's
        /// cached keys (its table length), then the table's entries.
        /// </summary>
        internal static void FillPaged(Span<int> staged, SequenceLayout queries, PageTable table)
        {
            int count = queries.Count;
            queries.Offsets.CopyTo(staged);
            staged[count + 1] = 0;
            for (int s = 0; s < count; s++)
            {
                staged[count + 2 + s] = staged[count + 1 + s] + table.Length(s);
            }
            table.Pages.CopyTo(staged[(2 * (count + 1))..]);
        }

        // The forward's dispatch, for a dense, ragged or paged shape.
        private static void Launch(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor o, Tensor lse, Shape shape, Shape rowsShape)
        {
            // A few query rows against a 16-bit cache (decode, and a ragged batch's decode step): the memory-speed kernel.
            if (SoftmaxAttentionDecodeCuda.Handles(backend, q, k, v, bias, o, shape))
            {
                SoftmaxAttentionDecodeCuda.Forward(backend, q, k, v, o, lse, shape, rowsShape);
                return;
            }
            // The CUDA-core forward packs the (query, head) rows of a KV group into its blocks (see attention.cu). Ragged: tiles and
            // splits of the longest sequence (blocks past a shorter one's rows exit, splits past its keys leave empty partials).
            int qTiles = CeilDiv(shape.Tq * (shape.Heads / shape.KvHeads), QueryRowsPerBlock);
            var (splits, keysPerSplit) = PlanSplits(backend.Device.MultiprocessorCount, (long)qTiles * shape.KvHeads * shape.Batch, shape.Length);
            // Tensor cores whenever they apply, except where few query rows face a long cache (decode): that is split-KV's case.
            if (splits == 1 && SoftmaxAttentionTensorCoreCuda.Handles(backend, q, k, v, bias, o))
            {
                SoftmaxAttentionTensorCoreCuda.Forward(backend, q, k, v, o, lse, shape);
                return;
            }
            long rows = (long)rowsShape.Batch * rowsShape.Heads * rowsShape.Tq;
            var partialO = Interop.CUdeviceptr.Null;
            var partialMl = Interop.CUdeviceptr.Null;
            if (splits > 1)
            {
                long oBytes = AlignUp((long)splits * rows * shape.Dv * sizeof(float));
                var scratch = backend.Scratch(oBytes + ((long)splits * rows * 2 * sizeof(float)));
                partialO = scratch.Pointer;
                partialMl = scratch.Pointer + oBytes;
            }
            int shared = (QueryRowsPerBlock * shape.Dqk + KeyTile * (shape.Dqk + 1) + KeyTile * shape.Dv) * sizeof(float);
            var kernel = Prepare(backend, ForwardKernel[q.DType], shared);
            var args = new KernelArgs(stackalloc byte[ArgumentBytes], stackalloc int[16]);
            args.Add(Ptr(o));
            args.Add(Ptr(lse));
            args.Add(partialO);
            args.Add(partialMl);
            args.Add(Ptr(q));
            args.Add(Ptr(k));
            args.Add(Ptr(v));
            args.Add(Ptr(bias));
            args.Add(shape);
            args.Add(splits);
            args.Add(keysPerSplit);
            kernel.Launch(Dim3.Grid((long)qTiles * splits, shape.KvHeads, shape.Batch, nameof(q), "query tiles × splits", "key/value heads", "batch (sequences)"), Threads, (uint)shared, backend.Stream, args);
            if (splits > 1)
            {
                Combine(backend, o, lse, partialO, partialMl, rowsShape, splits);
            }
        }

        /// <summary>Merges split-KV partials (attention_combine) into o and the row log-sum-exp; <paramref name="shape"/> is dense (a ragged
        /// batch's packed rows as one sequence, <see cref="ShapesOf"/>).</summary>
        internal static void Combine(CudaBackend backend, Tensor o, Tensor lse, Interop.CUdeviceptr partialO, Interop.CUdeviceptr partialMl,
            Shape shape, int splits)
        {
            long rows = (long)shape.Batch * shape.Heads * shape.Tq;
            var combine = new KernelArgs(stackalloc byte[ArgumentBytes], stackalloc int[8]);
            combine.Add(Ptr(o));
            combine.Add(Ptr(lse));
            combine.Add(partialO);
            combine.Add(partialMl);
            combine.Add(shape);
            combine.Add(splits);
            backend.Kernel(Program, CombineKernel[o.DType]).Launch(Dim3.CeilDiv(rows, Warps), Threads, 0, backend.Stream, combine);
        }

        public static void Backward(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor o, Tensor lse, Tensor dO,
            Tensor? dq, Tensor? dk, Tensor? dv, Tensor? dbias, AttentionOptions options)
        {
            var d = SoftmaxAttention.DimsOf(q, k, v, options);
            CheckWidths(q, v);
            if (d.B == 0 || d.Tq == 0 || d.H == 0 || (dq is null && dk is null && dv is null && dbias is null))
            {
                return;
            }
            var (shape, rowsShape) = ShapesOf(backend, d, options, SoftmaxAttention.Layouts.Of(q, k, v, o, dO, dq, dk, dv));
            long rows = (long)d.B * d.H * d.Tq;
            var delta = backend.Scratch(rows * sizeof(float)).Pointer;

            var deltaArgs = new KernelArgs(stackalloc byte[ArgumentBytes], stackalloc int[8]);
            deltaArgs.Add(delta);
            deltaArgs.Add(Ptr(o));
            deltaArgs.Add(Ptr(dO));
            deltaArgs.Add(rowsShape);
            backend.Kernel(Program, DeltaKernel[q.DType]).Launch(Dim3.CeilDiv(rows, Warps), Threads, 0, backend.Stream, deltaArgs);

            // Tensor cores for the same problems as the forward (dO stands in for o: same shape and type).
            if (dbias is null && SoftmaxAttentionTensorCoreCuda.HandlesBackward(backend, q, k, v, bias, dO))
            {
                SoftmaxAttentionTensorCoreCuda.Backward(backend, q, k, v, dO, lse, delta, dq, dk, dv, shape);
                return;
            }

            if (dq is not null || dbias is not null)
            {
                int shared = ((QueryRowsPerBlock * (d.Dqk + d.Dv)) + (KeyTile * (d.Dqk + 1)) + (KeyTile * (d.Dv + 1))) * sizeof(float);
                var kernel = Prepare(backend, DqKernel[q.DType], shared);
                var args = new KernelArgs(stackalloc byte[ArgumentBytes], stackalloc int[16]);
                args.Add(Ptr(dq));
                args.Add(Ptr(dbias));
                AddInputs(ref args, q, k, v, bias, dO, lse, delta, shape);
                // dbias is shared by the batch: one block walks the batch in order, so each entry has a single writer.
                long batchBlocks = dbias is null ? shape.Batch : 1;
                kernel.Launch(Dim3.Grid(Dim3.CeilDiv(shape.Tq, QueryRowsPerBlock), d.H, batchBlocks, nameof(q), "query tiles", "heads", "batch (sequences)"), Threads, (uint)shared, backend.Stream, args);
            }
            if (dk is not null || dv is not null)
            {
                int shared = ((KeysPerBlock * (d.Dqk + d.Dv)) + (32 * (d.Dqk + 1)) + (32 * (d.Dv + 1)) + 64) * sizeof(float);
                var kernel = Prepare(backend, DkDvKernel[q.DType], shared);
                var args = new KernelArgs(stackalloc byte[ArgumentBytes], stackalloc int[16]);
                args.Add(Ptr(dk));
                args.Add(Ptr(dv));
                AddInputs(ref args, q, k, v, bias, dO, lse, delta, shape);
                kernel.Launch(Dim3.Grid(Dim3.CeilDiv(shape.Length, KeysPerBlock), d.G, shape.Batch, nameof(k), "key tiles", "key/value heads", "batch (sequences)"), Threads, (uint)shared, backend.Stream, args);
            }
        }

        /// <summary>
        /// Splits the keys across blocks when the (query tile, head, batch) blocks alone would leave the device idle, as in decode
        /// (one query row per head against a long cache): about two blocks per multiprocessor, each split at least
        /// <see cref="MinKeysPerSplit"/> keys. Returns (1, keys) when no split pays.
        /// </summary>
        internal static (int Splits, int KeysPerSplit) PlanSplits(int multiprocessors, long blocks, int keys)
        {
            long wanted = 2L * multiprocessors;
            if (blocks >= wanted || keys < 2 * MinKeysPerSplit)
            {
                return (1, Math.Max(keys, 1));
            }
            long splits = Math.Min((wanted + blocks - 1) / blocks, keys / MinKeysPerSplit);
            int perSplit = (int)((keys + splits - 1) / splits);
            perSplit = (perSplit + KeyTile - 1) / KeyTile * KeyTile;
            return ((keys + perSplit - 1) / perSplit, perSplit);
        }

        private static void AddInputs(ref KernelArgs args, Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor dO, Tensor lse, Interop.CUdeviceptr delta, Shape shape)
        {
            args.Add(Ptr(q));
            args.Add(Ptr(k));
            args.Add(Ptr(v));
            args.Add(Ptr(bias));
            args.Add(Ptr(dO));
            args.Add(Ptr(lse));
            args.Add(delta);
            args.Add(shape);
        }

        private static CudaKernel Prepare(CudaBackend backend, string name, int sharedBytes)
        {
            var kernel = backend.Kernel(Program, name);
            if (sharedBytes > DefaultSharedLimit)
            {
                kernel.SetMaxDynamicSharedMemory(sharedBytes);
            }
            return kernel;
        }

        /// <summary>
        /// The kernels' shape, and the shape of the rows the combine and delta kernels walk. Dense: both are the problem's. Ragged:
        /// the first carries the sequences' device offsets (uploaded here, once per op) and the longest sequence's lengths; the
        /// second is the packed rows as one dense sequence (batch 1, N_q queries), which is how lse [1, H, N_q] and o lie. Both
        /// carry the tensors' rows (<paramref name="layouts"/>; a ragged batch's, contiguous, with batch stride 0).
        /// </summary>
        internal static (Shape Kernels, Shape Rows) ShapesOf(CudaBackend backend, SoftmaxAttention.Dims d, AttentionOptions options, in SoftmaxAttention.Layouts layouts)
        {
            var dense = new Shape(d.B, d.Tq, d.H, d.Dqk, d.Tk, d.G, d.Dv, d.Length, (float)options.Scale, options.Causal ? 1 : 0,
                Strides: Strides.Of(layouts, packed: options.Sequences is not null));
            if (options.Sequences is not { } queries)
            {
                return (dense, dense);
            }
            var keys = options.KeyLayout!;
            var (queryOffsets, keyOffsets) = UploadOffsets(backend, queries, keys);
            var ragged = dense with
            {
                Batch = queries.Count, Tq = queries.MaxLength, Tk = keys.MaxLength, Length = keys.MaxLength,
                QueryOffsets = queryOffsets, KeyOffsets = keyOffsets,
            };
            return (ragged, dense);
        }

        // Both layouts' offsets in one queued upload (one copy when the keys are the queries' own tokens).
        private static (Interop.CUdeviceptr Queries, Interop.CUdeviceptr Keys) UploadOffsets(CudaBackend backend, SequenceLayout queries, SequenceLayout keys)
        {
            if (ReferenceEquals(queries, keys))
            {
                var both = backend.UploadLaunchIndices(queries.Offsets);
                return (both, both);
            }
            int count = queries.Offsets.Length, length = count + keys.Offsets.Length;
            var indices = ArrayPool<int>.Shared.Rent(length);
            try
            {
                queries.Offsets.CopyTo(indices);
                keys.Offsets.CopyTo(indices.AsSpan(count));
                var device = backend.UploadLaunchIndices(indices.AsSpan(0, length));
                return (device, device + ((long)count * sizeof(int)));
            }
            finally
            {
                ArrayPool<int>.Shared.Return(indices);
            }
        }

        private static void CheckWidths(Tensor q, Tensor v)
        {
            int dqk = q.Shape[-1], dv = v.Shape[-1];
            if (dqk > MaxWidth)
            {
                throw new ArgumentException($"q: expected a head width d_qk ≤ {MaxWidth} on the CUDA backend, actual {dqk}", nameof(q));
            }
            if (dv > MaxWidth)
            {
                throw new ArgumentException($"v: expected a head width d_v ≤ {MaxWidth} on the CUDA backend, actual {dv}", nameof(v));
            }
        }

        private static int CeilDiv(int n, int d) => (n + d - 1) / d;

        internal static long AlignUp(long n) => (n + 255) / 256 * 256;
    }
}

namespace Attention.Native
{
    using Attention.Native.Ops;

    // The op-table entries of SoftmaxAttention on the CUDA backend, and of PagedAttention.Forward (softmax attention over pages).
    public sealed partial class CudaBackend
    {
        internal override void SoftmaxAttentionForward(Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor o, Tensor lse, AttentionOptions options) =>
            SoftmaxAttentionCuda.Forward(this, q, k, v, bias, o, lse, options);

        internal override void SoftmaxAttentionBackward(Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor o, Tensor lse, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv, Tensor? dbias, AttentionOptions options) =>
            SoftmaxAttentionCuda.Backward(this, q, k, v, bias, o, lse, dO, dq, dk, dv, dbias, options);

        internal override void PagedSoftmaxAttention(Tensor q, Tensor kPages, Tensor vPages, Tensor o, SequenceLayout queries, PageTable table, double scale) =>
            SoftmaxAttentionCuda.Paged(this, q, kPages, vPages, o, queries, table, scale);
    }
}

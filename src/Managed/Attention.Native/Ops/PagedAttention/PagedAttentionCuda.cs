using System.Runtime.InteropServices;
using Attention.Native.Interop;
using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>
    /// A paged decode's block tables on the device, as the split kernels take them (cuda/include/paged_keys.cuh <c>PagedKeys</c>,
    /// field for field): the table <c>[sequences, pages per sequence]</c>, each packed query token's sequence and its visible keys.
    /// <see cref="Dense"/> (a null table) selects the dense cache of the decode ops.
    /// </summary>
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct PagedKeys(CUdeviceptr Table, CUdeviceptr Sequence, CUdeviceptr Visible, int PagesPerSequence, int PageSize)
    {
        /// <summary>No table: the kernels read a dense cache.</summary>
        public static PagedKeys Dense => default;

        /// <summary>The visible keys of the query tokens from <paramref name="token"/> on (a chunk's, for its combine), or null when dense.</summary>
        public CUdeviceptr VisibleFrom(int token) => Table.IsNull ? CUdeviceptr.Null : Visible + ((long)token * sizeof(int));
    }

    /// <summary>
    /// CUDA launchers of <see cref="PagedAttention"/> except softmax attention (<see cref="SoftmaxAttentionCuda.Paged"/>, which
    /// runs the softmax-attention forward kernels with a paged shape): the cache writes (cuda/paged_cache.cu, rows of any
    /// dtype moved in 16-, 4- or 2-byte units) and MLA's latent and TPA's factor attention, which are the split-KV decode kernels
    /// of <see cref="LatentAttentionCuda"/> and <see cref="TpaDecodeCuda"/> reading the pools through the block tables (one launch
    /// per kernel over every sequence, no gather). The tables, the tokens' sequences and visible keys, and the write slots go to
    /// the device through <see cref="CudaBackend.UploadPagedMetadata"/> (one upload per call, no device allocation once warm).
    /// </summary>
    internal static class PagedAttentionCuda
    {
        // The units a row moves in, widest first (paged_cache.cu): 16, 4 and 2 bytes.
        private static readonly (int Bytes, string Type)[] Units = [(16, "paged_unit16"), (4, "unsigned int"), (2, "unsigned short")];

        public static KernelProgram Program { get; } = new(
            "paged_cache.cu", [.. Units.Select(u => $"paged_write<{u.Type}>"), .. Units.Select(u => $"paged_copy<{u.Type}>")]);

        /// <summary>Rows of <paramref name="values"/> <c>[1, N, …row]</c> into <paramref name="pages"/> at <paramref name="slots"/>.</summary>
        public static void Write(CudaBackend backend, Tensor values, Tensor pages, int[] slots)
        {
            long rowBytes = values.ByteCount / Math.Max(1, values.Shape[1]);
            if (slots.Length == 0 || rowBytes == 0)
            {
                return;
            }
            var (unit, type) = UnitFor(rowBytes, Ptr(values), Ptr(pages));
            slots.CopyTo(backend.PagedMetadataStaging(slots.Length));
            var deviceSlots = backend.UploadPagedMetadata(slots.Length);
            long rowUnits = rowBytes / unit, n = rowUnits * slots.Length;
            var args = new KernelArgs(stackalloc byte[48], stackalloc int[5]);
            args.Add(Ptr(pages));
            args.Add(Ptr(values));
            args.Add(deviceSlots);
            args.Add((long)slots.Length);
            args.Add(checked((int)rowUnits));
            backend.Kernel(Program, $"paged_write<{type}>").Launch(Elementwise.Grid(backend, n), Elementwise.Threads, 0, backend.Stream, args);
        }

        /// <summary>Page <paramref name="source"/> of <paramref name="pages"/> <c>[P, …]</c> onto page <paramref name="destination"/>.</summary>
        public static void Copy(CudaBackend backend, Tensor pages, int source, int destination)
        {
            long pageBytes = pages.ByteCount / pages.Shape[0];
            if (pageBytes == 0)
            {
                return;
            }
            // Every page starts at a multiple of the page size from the pool's start: the unit that fits both fits each page.
            var (unit, type) = UnitFor(pageBytes, Ptr(pages), Ptr(pages));
            long pageUnits = pageBytes / unit;
            var args = new KernelArgs(stackalloc byte[32], stackalloc int[4]);
            args.Add(Ptr(pages));
            args.Add((long)source);
            args.Add((long)destination);
            args.Add(pageUnits);
            backend.Kernel(Program, $"paged_copy<{type}>").Launch(Elementwise.Grid(backend, pageUnits), Elementwise.Threads, 0, backend.Stream, args);
        }

        /// <summary>MLA's absorbed attention over the paged latents (<see cref="PagedAttention.Latent"/>), query tokens in chunks of at most <paramref name="maxChunk"/>.</summary>
        public static void Latent(CudaBackend backend, Tensor q, Tensor latentPages, Tensor kvUp, Tensor o, int nopeDim, SequenceLayout queries, PageTable table,
            double scale, int maxChunk)
        {
            if (queries.TokenCount == 0)
            {
                return;
            }
            var keys = Keys(backend, queries, table);
            LatentAttentionCuda.Paged(backend, q, latentPages, kvUp, o, nopeDim, keys, table.MaxLength, scale, maxChunk);
        }

        /// <summary>TPA's factor attention over the paged factors (<see cref="PagedAttention.Tpa"/>), query tokens in chunks of at most <paramref name="maxChunk"/>.</summary>
        public static void Tpa(CudaBackend backend, Tensor aq, Tensor bq, Tensor akPages, Tensor bkPages, Tensor avPages, Tensor bvPages, Tensor o,
            SequenceLayout queries, PageTable table, int maxChunk, bool allHeads = true)
        {
            if (queries.TokenCount == 0)
            {
                return;
            }
            var keys = Keys(backend, queries, table);
            TpaDecodeCuda.Paged(backend, aq, bq, akPages, bkPages, avPages, bvPages, keys, table.MaxLength, o, maxChunk, allHeads);
        }

        /// <summary>
        /// The block tables on the device, one upload of <c>[table | sequence | visible]</c>: sequence s's query i (packed token
        /// <c>Start(s) + i</c>) sees its keys up to position <c>Length(s) − L_q(s) + i</c>.
        /// </summary>
        internal static PagedKeys Keys(CudaBackend backend, SequenceLayout queries, PageTable table)
        {
            int entries = table.Pages.Length, tokens = queries.TokenCount;
            FillKeys(backend.PagedMetadataStaging(entries + (2 * tokens)), queries, table);
            var device = backend.UploadPagedMetadata(entries + (2 * tokens));
            return new PagedKeys(device, device + ((long)entries * sizeof(int)), device + ((long)(entries + tokens) * sizeof(int)), table.PagesPerSequence, table.PageSize);
        }

        /// <summary>The ints <see cref="Keys"/> uploads, into <paramref name="staged"/> (the table's entries plus two per query token).</summary>
        internal static void FillKeys(Span<int> staged, SequenceLayout queries, PageTable table)
        {
            int entries = table.Pages.Length, tokens = queries.TokenCount;
            table.Pages.CopyTo(staged);
            for (int s = 0; s < queries.Count; s++)
            {
                int start = queries.Start(s), count = queries.Length(s), first = table.Length(s) - count;
                for (int i = 0; i < count; i++)
                {
                    staged[entries + start + i] = s;
                    staged[entries + tokens + start + i] = first + i + 1;
                }
            }
        }

        // The widest unit dividing the size with both addresses aligned to it (device tensors hold 2-byte elements at least).
        private static (int Bytes, string Type) UnitFor(long bytes, CUdeviceptr a, CUdeviceptr b)
        {
            foreach (var unit in Units)
            {
                if (bytes % unit.Bytes == 0 && a.Value % (ulong)unit.Bytes == 0 && b.Value % (ulong)unit.Bytes == 0)
                {
                    return unit;
                }
            }
            throw new InvalidOperationException($"paged cache: expected rows of whole 2-byte units at 2-byte-aligned addresses, actual {bytes} bytes at {a} and {b}");
        }
    }
}

namespace Attention.Native
{
    using Attention.Native.Ops;

    // The op-table entries of PagedAttention on the CUDA backend (softmax attention's is with SoftmaxAttention's, in
    // SoftmaxAttentionCuda.cs), and the host side of the paged ops' device metadata.
    public sealed partial class CudaBackend
    {
        private readonly Lock _pagedMetadataGate = new();
        private int[] _pagedMetadataStaging = [];

        /// <summary>
        /// The host side of <see cref="UploadPagedMetadata"/>: at least <paramref name="count"/> ints to fill, reused (grown on
        /// demand) from call to call, so a warm call allocates nothing on the host either.
        /// </summary>
        internal Span<int> PagedMetadataStaging(int count)
        {
            lock (_pagedMetadataGate)
            {
                if (_pagedMetadataStaging.Length < count)
                {
                    _pagedMetadataStaging = new int[Math.Max(count, 4096)];
                }
                return _pagedMetadataStaging.AsSpan(0, count);
            }
        }

        /// <summary>
        /// The first <paramref name="count"/> staged ints (<see cref="PagedMetadataStaging"/>: block tables, the tokens' sequences
        /// and visible keys, write slots) on the device: the ragged ops' launch-index buffer (<see cref="UploadLaunchIndices"/>:
        /// grown on demand, a copy queued on the stream without a host wait, valid for the launches queued before the next upload).
        /// </summary>
        internal CUdeviceptr UploadPagedMetadata(int count)
        {
            lock (_pagedMetadataGate)
            {
                return UploadLaunchIndices(_pagedMetadataStaging.AsSpan(0, count));
            }
        }

        internal override void PagedWrite(Tensor values, Tensor pages, int[] slots) => PagedAttentionCuda.Write(this, values, pages, slots);

        internal override void PagedCopy(Tensor pages, int source, int destination) => PagedAttentionCuda.Copy(this, pages, source, destination);

        internal override void PagedLatentAttention(Tensor q, Tensor latentPages, Tensor kvUp, Tensor o, int nopeDim, SequenceLayout queries, PageTable table, double scale) =>
            PagedAttentionCuda.Latent(this, q, latentPages, kvUp, o, nopeDim, queries, table, scale, LatentAttentionCuda.MaxGridY);

        internal override void PagedTpaAttention(Tensor aq, Tensor bq, Tensor akPages, Tensor bkPages, Tensor avPages, Tensor bvPages, Tensor o, SequenceLayout queries,
            PageTable table) =>
            PagedAttentionCuda.Tpa(this, aq, bq, akPages, bkPages, avPages, bvPages, o, queries, table, LatentAttentionCuda.MaxGridY);
    }
}

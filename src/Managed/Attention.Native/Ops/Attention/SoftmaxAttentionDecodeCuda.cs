using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops;

/// <summary>
/// The memory-speed decode launcher of <see cref="SoftmaxAttention"/> (cuda/attention_decode.cu): a few query rows against a
/// long bf16/fp16 cache, without a bias, for head widths (d_qk, d_v) of (64, 64), (128, 128), (256, 128) (SAS's expanded
/// cache) and (256, 256) (MFA's one wide KV head). Flash-decoding: the cache is cut into splits, one block each, whose warps stream cache rows with 16-byte loads and
/// score all the KV group's heads against each row as it passes (the group reads its cache once; a large group, such as MFA's
/// 64 query heads on one KV head, is tiled over row blocks of 8 packed rows in the same launch); the split-KV combine of
/// attention.cu merges the blocks' partials into o and the log-sum-exp. <see cref="SoftmaxAttentionCuda"/> sends other
/// problems to the tensor-core or CUDA-core kernels.
/// </summary>
internal static class SoftmaxAttentionDecodeCuda
{
    private const uint Threads = 128;      // DEC_THREADS
    private const int MaxQueryRows = 16;   // "a few query rows": decode, speculative decode, short prefill chunks
    private const int MaxPackedRows = 64;  // per KV head (Tq · group): past 8 row blocks the cache re-reads stop paying
    private const int MinKeysPerSplit = 128;
    private const int KeyGranule = 64;     // splits start on a multiple of the widest step (DEC_WARPS · slots · unroll)

    /// <summary>Head widths (d_qk, d_v) with instantiations.</summary>
    public static IReadOnlyList<(int Qk, int V)> Widths { get; } = [(64, 64), (128, 128), (256, 128), (256, 256)];

    /// <summary>Packed rows per block the kernel is instantiated for; a problem takes the smallest that fits, or the largest.</summary>
    private static readonly int[] RowCounts = [1, 4, 8];

    private static readonly string[] TypeNames = ["bf16_t", "half_t"];

    public static KernelProgram Program { get; } = new(
        "attention_decode.cu",
        [.. from t in TypeNames from w in Widths from r in RowCounts select Name(t, w.Qk, w.V, r)]);

    private static string Name(string typeName, int qk, int v, int rows) => $"attention_decode<{typeName}, {qk}, {v}, {rows}>";

    /// <summary>True when the decode kernel computes this forward on this device.</summary>
    public static bool Handles(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor o, SoftmaxAttentionCuda.Shape shape) =>
        SoftmaxAttentionTensorCoreCuda.Enabled
        && q.DType is DType.BF16 or DType.F16
        && bias is null
        && Widths.Contains((shape.Dqk, shape.Dv))
        && shape.Tq <= MaxQueryRows
        && (long)shape.Tq * (shape.Heads / shape.KvHeads) <= MaxPackedRows
        && shape.Length > 0
        && backend.Device.ComputeCapabilityMajor >= 7
        // 16-byte loads: every row must start on 16 bytes (the base and, for a view, its strides).
        && SoftmaxAttentionTensorCoreCuda.Aligned(q) && SoftmaxAttentionTensorCoreCuda.Aligned(k) && SoftmaxAttentionTensorCoreCuda.Aligned(v);

    /// <summary>Rows per block for <paramref name="packedRows"/> packed (query, head) rows per KV head.</summary>
    internal static int RowsPerBlock(int packedRows) => RowCounts.FirstOrDefault(r => r >= packedRows, RowCounts[^1]);

    /// <summary>
    /// Cuts <paramref name="keys"/> into splits so that about four blocks run per multiprocessor, each split at least
    /// <see cref="MinKeysPerSplit"/> keys and a multiple of <see cref="KeyGranule"/>.
    /// </summary>
    internal static (int Splits, int KeysPerSplit) PlanSplits(int multiprocessors, long blocks, int keys)
    {
        long wanted = 4L * multiprocessors;
        long splits = Math.Clamp((wanted + blocks - 1) / blocks, 1, Math.Max(1, keys / MinKeysPerSplit));
        int perSplit = (int)((keys + splits - 1) / splits);
        perSplit = (perSplit + KeyGranule - 1) / KeyGranule * KeyGranule;
        return ((keys + perSplit - 1) / perSplit, perSplit);
    }

    /// <summary>
    /// The forward; <paramref name="rowsShape"/> is the dense shape of the rows the combine walks (the problem's own, or a ragged
    /// batch's packed rows as one sequence: <see cref="SoftmaxAttentionCuda.ShapesOf"/>).
    /// </summary>
    public static void Forward(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, SoftmaxAttentionCuda.Shape shape,
        SoftmaxAttentionCuda.Shape rowsShape)
    {
        int packed = shape.Tq * (shape.Heads / shape.KvHeads);
        int rowsPerBlock = RowsPerBlock(packed);
        int rowBlocks = (packed + rowsPerBlock - 1) / rowsPerBlock;
        long blocks = (long)shape.Batch * shape.KvHeads * rowBlocks;
        var (splits, keysPerSplit) = PlanSplits(backend.Device.MultiprocessorCount, blocks, shape.Length);
        long rows = (long)rowsShape.Batch * rowsShape.Heads * rowsShape.Tq;
        long oBytes = SoftmaxAttentionCuda.AlignUp((long)splits * rows * shape.Dv * sizeof(float));
        var scratch = backend.Scratch(oBytes + ((long)splits * rows * 2 * sizeof(float)));
        var partialO = scratch.Pointer;
        var partialMl = scratch.Pointer + oBytes;

        var kernel = backend.Kernel(Program, Name(KernelProgram.StorageTypeName(q.DType), shape.Dqk, shape.Dv, rowsPerBlock));
        var args = new KernelArgs(stackalloc byte[SoftmaxAttentionCuda.ArgumentBytes], stackalloc int[8]);
        args.Add(partialO);
        args.Add(partialMl);
        args.Add(Ptr(q));
        args.Add(Ptr(k));
        args.Add(Ptr(v));
        args.Add(shape);
        args.Add(keysPerSplit);
        kernel.Launch(Dim3.Grid(splits, (long)shape.KvHeads * rowBlocks, shape.Batch, nameof(q), "splits", "key/value heads × row blocks", "batch (sequences)"), Threads, 0, backend.Stream, args);
        SoftmaxAttentionCuda.Combine(backend, o, lse, partialO, partialMl, rowsShape, splits);
    }
}

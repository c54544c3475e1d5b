using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops;

/// <summary>
/// The tensor-core launchers of <see cref="SoftmaxAttention"/> (cuda/attention_mma.cu): mma.sync m16n8k16 with fp32
/// accumulation, for bf16/fp16 heads without a bias, on sm_80 and newer, forward and backward for (d_qk, d_v) of (64, 64),
/// (128, 128), (192, 128) (MLA) and (256, 128) (SAS). The forward writes what the CUDA-core forward writes (o and the row
/// log-sum-exp); the backward's dq and dk/dv kernels take the same lse and row deltas (4-warp kernels for d_qk = d_v,
/// 8-warp kernels that split each tile's gradient columns between warp pairs for the wide heads).
/// <see cref="SoftmaxAttentionCuda"/> falls back to the CUDA-core kernels for everything else.
/// </summary>
internal static class SoftmaxAttentionTensorCoreCuda
{
    /// <summary>
    /// Set <c>ATTENTION_NATIVE_TENSOR_CORES=0</c> to force the fp32 CUDA-core parity kernels where the fast ones (tensor cores,
    /// and the memory-speed decode of <see cref="SoftmaxAttentionDecodeCuda"/>) would apply: to compare the two, or to rule one out.
    /// </summary>
    public const string DisableVariable = "ATTENTION_NATIVE_TENSOR_CORES";

    /// <summary>False when <see cref="DisableVariable"/> is <c>0</c> (read once: the dispatch runs on every launch).</summary>
    public static bool Enabled { get; } = Environment.GetEnvironmentVariable(DisableVariable) != "0";

    private const uint Threads = 128;         // MMA_THREADS
    private const uint WideThreads = 256;     // MMA_WIDE_THREADS
    private const int QueryRowsPerBlock = 64; // MMA_BQ
    private const int KeyTile = 64;           // MMA_BK
    private const int QueryStepDkDv = 32;     // MMA_BQ_DKV

    /// <summary>Head widths (d_qk, d_v) with forward and backward instantiations.</summary>
    public static IReadOnlyList<(int Qk, int V)> Widths { get; } = [(64, 64), (128, 128), (192, 128), (256, 128)];

    private static readonly string[] TypeNames = ["bf16_t", "half_t"];

    public static KernelProgram Program { get; } = new(
        "attention_mma.cu",
        [
            .. from t in TypeNames from w in Widths select ForwardName(t, w.Qk, w.V),
            .. from t in TypeNames from w in Widths select BackwardName("dq", t, w.Qk, w.V),
            .. from t in TypeNames from w in Widths select BackwardName("dkdv", t, w.Qk, w.V),
        ]);

    private static string ForwardName(string typeName, int qk, int v) => $"attention_forward_mma<{typeName}, {qk}, {v}>";

    // attention_backward_{dq,dkdv}_mma<T, D> when d_qk = d_v, else attention_backward_{dq,dkdv}_wide<T, DQK, DV>.
    private static string BackwardName(string gradient, string typeName, int qk, int v) =>
        qk == v ? $"attention_backward_{gradient}_mma<{typeName}, {qk}>" : $"attention_backward_{gradient}_wide<{typeName}, {qk}, {v}>";

    private static CudaKernel Prepare(CudaBackend backend, string name, int sharedBytes)
    {
        var k = backend.Kernel(Program, name);
        if (sharedBytes > 48 * 1024)
        {
            k.SetMaxDynamicSharedMemory(sharedBytes);
        }
        return k;
    }

    /// <summary>True when the tensor-core forward computes these tensors on this device.</summary>
    public static bool Handles(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor o) =>
        Widths.Contains((q.Shape[-1], v.Shape[-1])) && Applies(backend, q, k, v, bias, o)
        && ForwardSharedBytes(q.Shape[-1], v.Shape[-1]) <= backend.Device.MaxSharedMemoryPerBlockOptin;

    /// <summary>The forward's dynamic shared memory: the Q tile and two K and two V tiles (double-buffered), 16-bit.</summary>
    internal static int ForwardSharedBytes(int dqk, int dv) => (((QueryRowsPerBlock + (2 * KeyTile)) * dqk) + (2 * KeyTile * dv)) * 2;

    /// <summary>True when the tensor-core backward computes the gradients of these tensors on this device.</summary>
    public static bool HandlesBackward(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor dO) =>
        Widths.Contains((q.Shape[-1], v.Shape[-1])) && Applies(backend, q, k, v, bias, dO)
        && Math.Max(DqSharedBytes(q.Shape[-1], v.Shape[-1]), DkDvSharedBytes(q.Shape[-1], v.Shape[-1])) <= backend.Device.MaxSharedMemoryPerBlockOptin;

    /// <summary>The dq kernel's dynamic shared memory: Q, dO, K, V tiles; the wide kernel adds its 64×64 dS tile.</summary>
    internal static int DqSharedBytes(int dqk, int dv) =>
        ((QueryRowsPerBlock + KeyTile) * (dqk + dv) * 2) + (dqk != dv ? QueryRowsPerBlock * KeyTile * 2 : 0);

    /// <summary>The dk/dv kernel's: K, V, Q, dO tiles and the rows' lse and delta; the wide kernel adds its Pᵀ and dSᵀ tiles.</summary>
    internal static int DkDvSharedBytes(int dqk, int dv) =>
        ((KeyTile + QueryStepDkDv) * (dqk + dv) * 2) + (2 * QueryStepDkDv * sizeof(float)) + (dqk != dv ? 2 * KeyTile * QueryStepDkDv * 2 : 0);

    private static bool Applies(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor o) =>
        Enabled
        && q.DType is DType.BF16 or DType.F16
        && bias is null
        && backend.Device.ComputeCapabilityMajor >= 8
        // cp.async moves 16-byte chunks: every row must start on a 16-byte boundary.
        && Aligned(q) && Aligned(k) && Aligned(v) && Aligned(o);

    /// <summary>
    /// True when every row of the tensor starts on 16 bytes (what cp.async and 16-byte loads need): its device address is a
    /// multiple of 16 and so is each stride but the last in bytes. A contiguous tensor's rows are d·2 bytes, a multiple of 16 for
    /// every width these kernels take; a view (<see cref="Tensor.Transpose"/>) whose are not takes the CUDA-core kernels.
    /// </summary>
    internal static bool Aligned(Tensor t) => Ptr(t).Value % 16 == 0 && (t.StridesOrNull is not { } strides || RowsAligned(strides, t.DType.SizeInBytes()));

    private static bool RowsAligned(long[] strides, int elementBytes)
    {
        for (int i = 0; i < strides.Length - 1; i++)
        {
            if (strides[i] * elementBytes % 16 != 0)
            {
                return false;
            }
        }
        return true;
    }

    public static void Forward(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, SoftmaxAttentionCuda.Shape shape)
    {
        int shared = ForwardSharedBytes(shape.Dqk, shape.Dv);
        var kernel = Prepare(backend, ForwardName(KernelProgram.StorageTypeName(q.DType), shape.Dqk, shape.Dv), shared);
        var args = new KernelArgs(stackalloc byte[SoftmaxAttentionCuda.ArgumentBytes], stackalloc int[8]);
        args.Add(Ptr(o));
        args.Add(Ptr(lse));
        args.Add(Ptr(q));
        args.Add(Ptr(k));
        args.Add(Ptr(v));
        args.Add(shape);
        uint tiles = (uint)((shape.Tq + QueryRowsPerBlock - 1) / QueryRowsPerBlock);
        kernel.Launch(Dim3.Grid(tiles, shape.Heads, shape.Batch, nameof(q), "query tiles", "heads", "batch (sequences)"), Threads, (uint)shared, backend.Stream, args);
    }

    /// <summary>dq (when given) and dk, dv (when either is given), added into; <paramref name="delta"/> holds rowsum(dO ∘ O).</summary>
    public static void Backward(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor dO, Tensor lse, Interop.CUdeviceptr delta,
        Tensor? dq, Tensor? dk, Tensor? dv, SoftmaxAttentionCuda.Shape shape)
    {
        string typeName = KernelProgram.StorageTypeName(q.DType);
        bool wide = shape.Dqk != shape.Dv;
        uint threads = wide ? WideThreads : Threads;
        if (dq is not null)
        {
            int shared = DqSharedBytes(shape.Dqk, shape.Dv);
            var kernel = Prepare(backend, BackwardName("dq", typeName, shape.Dqk, shape.Dv), shared);
            var args = new KernelArgs(stackalloc byte[SoftmaxAttentionCuda.ArgumentBytes], stackalloc int[12]);
            args.Add(Ptr(dq));
            AddInputs(ref args, q, k, v, dO, lse, delta, shape);
            uint tiles = (uint)((shape.Tq + QueryRowsPerBlock - 1) / QueryRowsPerBlock);
            kernel.Launch(Dim3.Grid(tiles, shape.Heads, shape.Batch, nameof(q), "query tiles", "heads", "batch (sequences)"), threads, (uint)shared, backend.Stream, args);
        }
        if (dk is not null || dv is not null)
        {
            int shared = DkDvSharedBytes(shape.Dqk, shape.Dv);
            var kernel = Prepare(backend, BackwardName("dkdv", typeName, shape.Dqk, shape.Dv), shared);
            var args = new KernelArgs(stackalloc byte[SoftmaxAttentionCuda.ArgumentBytes], stackalloc int[12]);
            args.Add(Ptr(dk));
            args.Add(Ptr(dv));
            AddInputs(ref args, q, k, v, dO, lse, delta, shape);
            uint tiles = (uint)((shape.Length + KeyTile - 1) / KeyTile);
            kernel.Launch(Dim3.Grid(tiles, shape.KvHeads, shape.Batch, nameof(k), "key tiles", "key/value heads", "batch (sequences)"), threads, (uint)shared, backend.Stream, args);
        }
    }

    // The backward kernels' arguments after their outputs.
    private static void AddInputs(ref KernelArgs args, Tensor q, Tensor k, Tensor v, Tensor dO, Tensor lse, Interop.CUdeviceptr delta,
        SoftmaxAttentionCuda.Shape shape)
    {
        args.Add(Ptr(q));
        args.Add(Ptr(k));
        args.Add(Ptr(v));
        args.Add(Ptr(dO));
        args.Add(Ptr(lse));
        args.Add(delta);
        args.Add(shape);
    }
}

using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops;

/// <summary>
/// The tensor-core launchers of <see cref="SoftmaxAttention"/> (cuda/attention_mma.cu): mma.sync m16n8k16 with fp32
/// accumulation, for bf16/fp16 heads without a bias, on sm_80 and newer: the forward for (d_qk, d_v) of (64, 64), (128, 128),
/// (192, 128) (MLA) and (256, 128) (SAS), the backward for (64, 64) and (128, 128). The forward writes what the CUDA-core
/// forward writes (o and the row log-sum-exp); the backward's dq and dk/dv kernels take the same lse and row deltas.
/// <see cref="SoftmaxAttentionCuda"/> falls back to the CUDA-core kernels for everything else.
/// </summary>
internal static class SoftmaxAttentionTensorCoreCuda
{
    /// <summary>Set <c>ATTENTION_NATIVE_TENSOR_CORES=0</c> to force the CUDA-core kernels (to compare the two, or to rule one out).</summary>
    public const string DisableVariable = "ATTENTION_NATIVE_TENSOR_CORES";

    /// <summary>False when <see cref="DisableVariable"/> is <c>0</c> (read once: the dispatch runs on every launch).</summary>
    public static bool Enabled { get; } = Environment.GetEnvironmentVariable(DisableVariable) != "0";

    private const int Threads = 128;          // MMA_THREADS
    private const int QueryRowsPerBlock = 64; // MMA_BQ
    private const int KeyTile = 64;           // MMA_BK
    private const int QueryStepDkDv = 32;     // MMA_BQ_DKV

    /// <summary>Head widths (d_qk, d_v) with a forward instantiation.</summary>
    public static IReadOnlyList<(int Qk, int V)> ForwardWidths { get; } = [(64, 64), (128, 128), (192, 128), (256, 128)];

    /// <summary>Head widths (d_qk = d_v) with backward instantiations.</summary>
    public static IReadOnlyList<int> BackwardWidths { get; } = [64, 128];

    private static readonly string[] TypeNames = ["bf16_t", "half_t"];

    private static readonly string[] Kernels = ["attention_forward_mma", "attention_backward_dq_mma", "attention_backward_dkdv_mma"];

    public static KernelProgram Program { get; } = new(
        "attention_mma.cu",
        [
            .. from t in TypeNames from w in ForwardWidths select ForwardName(t, w.Qk, w.V),
            .. from kernel in Kernels.Skip(1) from t in TypeNames from w in BackwardWidths select $"{kernel}<{t}, {w}>",
        ]);

    private static string ForwardName(string typeName, int qk, int v) => $"{Kernels[0]}<{typeName}, {qk}, {v}>";

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
        ForwardWidths.Contains((q.Shape[-1], v.Shape[-1])) && Applies(backend, q, k, v, bias, o);

    /// <summary>True when the tensor-core backward computes the gradients of these tensors on this device.</summary>
    public static bool HandlesBackward(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor dO) =>
        q.Shape[-1] == v.Shape[-1] && BackwardWidths.Contains(q.Shape[-1]) && Applies(backend, q, k, v, bias, dO);

    private static bool Applies(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor o) =>
        Enabled
        && q.DType is DType.BF16 or DType.F16
        && bias is null
        && backend.Device.ComputeCapabilityMajor >= 8
        // cp.async moves 16-byte chunks: every tensor must start on a 16-byte boundary (rows are d·2 bytes, a multiple of 16).
        && Aligned(q) && Aligned(k) && Aligned(v) && Aligned(o);

    /// <summary>True when the tensor's device address is a multiple of 16 bytes (what cp.async needs).</summary>
    internal static bool Aligned(Tensor t) => Ptr(t).Value % 16 == 0;

    public static void Forward(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, SoftmaxAttentionCuda.Shape shape)
    {
        int shared = ((QueryRowsPerBlock + KeyTile) * shape.Dqk * 2) + (KeyTile * shape.Dv * 2);
        var kernel = Prepare(backend, ForwardName(KernelProgram.StorageTypeName(q.DType), shape.Dqk, shape.Dv), shared);
        var args = new KernelArgs(stackalloc byte[96], stackalloc int[8]);
        args.Add(Ptr(o));
        args.Add(Ptr(lse));
        args.Add(Ptr(q));
        args.Add(Ptr(k));
        args.Add(Ptr(v));
        args.Add(shape);
        uint tiles = (uint)((shape.Tq + QueryRowsPerBlock - 1) / QueryRowsPerBlock);
        kernel.Launch(new Dim3(tiles, (uint)shape.Heads, (uint)shape.Batch), Threads, (uint)shared, backend.Stream, args);
    }

    /// <summary>dq (when given) and dk, dv (when either is given), added into; <paramref name="delta"/> holds rowsum(dO ∘ O).</summary>
    public static void Backward(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor dO, Tensor lse, Interop.CUdeviceptr delta,
        Tensor? dq, Tensor? dk, Tensor? dv, SoftmaxAttentionCuda.Shape shape)
    {
        int width = shape.Dqk;
        if (dq is not null)
        {
            int shared = 2 * (QueryRowsPerBlock + KeyTile) * width * 2;
            var kernel = Prepare(backend, $"{Kernels[1]}<{KernelProgram.StorageTypeName(q.DType)}, {width}>", shared);
            var args = new KernelArgs(stackalloc byte[128], stackalloc int[12]);
            args.Add(Ptr(dq));
            AddInputs(ref args, q, k, v, dO, lse, delta, shape);
            uint tiles = (uint)((shape.Tq + QueryRowsPerBlock - 1) / QueryRowsPerBlock);
            kernel.Launch(new Dim3(tiles, (uint)shape.Heads, (uint)shape.Batch), Threads, (uint)shared, backend.Stream, args);
        }
        if (dk is not null || dv is not null)
        {
            int shared = (2 * (KeyTile + QueryStepDkDv) * width * 2) + (2 * QueryStepDkDv * sizeof(float));
            var kernel = Prepare(backend, $"{Kernels[2]}<{KernelProgram.StorageTypeName(q.DType)}, {width}>", shared);
            var args = new KernelArgs(stackalloc byte[128], stackalloc int[12]);
            args.Add(Ptr(dk));
            args.Add(Ptr(dv));
            AddInputs(ref args, q, k, v, dO, lse, delta, shape);
            uint tiles = (uint)((shape.Length + KeyTile - 1) / KeyTile);
            kernel.Launch(new Dim3(tiles, (uint)shape.KvHeads, (uint)shape.Batch), Threads, (uint)shared, backend.Stream, args);
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

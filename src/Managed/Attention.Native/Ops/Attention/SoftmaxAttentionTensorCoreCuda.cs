using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops;

/// <summary>
/// The tensor-core launchers of <see cref="SoftmaxAttention"/> (cuda/attention_mma.cu): mma.sync m16n8k16 with fp32
/// accumulation, for bf16/fp16 heads of width 64 or 128 (d_qk = d_v) without a bias, on sm_80 and newer. The forward writes
/// what the CUDA-core forward writes (o and the row log-sum-exp); the backward's dq and dk/dv kernels take the same lse and
/// row deltas. <see cref="SoftmaxAttentionCuda"/> falls back to the CUDA-core kernels for everything else.
/// </summary>
internal static class SoftmaxAttentionTensorCoreCuda
{
    /// <summary>Set <c>ATTENTION_NATIVE_TENSOR_CORES=0</c> to force the CUDA-core kernels (to compare the two, or to rule one out).</summary>
    public const string DisableVariable = "ATTENTION_NATIVE_TENSOR_CORES";

    private const int Threads = 128;          // MMA_THREADS
    private const int QueryRowsPerBlock = 64; // MMA_BQ
    private const int KeyTile = 64;           // MMA_BK
    private const int QueryStepDkDv = 32;     // MMA_BQ_DKV

    /// <summary>Head widths with an instantiation.</summary>
    public static IReadOnlyList<int> Widths { get; } = [64, 128];

    private static readonly string[] TypeNames = ["bf16_t", "half_t"];

    private static readonly string[] Kernels = ["attention_forward_mma", "attention_backward_dq_mma", "attention_backward_dkdv_mma"];

    public static KernelProgram Program { get; } = new(
        "attention_mma.cu", [.. from kernel in Kernels from t in TypeNames from w in Widths select Name(kernel, t, w)]);

    private static string Name(string kernel, string typeName, int width) => $"{kernel}<{typeName}, {width}>";

    private static CudaKernel Prepare(CudaBackend backend, string kernel, DType dtype, int width, int sharedBytes)
    {
        var k = backend.Kernel(Program, Name(kernel, KernelProgram.StorageTypeName(dtype), width));
        if (sharedBytes > 48 * 1024)
        {
            k.SetMaxDynamicSharedMemory(sharedBytes);
        }
        return k;
    }

    /// <summary>True when this kernel computes the forward of these tensors on this device.</summary>
    public static bool Handles(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor o)
    {
        int dqk = q.Shape[-1];
        return q.DType is DType.BF16 or DType.F16
            && bias is null
            && dqk == v.Shape[-1]
            && Widths.Contains(dqk)
            && backend.Device.ComputeCapabilityMajor >= 8
            // cp.async moves 16-byte chunks: every tensor must start on a 16-byte boundary (rows are d·2 bytes, a multiple of 16).
            && new[] { q, k, v, o }.All(t => Ptr(t).Value % 16 == 0)
            && Environment.GetEnvironmentVariable(DisableVariable) != "0";
    }

    public static void Forward(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, SoftmaxAttentionCuda.Shape shape)
    {
        int width = shape.Dqk;
        int shared = (QueryRowsPerBlock + (2 * KeyTile)) * width * 2;
        var kernel = Prepare(backend, Kernels[0], q.DType, width, shared);
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
            var kernel = Prepare(backend, Kernels[1], q.DType, width, shared);
            var args = new KernelArgs(stackalloc byte[128], stackalloc int[12]);
            args.Add(Ptr(dq));
            AddInputs(ref args, q, k, v, dO, lse, delta, shape);
            uint tiles = (uint)((shape.Tq + QueryRowsPerBlock - 1) / QueryRowsPerBlock);
            kernel.Launch(new Dim3(tiles, (uint)shape.Heads, (uint)shape.Batch), Threads, (uint)shared, backend.Stream, args);
        }
        if (dk is not null || dv is not null)
        {
            int shared = (2 * (KeyTile + QueryStepDkDv) * width * 2) + (2 * QueryStepDkDv * sizeof(float));
            var kernel = Prepare(backend, Kernels[2], q.DType, width, shared);
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

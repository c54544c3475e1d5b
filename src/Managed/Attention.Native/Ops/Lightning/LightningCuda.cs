using System.Runtime.CompilerServices;
using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>
    /// CUDA launcher of <see cref="Lightning"/> (cuda/lightning.cu; cuda/lightning_mma.cu on tensor cores for bf16/fp16 heads of
    /// 64 or 128, with the same arguments). One kernel, the Lightning-2 chunked recurrence with its
    /// state slice in shared memory across blocks, serves every pass:
    /// forward <c>o = rec(q, k, v)</c>; backward, forward sweep <c>dq += rec(dO, v, k)</c> from S0ᵀ; reverse sweeps
    /// <c>dv += rec←(k, q, dO)</c> and <c>dk += rec←(v, dO, q)</c> from the final state's gradient G (Gᵀ for dk), the state of
    /// the reverse sweep being D of the CPU reference, and <c>dS0 += λ·D_0</c> from the dv sweep's last state
    /// (cuda/include/lightning_state.cuh). States are fp32 whatever the storage type.
    /// A single token (T = 1, the decode step, usually with the state updated in place) runs the small recurrent-step kernel
    /// <c>lightning_decode_step</c> instead: <c>o = λ q·S + (q·k) v</c>, <c>S ← λ S + kᵀ v</c>.
    /// </summary>
    internal static class LightningCuda
    {
        /// <summary>Widest q/k or v head the kernel holds in shared memory.</summary>
        public const int MaxWidth = 256;

        private const int Tokens = 32;   // LIGHTNING_BT
        private const int Columns = 32;  // LIGHTNING_DV
        private const int Threads = 256;
        private const int MaxHeadsPerLaunch = 64;  // LIGHTNING_MAX_HEADS
        private const int StepWarps = 8;           // LIGHTNING_STEP_WARPS

        // LIGHTNING_STATE_* of cuda/include/lightning_state.cuh.
        private const int StateTransposed = 1;
        private const int StateAtFirst = 2;
        private const int StateAddFinal = 4;

        private static readonly KernelNames Kernel = new("lightning_forward");
        private static readonly KernelNames StepKernel = new("lightning_decode_step");

        public static KernelProgram Program { get; } = KernelProgram.ForStorageTypes("lightning.cu", Kernel.Template, StepKernel.Template);

        private const int TensorCoreThreads = 128; // LMMA_THREADS
        private const int TensorCoreTokens = 64;   // LMMA_BT
        private const int TensorCoreColumns = 64;  // LMMA_DV

        /// <summary>The tensor-core recurrence (cuda/lightning_mma.cu): bf16/fp16, inner width 64 or 128.</summary>
        public static KernelProgram TensorCoreProgram { get; } = new(
            "lightning_mma.cu", [.. from t in new[] { "bf16_t", "half_t" } from w in new[] { 64, 128 } select $"lightning_forward_mma<{t}, {w}>"]);

        // The tensor-core recurrence applies to 16-bit tensors with an inner width of 64 or 128 and an output width that is a
        // multiple of 64, on sm_80+, the tensors cp.async reads and the output 16-byte aligned (states are read and written
        // element by element); ATTENTION_NATIVE_TENSOR_CORES=0 turns it off.
        private static bool TensorCoresFit(CudaBackend backend, Tensor? output, Tensor a, Tensor b, Tensor c)
        {
            int inner = a.Shape[3], width = c.Shape[3];
            return SoftmaxAttentionTensorCoreCuda.Enabled
                && a.DType is DType.BF16 or DType.F16
                && inner is 64 or 128
                && width % TensorCoreColumns == 0
                && backend.Device.ComputeCapabilityMajor >= 8
                && (output is null || SoftmaxAttentionTensorCoreCuda.Aligned(output)) && SoftmaxAttentionTensorCoreCuda.Aligned(a)
                && SoftmaxAttentionTensorCoreCuda.Aligned(b) && SoftmaxAttentionTensorCoreCuda.Aligned(c);
        }

        /// <summary>struct LightningDecay of lightning.cu: λ per head of one launch, by value, in double.</summary>
        [InlineArray(MaxHeadsPerLaunch)]
        private struct Decay
        {
            private double _first;
        }

        public static void Forward(CudaBackend backend, Tensor q, Tensor k, Tensor v, double[] decay, Tensor o, Tensor? initialState, Tensor? finalState)
        {
            CheckWidths(q, v);
            if (q.Shape[1] == 1)
            {
                DecodeStep(backend, o, finalState, initialState, q, k, v, decay);
                return;
            }
            Recurrence(backend, o, finalState, initialState, q, k, v, decay, reverse: false, accumulate: false, stateMode: 0);
        }

        public static void Backward(CudaBackend backend, Tensor q, Tensor k, Tensor v, double[] decay, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv, Tensor? initialState, Tensor? dInitialState, Tensor? dFinalState)
        {
            CheckWidths(q, v);
            if (dq is not null)
            {
                // Its state is Σ v_sᵀ k_s = Sᵀ: it starts from S0ᵀ.
                Recurrence(backend, dq, null, initialState, dO, v, k, decay, reverse: false, accumulate: true, stateMode: StateTransposed);
            }
            if (dv is not null || dInitialState is not null)
            {
                // Its state is D (Σ q_tᵀ dO_t, decayed): from G, and λ·D_0 added into dS0; without dv it runs for dS0 alone.
                Recurrence(backend, dv, dInitialState, dFinalState, k, q, dO, decay, reverse: true, accumulate: true, stateMode: StateAtFirst | StateAddFinal);
            }
            if (dk is not null)
            {
                Recurrence(backend, dk, null, dFinalState, v, dO, q, decay, reverse: true, accumulate: true, stateMode: StateAtFirst | StateTransposed);
            }
        }

        // out (+)= Σ_{s ≤ t in sweep order} λ^(t−s) (a_t·b_s) c_s (+ λ^(t+1) a_t·S0), over tensors [B, T, H, width]; stateMode
        // changes how the states enter and leave (LIGHTNING_STATE_*). A null output computes only the final state.
        private static void Recurrence(CudaBackend backend, Tensor? output, Tensor? finalState, Tensor? initialState, Tensor a, Tensor b, Tensor c, double[] decay, bool reverse, bool accumulate, int stateMode)
        {
            var s = a.Shape;
            int batch = s[0], seq = s[1], heads = s[2], inner = s[3], width = c.Shape[3];
            if (batch == 0 || heads == 0 || width == 0 || (seq == 0 && finalState is null))
            {
                return;
            }
            bool tensorCores = TensorCoresFit(backend, output, a, b, c);
            int shared = tensorCores
                ? (((2 * TensorCoreTokens * inner) + (TensorCoreTokens * TensorCoreColumns) + (inner * TensorCoreColumns)) * 2) + ((TensorCoreTokens + 1) * sizeof(float))
                : ((inner * Columns) + (2 * Tokens * (inner + 1)) + (Tokens * Columns) + (Tokens * (Tokens + 1)) + Tokens + 1) * sizeof(float);
            var kernel = tensorCores
                ? backend.Kernel(TensorCoreProgram, $"lightning_forward_mma<{KernelProgram.StorageTypeName(a.DType)}, {inner}>")
                : backend.Kernel(Program, Kernel[a.DType]);
            if (shared > 48 * 1024)
            {
                kernel.SetMaxDynamicSharedMemory(shared);
            }
            Span<byte> storage = stackalloc byte[1024];
            Span<int> offsets = stackalloc int[20];
            for (int first = 0; first < heads; first += MaxHeadsPerLaunch)
            {
                int group = Math.Min(MaxHeadsPerLaunch, heads - first);
                var lambdas = Lambdas(decay, first, group);
                var args = new KernelArgs(storage, offsets);
                args.Add(Ptr(output));
                args.Add(Ptr(finalState));
                args.Add(Ptr(initialState));
                args.Add(Ptr(a));
                args.Add(Ptr(b));
                args.Add(Ptr(c));
                args.Add(lambdas);
                args.Add(first);
                args.Add(group);
                args.Add(seq);
                args.Add(heads);
                args.Add(inner);
                args.Add(width);
                args.Add(reverse ? 1 : 0);
                args.Add(accumulate ? 1 : 0);
                args.Add(stateMode);
                var grid = Dim3.Grid((long)batch * group, Dim3.CeilDiv(width, tensorCores ? TensorCoreColumns : Columns), 1, nameof(c), "batch × heads of a launch", "column slices", "one block");
                kernel.Launch(grid, (uint)(tensorCores ? TensorCoreThreads : Threads), (uint)shared, backend.Stream, args);
            }
        }

        // One token per (b, h): o = λ q·S0 + (q·k) v and S1 = λ S0 + kᵀ v (S0 zero when absent; S1 may be S0 itself).
        private static void DecodeStep(CudaBackend backend, Tensor o, Tensor? finalState, Tensor? initialState, Tensor q, Tensor k, Tensor v, double[] decay)
        {
            int batch = q.Shape[0], heads = q.Shape[2], inner = q.Shape[3], width = v.Shape[3];
            if (batch == 0 || heads == 0 || width == 0)
            {
                return;
            }
            var kernel = backend.Kernel(Program, StepKernel[q.DType]);
            Span<byte> storage = stackalloc byte[1024];
            Span<int> offsets = stackalloc int[16];
            for (int first = 0; first < heads; first += MaxHeadsPerLaunch)
            {
                int group = Math.Min(MaxHeadsPerLaunch, heads - first);
                var args = new KernelArgs(storage, offsets);
                args.Add(Ptr(o));
                args.Add(Ptr(finalState));
                args.Add(Ptr(initialState));
                args.Add(Ptr(q));
                args.Add(Ptr(k));
                args.Add(Ptr(v));
                args.Add(Lambdas(decay, first, group));
                args.Add(first);
                args.Add(group);
                args.Add(heads);
                args.Add(inner);
                args.Add(width);
                kernel.Launch(Dim3.Grid((long)batch * group, Dim3.CeilDiv(width, 32), 1, nameof(v), "batch × heads of a launch", "column slices", "one block"), new Dim3(32, StepWarps), 0, backend.Stream, args);
            }
        }

        private static Decay Lambdas(double[] decay, int first, int group)
        {
            var lambdas = default(Decay);
            for (int h = 0; h < group; h++)
            {
                lambdas[h] = decay[first + h];
            }
            return lambdas;
        }

        private static void CheckWidths(Tensor q, Tensor v)
        {
            if (q.Shape[3] > MaxWidth)
            {
                throw new ArgumentException($"q: expected a head width ≤ {MaxWidth} on the CUDA backend, actual {q.Shape[3]}", nameof(q));
            }
            if (v.Shape[3] > MaxWidth)
            {
                throw new ArgumentException($"v: expected a head width ≤ {MaxWidth} on the CUDA backend, actual {v.Shape[3]}", nameof(v));
            }
        }
    }
}

namespace Attention.Native
{
    using Attention.Native.Ops;

    // The op-table entries of Lightning on the CUDA backend. The block size is the CPU reference's chunk length; the CUDA
    // kernel uses its own fixed chunk of 32 tokens (the result does not depend on it).
    public sealed partial class CudaBackend
    {
        internal override void LightningForward(Tensor q, Tensor k, Tensor v, double[] decay, Tensor o, Tensor? initialState, Tensor? finalState, int blockSize, RaggedStates? ragged)
        {
            ThrowIfRagged(ragged is not null, "Lightning");
            LightningCuda.Forward(this, q, k, v, decay, o, initialState, finalState);
        }

        internal override void LightningBackward(Tensor q, Tensor k, Tensor v, double[] decay, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv, Tensor? initialState, Tensor? dInitialState, Tensor? dFinalState, int blockSize, RaggedStates? ragged)
        {
            ThrowIfRagged(ragged is not null, "Lightning");
            LightningCuda.Backward(this, q, k, v, decay, dO, dq, dk, dv, initialState, dInitialState, dFinalState);
        }
    }
}

using System.Buffers;
using System.Runtime.CompilerServices;
using Attention.Native.Interop;
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
    /// A ragged batch (<see cref="RaggedStates"/>) is one launch per pass over all its sequences, as a dense batch is over B: the
    /// kernels read each sequence's offset and state row from device arrays (<see cref="CudaBackend.UploadLaunchIndices"/>); when
    /// every sequence holds one token (a serving pool's decode step) the forward runs the decode-step kernel with state rows.
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

        /// <summary>A ragged launch: the sequence count, and the device copies of the offsets (S + 1) and state rows (S).</summary>
        private readonly record struct RaggedLaunch(int Sequences, CUdeviceptr Offsets, CUdeviceptr Slots);

        public static void Forward(CudaBackend backend, Tensor q, Tensor k, Tensor v, double[] decay, Tensor o, Tensor? initialState, Tensor? finalState, RaggedStates? ragged)
        {
            CheckWidths(q, v);
            if (ragged is { } r && r.Sequences.TokenCount == r.Sequences.Count)
            {
                // One token per sequence, token s of [1, S, H, d] in row slots[s]: the decode step over the state rows.
                DecodeStep(backend, o, finalState, initialState, q, k, v, decay, r.Sequences.Count, backend.UploadLaunchIndices(r.Slots));
                return;
            }
            if (ragged is null && q.Shape[1] == 1)
            {
                DecodeStep(backend, o, finalState, initialState, q, k, v, decay, q.Shape[0], CUdeviceptr.Null);
                return;
            }
            var launch = Upload(backend, ragged);
            Recurrence(backend, o, finalState, initialState, q, k, v, decay, reverse: false, accumulate: false, stateMode: 0, launch);
        }

        public static void Backward(CudaBackend backend, Tensor q, Tensor k, Tensor v, double[] decay, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv, Tensor? initialState, Tensor? dInitialState, Tensor? dFinalState, RaggedStates? ragged)
        {
            CheckWidths(q, v);
            // One upload serves the three sweeps: each is queued before any later upload.
            var launch = Upload(backend, ragged);
            if (dq is not null)
            {
                // Its state is Σ v_sᵀ k_s = Sᵀ: it starts from S0ᵀ.
                Recurrence(backend, dq, null, initialState, dO, v, k, decay, reverse: false, accumulate: true, stateMode: StateTransposed, launch);
            }
            if (dv is not null || dInitialState is not null)
            {
                // Its state is D (Σ q_tᵀ dO_t, decayed): from G, and λ·D_0 added into dS0; without dv it runs for dS0 alone.
                Recurrence(backend, dv, dInitialState, dFinalState, k, q, dO, decay, reverse: true, accumulate: true, stateMode: StateAtFirst | StateAddFinal, launch);
            }
            if (dk is not null)
            {
                Recurrence(backend, dk, null, dFinalState, v, dO, q, decay, reverse: true, accumulate: true, stateMode: StateAtFirst | StateTransposed, launch);
            }
        }

        // The offsets and state rows of a ragged call on the device, in one upload (offsets first); null for a dense call.
        private static RaggedLaunch? Upload(CudaBackend backend, RaggedStates? ragged)
        {
            if (ragged is null)
            {
                return null;
            }
            int count = ragged.Sequences.Count, length = (2 * count) + 1;
            int[] indices = ArrayPool<int>.Shared.Rent(length);
            try
            {
                ragged.Sequences.Offsets.CopyTo(indices);
                ragged.Slots.CopyTo(indices, count + 1);
                var device = backend.UploadLaunchIndices(indices.AsSpan(0, length));
                return new RaggedLaunch(count, device, device + ((count + 1) * sizeof(int)));
            }
            finally
            {
                ArrayPool<int>.Shared.Return(indices);
            }
        }

        // out (+)= Σ_{s ≤ t in sweep order} λ^(t−s) (a_t·b_s) c_s (+ λ^(t+1) a_t·S0), over tensors [B, T, H, width] (or the
        // sequences of a ragged launch over [1, N, H, width]); stateMode changes how the states enter and leave
        // (LIGHTNING_STATE_*). A null output computes only the final state.
        private static void Recurrence(CudaBackend backend, Tensor? output, Tensor? finalState, Tensor? initialState, Tensor a, Tensor b, Tensor c, double[] decay, bool reverse, bool accumulate, int stateMode, RaggedLaunch? ragged)
        {
            var s = a.Shape;
            int batch = ragged?.Sequences ?? s[0], seq = s[1], heads = s[2], inner = s[3], width = c.Shape[3];
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
            var sequenceOffsets = ragged?.Offsets ?? CUdeviceptr.Null;
            var stateRows = ragged?.Slots ?? CUdeviceptr.Null;
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
                args.Add(sequenceOffsets);
                args.Add(stateRows);
                var grid = Dim3.Grid((long)batch * group, Dim3.CeilDiv(width, tensorCores ? TensorCoreColumns : Columns), 1, nameof(c), "batch × heads of a launch", "column slices", "one block");
                kernel.Launch(grid, (uint)(tensorCores ? TensorCoreThreads : Threads), (uint)shared, backend.Stream, args);
            }
        }

        // One token per (b, h): o = λ q·S0 + (q·k) v and S1 = λ S0 + kᵀ v (S0 zero when absent; S1 may be S0 itself). batch
        // tokens, of [B, 1, H, d] or a ragged [1, S, H, d] whose token s has state row stateRows[s] (null: row b).
        private static void DecodeStep(CudaBackend backend, Tensor o, Tensor? finalState, Tensor? initialState, Tensor q, Tensor k, Tensor v, double[] decay, int batch, CUdeviceptr stateRows)
        {
            int heads = q.Shape[2], inner = q.Shape[3], width = v.Shape[3];
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
                args.Add(stateRows);
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
        internal override void LightningForward(Tensor q, Tensor k, Tensor v, double[] decay, Tensor o, Tensor? initialState, Tensor? finalState, int blockSize, RaggedStates? ragged) =>
            LightningCuda.Forward(this, q, k, v, decay, o, initialState, finalState, ragged);

        internal override void LightningBackward(Tensor q, Tensor k, Tensor v, double[] decay, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv, Tensor? initialState, Tensor? dInitialState, Tensor? dFinalState, int blockSize, RaggedStates? ragged) =>
            LightningCuda.Backward(this, q, k, v, decay, dO, dq, dk, dv, initialState, dInitialState, dFinalState, ragged);
    }
}

using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>
    /// CUDA launcher of <see cref="FocusedLinearAttention"/> (cuda/focused_linear_attention.cu): per (b, h) statistics summed
    /// over the tokens in order (mean k and kᵀv; in the backward Σ z q dOᵀ and Σ e q), then one thread per output element.
    /// </summary>
    internal static class FocusedLinearAttentionCuda
    {
        private const int WarpsPerBlock = 8;

        private static readonly KernelNames TokenSums = new("focused_linear_attention_token_sums");
        private static readonly KernelNames ForwardKernel = new("focused_linear_attention_forward");
        private static readonly KernelNames BackwardQuery = new("focused_linear_attention_backward_query");
        private static readonly KernelNames BackwardKeyValue = new("focused_linear_attention_backward_key_value");

        public static KernelProgram Program { get; } = KernelProgram.ForStorageTypes(
            "focused_linear_attention.cu", TokenSums.Template, ForwardKernel.Template, BackwardQuery.Template, BackwardKeyValue.Template);

        private readonly record struct Sizes(int Batch, int Seq, int Heads, int D, int Dv)
        {
            public long Tokens => (long)Batch * Seq * Heads;
            public long StatBytes => AlignUp((long)Batch * Heads * D * (Dv + 1) * sizeof(float));
        }

        public static void Forward(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor o)
        {
            var n = SizesOf(q, v);
            if (n.Tokens == 0 || n.D == 0 || n.Dv == 0)
            {
                return;
            }
            var stats = backend.Scratch(n.StatBytes).Pointer;
            Sums(backend, q.DType, stats, k, v, Interop.CUdeviceptr.Null, Interop.CUdeviceptr.Null, n, 1f / n.Seq);
            var args = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
            args.Add(Ptr(o));
            args.Add(Ptr(q));
            args.Add(stats);
            AddSizes(ref args, n);
            backend.Kernel(Program, ForwardKernel[q.DType]).Launch(Elementwise.Grid(backend, n.Tokens * n.Dv), Elementwise.Threads, 0, backend.Stream, args);
        }

        public static void Backward(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv)
        {
            var n = SizesOf(q, v);
            if (n.Tokens == 0 || n.D == 0 || n.Dv == 0 || (dq is null && dk is null && dv is null))
            {
                return;
            }
            long weightBytes = AlignUp(n.Tokens * sizeof(float));
            var scratch = backend.Scratch((2 * n.StatBytes) + (2 * weightBytes)).Pointer;
            var stats = scratch;
            var grads = scratch + n.StatBytes;
            var z = scratch + (2 * n.StatBytes);
            var e = z + weightBytes;
            Sums(backend, q.DType, stats, k, v, Interop.CUdeviceptr.Null, Interop.CUdeviceptr.Null, n, 1f / n.Seq);

            var query = new KernelArgs(stackalloc byte[128], stackalloc int[12]);
            query.Add(Ptr(dq));
            query.Add(z);
            query.Add(e);
            query.Add(Ptr(q));
            query.Add(Ptr(dO));
            query.Add(stats);
            AddSizes(ref query, n);
            backend.Kernel(Program, BackwardQuery[q.DType]).Launch(Dim3.CeilDiv(n.Tokens, WarpsPerBlock), WarpsPerBlock * 32, 0, backend.Stream, query);
            if (dk is null && dv is null)
            {
                return;
            }
            Sums(backend, q.DType, grads, q, dO, z, e, n, 1f);
            var keyValue = new KernelArgs(stackalloc byte[128], stackalloc int[12]);
            keyValue.Add(Ptr(dk));
            keyValue.Add(Ptr(dv));
            keyValue.Add(Ptr(k));
            keyValue.Add(Ptr(v));
            keyValue.Add(grads);
            AddSizes(ref keyValue, n);
            long elements = (dk is null ? 0 : n.Tokens * n.D) + (dv is null ? 0 : n.Tokens * n.Dv);
            backend.Kernel(Program, BackwardKeyValue[q.DType]).Launch(Elementwise.Grid(backend, elements), Elementwise.Threads, 0, backend.Stream, keyValue);
        }

        private static void Sums(CudaBackend backend, DType dtype, Interop.CUdeviceptr output, Tensor a, Tensor b, Interop.CUdeviceptr w, Interop.CUdeviceptr w2, Sizes n, float scale)
        {
            var args = new KernelArgs(stackalloc byte[128], stackalloc int[12]);
            args.Add(output);
            args.Add(Ptr(a));
            args.Add(Ptr(b));
            args.Add(w);
            args.Add(w2);
            AddSizes(ref args, n);
            args.Add(scale);
            long elements = (long)n.Batch * n.Heads * n.D * (n.Dv + 1);
            backend.Kernel(Program, TokenSums[dtype]).Launch(Elementwise.Grid(backend, elements), Elementwise.Threads, 0, backend.Stream, args);
        }

        private static void AddSizes(ref KernelArgs args, Sizes n)
        {
            args.Add(n.Batch);
            args.Add(n.Seq);
            args.Add(n.Heads);
            args.Add(n.D);
            args.Add(n.Dv);
        }

        private static Sizes SizesOf(Tensor q, Tensor v) => new(q.Shape[0], q.Shape[1], q.Shape[2], q.Shape[3], v.Shape[3]);

        private static long AlignUp(long n) => (n + 255) / 256 * 256;
    }
}

namespace Attention.Native
{
    using Attention.Native.Ops;

    // The op-table entries of FocusedLinearAttention on the CUDA backend.
    public sealed partial class CudaBackend
    {
        internal override void FocusedLinearAttentionForward(Tensor q, Tensor k, Tensor v, Tensor o) => FocusedLinearAttentionCuda.Forward(this, q, k, v, o);

        internal override void FocusedLinearAttentionBackward(Tensor q, Tensor k, Tensor v, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv) =>
            FocusedLinearAttentionCuda.Backward(this, q, k, v, dO, dq, dk, dv);
    }
}

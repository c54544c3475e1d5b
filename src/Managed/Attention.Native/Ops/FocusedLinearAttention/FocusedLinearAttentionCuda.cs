using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>
    /// CUDA launcher of <see cref="FocusedLinearAttention"/> (cuda/focused_linear_attention.cu): per (b, h) statistics summed
    /// over the tokens (mean k and kᵀv over the Tk key tokens; in the backward Σ z q dOᵀ and Σ e q over the Tq query tokens)
    /// in two deterministic stages, partial sums over fixed chunks of tokens then the chunks in order, then one thread per
    /// output element.
    /// </summary>
    internal static class FocusedLinearAttentionCuda
    {
        private const int WarpsPerBlock = 8;

        /// <summary>Tokens per chunk of the token sums: at least this many, and at most <see cref="MaxChunks"/> chunks.</summary>
        private const int MinTokensPerChunk = 64;
        private const int MaxChunks = 64;

        private static readonly KernelNames TokenPartials = new("focused_linear_attention_token_partials");
        private static readonly KernelNames TokenCombine = new("focused_linear_attention_token_combine");
        private static readonly KernelNames ForwardKernel = new("focused_linear_attention_forward");
        private static readonly KernelNames BackwardQuery = new("focused_linear_attention_backward_query");
        private static readonly KernelNames BackwardKeyValue = new("focused_linear_attention_backward_key_value");

        public static KernelProgram Program { get; } = KernelProgram.ForStorageTypes(
            "focused_linear_attention.cu", TokenPartials.Template, TokenCombine.Template, ForwardKernel.Template, BackwardQuery.Template, BackwardKeyValue.Template);

        private readonly record struct Sizes(int Batch, int QuerySeq, int KeySeq, int Heads, int D, int Dv)
        {
            /// <summary>(query token, head) pairs: rows of o, dO, z and e.</summary>
            public long QueryTokens => (long)Batch * QuerySeq * Heads;

            /// <summary>(key token, head) pairs: rows of k and v.</summary>
            public long KeyTokens => (long)Batch * KeySeq * Heads;

            /// <summary>Elements of one statistics tensor [B·H, d, dv + 1].</summary>
            public long StatElements => (long)Batch * Heads * D * (Dv + 1);

            public long StatBytes => AlignUp(StatElements * sizeof(float));

            /// <summary>Tokens per chunk of a sum over <paramref name="seq"/> tokens (a function of that count alone, so results never depend on the device).</summary>
            public static int TokensPerChunk(int seq) => Math.Max(MinTokensPerChunk, (seq + MaxChunks - 1) / MaxChunks);

            public static int Chunks(int seq) => (seq + TokensPerChunk(seq) - 1) / TokensPerChunk(seq);

            /// <summary>Partials of a sum over <paramref name="seq"/> tokens.</summary>
            public long PartialBytes(int seq) => AlignUp(Chunks(seq) * StatElements * sizeof(float));
        }

        public static void Forward(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor o)
        {
            var n = SizesOf(q, v);
            // Tk ≥ 1 whenever Tq ≥ 1 (FocusedLinearAttention.Validate).
            if (n.QueryTokens == 0 || n.Dv == 0)
            {
                return;
            }
            // With d = 0 the kernel still writes o = 0 (no statistics to sum).
            var stats = Interop.CUdeviceptr.Null;
            if (n.D > 0)
            {
                var scratch = backend.Scratch(n.StatBytes + n.PartialBytes(n.KeySeq)).Pointer;
                stats = scratch;
                Sums(backend, q.DType, stats, scratch + n.StatBytes, k, v, Interop.CUdeviceptr.Null, Interop.CUdeviceptr.Null, n, n.KeySeq, 1f / n.KeySeq);
            }
            var args = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
            args.Add(Ptr(o));
            args.Add(Ptr(q));
            args.Add(stats);
            AddSizes(ref args, n);
            backend.Kernel(Program, ForwardKernel[q.DType]).Launch(Elementwise.Grid(backend, n.QueryTokens * n.Dv), Elementwise.Threads, 0, backend.Stream, args);
        }

        public static void Backward(CudaBackend backend, Tensor q, Tensor k, Tensor v, Tensor dO, Tensor? dq, Tensor? dk, Tensor? dv)
        {
            var n = SizesOf(q, v);
            // With no query token there is no gradient to add (and Tk ≥ 1 otherwise, FocusedLinearAttention.Validate).
            if (n.QueryTokens == 0 || n.D == 0 || n.Dv == 0 || (dq is null && dk is null && dv is null))
            {
                return;
            }
            // One scratch for the call: stats, grads, z, e, then the partials (reused by both token sums, in stream order:
            // sized for the longer of the key and the query sum).
            long weightBytes = AlignUp(n.QueryTokens * sizeof(float));
            long partialBytes = Math.Max(n.PartialBytes(n.KeySeq), n.PartialBytes(n.QuerySeq));
            var scratch = backend.Scratch((2 * n.StatBytes) + (2 * weightBytes) + partialBytes).Pointer;
            var stats = scratch;
            var grads = scratch + n.StatBytes;
            var z = scratch + (2 * n.StatBytes);
            var e = z + weightBytes;
            var partials = e + weightBytes;
            Sums(backend, q.DType, stats, partials, k, v, Interop.CUdeviceptr.Null, Interop.CUdeviceptr.Null, n, n.KeySeq, 1f / n.KeySeq);

            var query = new KernelArgs(stackalloc byte[128], stackalloc int[16]);
            query.Add(Ptr(dq));
            query.Add(z);
            query.Add(e);
            query.Add(Ptr(q));
            query.Add(Ptr(dO));
            query.Add(stats);
            AddSizes(ref query, n);
            backend.Kernel(Program, BackwardQuery[q.DType]).Launch(Dim3.CeilDiv(n.QueryTokens, WarpsPerBlock), WarpsPerBlock * 32, 0, backend.Stream, query);
            if (dk is null && dv is null)
            {
                return;
            }
            Sums(backend, q.DType, grads, partials, q, dO, z, e, n, n.QuerySeq, 1f);
            var keyValue = new KernelArgs(stackalloc byte[128], stackalloc int[12]);
            keyValue.Add(Ptr(dk));
            keyValue.Add(Ptr(dv));
            keyValue.Add(Ptr(k));
            keyValue.Add(Ptr(v));
            keyValue.Add(grads);
            AddSizes(ref keyValue, n);
            long elements = (dk is null ? 0 : n.KeyTokens * n.D) + (dv is null ? 0 : n.KeyTokens * n.Dv);
            backend.Kernel(Program, BackwardKeyValue[q.DType]).Launch(Elementwise.Grid(backend, elements), Elementwise.Threads, 0, backend.Stream, keyValue);
        }

        // output [B·H, d, dv + 1] = scale · Σ_t (w_t a_tᵀ b_t | w2_t a_t) over the seq tokens of a and b (Tk for k, v; Tq for
        // q, dO): partials per chunk of tokens, then the chunks in order.
        private static void Sums(CudaBackend backend, DType dtype, Interop.CUdeviceptr output, Interop.CUdeviceptr partials, Tensor a, Tensor b, Interop.CUdeviceptr w, Interop.CUdeviceptr w2, Sizes n, int seq, float scale)
        {
            int chunks = Sizes.Chunks(seq);
            var args = new KernelArgs(stackalloc byte[128], stackalloc int[16]);
            args.Add(partials);
            args.Add(Ptr(a));
            args.Add(Ptr(b));
            args.Add(w);
            args.Add(w2);
            args.Add(n.Batch);
            args.Add(seq);
            args.Add(n.Heads);
            args.Add(n.D);
            args.Add(n.Dv);
            args.Add(Sizes.TokensPerChunk(seq));
            args.Add(chunks);
            backend.Kernel(Program, TokenPartials[dtype]).Launch(Elementwise.Grid(backend, chunks * n.StatElements), Elementwise.Threads, 0, backend.Stream, args);

            var combine = new KernelArgs(stackalloc byte[64], stackalloc int[8]);
            combine.Add(output);
            combine.Add(partials);
            combine.Add(n.StatElements);
            combine.Add(chunks);
            combine.Add(scale);
            backend.Kernel(Program, TokenCombine[dtype]).Launch(Elementwise.Grid(backend, n.StatElements), Elementwise.Threads, 0, backend.Stream, combine);
        }

        // The sizes (batch, q_seq, k_seq, heads, d, dv) of the forward and backward kernels.
        private static void AddSizes(ref KernelArgs args, Sizes n)
        {
            args.Add(n.Batch);
            args.Add(n.QuerySeq);
            args.Add(n.KeySeq);
            args.Add(n.Heads);
            args.Add(n.D);
            args.Add(n.Dv);
        }

        private static Sizes SizesOf(Tensor q, Tensor v) => new(q.Shape[0], q.Shape[1], v.Shape[1], q.Shape[2], q.Shape[3], v.Shape[3]);

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

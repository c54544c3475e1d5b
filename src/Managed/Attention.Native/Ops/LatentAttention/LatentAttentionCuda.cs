using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>
    /// CUDA launcher of <see cref="LatentAttention"/> (cuda/latent_attention.cu): absorb W_kb into the queries, split-KV attention
    /// over the cached latent (the split count from <see cref="SoftmaxAttentionCuda.PlanSplits"/>), then combine and lift with W_vb.
    /// </summary>
    internal static class LatentAttentionCuda
    {
        /// <summary>Widest latent a block accumulates (cuda/include/split_kv.cuh SPLIT_MAX_WIDTH).</summary>
        public const int MaxLatent = 1024;

        private const int Threads = 256;

        private static readonly KernelNames Absorb = new("latent_attention_absorb");
        private static readonly KernelNames Split = new("latent_attention_decode_split");
        private static readonly KernelNames Combine = new("latent_attention_decode_combine");

        public static KernelProgram Program { get; } = KernelProgram.ForStorageTypes("latent_attention.cu", Absorb.Template, Split.Template, Combine.Template);

        public static void Decode(CudaBackend backend, Tensor q, Tensor cache, Tensor kvUp, Tensor o, int nopeDim, int length, double scale)
        {
            int batch = q.Shape[0], tq = q.Shape[1], heads = q.Shape[2], rope = q.Shape[3] - nopeDim, latent = kvUp.Shape[1], dv = o.Shape[3], capacity = cache.Shape[1];
            if (latent > MaxLatent)
            {
                throw new ArgumentException($"kvUp: expected a latent width ≤ {MaxLatent} on the CUDA backend, actual {latent}", nameof(kvUp));
            }
            long rows = (long)batch * tq * heads;
            if (rows == 0 || dv == 0)
            {
                return;
            }
            int width = latent + rope;
            var (splits, keysPerSplit) = SoftmaxAttentionCuda.PlanSplits(backend.Device.MultiprocessorCount, rows, length);
            long qBytes = AlignUp(rows * width * sizeof(float));
            long oBytes = AlignUp((long)splits * rows * latent * sizeof(float));
            var scratch = backend.Scratch(qBytes + oBytes + ((long)splits * rows * 2 * sizeof(float))).Pointer;
            var qhat = scratch;
            var partialO = scratch + qBytes;
            var partialMl = partialO + oBytes;

            var absorb = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
            absorb.Add(qhat);
            absorb.Add(Ptr(q));
            absorb.Add(Ptr(kvUp));
            absorb.Add(rows);
            absorb.Add(heads);
            absorb.Add(nopeDim);
            absorb.Add(rope);
            absorb.Add(latent);
            absorb.Add(dv);
            backend.Kernel(Program, Absorb[q.DType]).Launch(Elementwise.Grid(backend, rows * width), Elementwise.Threads, 0, backend.Stream, absorb);

            var split = new KernelArgs(stackalloc byte[128], stackalloc int[16]);
            split.Add(partialO);
            split.Add(partialMl);
            split.Add(qhat);
            split.Add(Ptr(cache));
            split.Add(tq);
            split.Add(heads);
            split.Add(latent);
            split.Add(rope);
            split.Add(capacity);
            split.Add(length);
            split.Add((float)scale);
            split.Add(keysPerSplit);
            Launch(backend, Split[q.DType], new Dim3((uint)splits, (uint)(batch * tq), (uint)heads), width * sizeof(float), split);

            var combine = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
            combine.Add(Ptr(o));
            combine.Add(partialO);
            combine.Add(partialMl);
            combine.Add(Ptr(kvUp));
            combine.Add(heads);
            combine.Add(nopeDim);
            combine.Add(latent);
            combine.Add(dv);
            combine.Add(splits);
            Launch(backend, Combine[q.DType], checked((uint)rows), latent * sizeof(float), combine);
        }

        internal static void Launch(CudaBackend backend, string name, Dim3 grid, int sharedBytes, in KernelArgs args)
        {
            var kernel = backend.Kernel(Program, name);
            if (sharedBytes > 48 * 1024)
            {
                kernel.SetMaxDynamicSharedMemory(sharedBytes);
            }
            kernel.Launch(grid, Threads, (uint)sharedBytes, backend.Stream, args);
        }

        internal static long AlignUp(long n) => (n + 255) / 256 * 256;
    }
}

namespace Attention.Native
{
    using Attention.Native.Ops;

    // The op-table entry of LatentAttention on the CUDA backend.
    public sealed partial class CudaBackend
    {
        internal override void LatentAttentionDecode(Tensor q, Tensor cache, Tensor kvUp, Tensor o, int nopeDim, int length, double scale) =>
            LatentAttentionCuda.Decode(this, q, cache, kvUp, o, nopeDim, length, scale);
    }
}

using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>
    /// CUDA launcher of <see cref="TpaDecode"/> (cuda/tpa_decode.cu): the query factors collapse to one vector per head, then
    /// split-KV attention scores and averages straight from the cached factors, and a combine pass merges the splits.
    /// </summary>
    internal static class TpaDecodeCuda
    {
        /// <summary>Widest head a block accumulates (cuda/include/split_kv.cuh SPLIT_MAX_WIDTH).</summary>
        public const int MaxWidth = 1024;

        private const int Threads = 256;

        private static readonly KernelNames Query = new("tpa_decode_query");
        private static readonly KernelNames Split = new("tpa_decode_split");
        private static readonly KernelNames Combine = new("tpa_decode_combine");

        public static KernelProgram Program { get; } = KernelProgram.ForStorageTypes("tpa_decode.cu", Query.Template, Split.Template, Combine.Template);

        public static void Forward(CudaBackend backend, Tensor aq, Tensor bq, Tensor ak, Tensor bk, Tensor av, Tensor bv, int length, Tensor o)
        {
            int batch = aq.Shape[0], tq = aq.Shape[1], heads = aq.Shape[2], queryRank = aq.Shape[3];
            int keyRank = ak.Shape[3], valueRank = av.Shape[3], width = bq.Shape[3], capacity = ak.Shape[1];
            if (width > MaxWidth)
            {
                throw new ArgumentException($"bq: expected a head width ≤ {MaxWidth} on the CUDA backend, actual {width}", nameof(bq));
            }
            long rows = (long)batch * tq * heads;
            if (rows == 0 || width == 0)
            {
                return;
            }
            var (splits, keysPerSplit) = SoftmaxAttentionCuda.PlanSplits(backend.Device.MultiprocessorCount, rows, length);
            long qBytes = LatentAttentionCuda.AlignUp(rows * width * sizeof(float));
            long oBytes = LatentAttentionCuda.AlignUp((long)splits * rows * width * sizeof(float));
            var scratch = backend.Scratch(qBytes + oBytes + ((long)splits * rows * 2 * sizeof(float))).Pointer;
            var qtilde = scratch;
            var partialO = scratch + qBytes;
            var partialMl = partialO + oBytes;

            var query = new KernelArgs(stackalloc byte[64], stackalloc int[8]);
            query.Add(qtilde);
            query.Add(Ptr(aq));
            query.Add(Ptr(bq));
            query.Add((long)batch * tq);
            query.Add(heads);
            query.Add(queryRank);
            query.Add(width);
            backend.Kernel(Program, Query[aq.DType]).Launch(Elementwise.Grid(backend, rows * width), Elementwise.Threads, 0, backend.Stream, query);

            double scale = 1.0 / (queryRank * keyRank * Math.Sqrt(width));
            var split = new KernelArgs(stackalloc byte[160], stackalloc int[20]);
            split.Add(partialO);
            split.Add(partialMl);
            split.Add(qtilde);
            split.Add(Ptr(ak));
            split.Add(Ptr(bk));
            split.Add(Ptr(av));
            split.Add(Ptr(bv));
            split.Add(tq);
            split.Add(heads);
            split.Add(keyRank);
            split.Add(valueRank);
            split.Add(width);
            split.Add(capacity);
            split.Add(length);
            split.Add((float)scale);
            split.Add(keysPerSplit);
            Launch(backend, Split[aq.DType], new Dim3((uint)splits, (uint)(batch * tq), (uint)heads), width * sizeof(float), split);

            var combine = new KernelArgs(stackalloc byte[64], stackalloc int[8]);
            combine.Add(Ptr(o));
            combine.Add(partialO);
            combine.Add(partialMl);
            combine.Add(width);
            combine.Add(valueRank);
            combine.Add(splits);
            Launch(backend, Combine[aq.DType], checked((uint)rows), width * sizeof(float), combine);
        }

        private static void Launch(CudaBackend backend, string name, Dim3 grid, int sharedBytes, in KernelArgs args) =>
            backend.Kernel(Program, name).Launch(grid, Threads, (uint)sharedBytes, backend.Stream, args);
    }
}

namespace Attention.Native
{
    using Attention.Native.Ops;

    // The op-table entry of TpaDecode on the CUDA backend.
    public sealed partial class CudaBackend
    {
        internal override void TpaDecodeForward(Tensor aq, Tensor bq, Tensor ak, Tensor bk, Tensor av, Tensor bv, int length, Tensor o) =>
            TpaDecodeCuda.Forward(this, aq, bq, ak, bk, av, bv, length, o);
    }
}

using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>CUDA launcher of <see cref="Columns"/> (cuda/columns.cu): one thread per element copied; the backward sums repeats in order.</summary>
    internal static class ColumnsCuda
    {
        private static readonly KernelNames CopyKernel = new("columns_copy");
        private static readonly KernelNames GatherKernel = new("columns_gather");

        public static KernelProgram Program { get; } = KernelProgram.ForStorageTypes("columns.cu", CopyKernel.Template, GatherKernel.Template);

        public static void Copy(CudaBackend backend, Tensor src, int srcOffset, Tensor dst, int dstOffset, int width, int repeat, bool accumulate)
        {
            int srcWidth = src.Shape[-1];
            long rows = srcWidth == 0 ? 0 : src.Shape.ElementCount / srcWidth;
            long n = rows * repeat * width;
            if (n == 0)
            {
                return;
            }
            var args = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
            args.Add(Ptr(dst));
            args.Add(Ptr(src));
            args.Add(rows);
            args.Add(srcWidth);
            args.Add(srcOffset);
            args.Add(dst.Shape[-1]);
            args.Add(dstOffset);
            args.Add(width);
            args.Add(repeat);
            args.Add(accumulate ? 1 : 0);
            backend.Kernel(Program, CopyKernel[src.DType]).Launch(Elementwise.Grid(backend, n), Elementwise.Threads, 0, backend.Stream, args);
        }

        public static void Gather(CudaBackend backend, Tensor ddst, int dstOffset, Tensor dsrc, int srcOffset, int width, int repeat)
        {
            int srcWidth = dsrc.Shape[-1];
            long rows = srcWidth == 0 ? 0 : dsrc.Shape.ElementCount / srcWidth;
            long n = rows * width;
            if (n == 0)
            {
                return;
            }
            var args = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
            args.Add(Ptr(dsrc));
            args.Add(Ptr(ddst));
            args.Add(rows);
            args.Add(srcWidth);
            args.Add(srcOffset);
            args.Add(ddst.Shape[-1]);
            args.Add(dstOffset);
            args.Add(width);
            args.Add(repeat);
            backend.Kernel(Program, GatherKernel[ddst.DType]).Launch(Elementwise.Grid(backend, n), Elementwise.Threads, 0, backend.Stream, args);
        }
    }
}

namespace Attention.Native
{
    using Attention.Native.Ops;

    // The op-table entries of Columns on the CUDA backend.
    public sealed partial class CudaBackend
    {
        internal override void ColumnsCopy(Tensor src, int srcOffset, Tensor dst, int dstOffset, int width, int repeat, bool accumulate) =>
            ColumnsCuda.Copy(this, src, srcOffset, dst, dstOffset, width, repeat, accumulate);

        internal override void ColumnsGather(Tensor ddst, int dstOffset, Tensor dsrc, int srcOffset, int width, int repeat) =>
            ColumnsCuda.Gather(this, ddst, dstOffset, dsrc, srcOffset, width, repeat);
    }
}

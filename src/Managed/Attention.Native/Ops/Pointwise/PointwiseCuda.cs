using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>CUDA launcher of <see cref="Pointwise"/> (cuda/pointwise.cu): grid-stride elementwise kernels; the broadcast add's db by column sums.</summary>
    internal static class PointwiseCuda
    {
        private static readonly KernelNames ForwardKernel = new("pointwise_forward");
        private static readonly KernelNames BackwardKernel = new("pointwise_backward");
        private static readonly KernelNames AddPartials = new("pointwise_add_db_partials");
        private static readonly KernelNames AddFinalize = new("pointwise_add_db_finalize");

        public static KernelProgram Program { get; } = KernelProgram.ForStorageTypes(
            "pointwise.cu", ForwardKernel.Template, BackwardKernel.Template, AddPartials.Template, AddFinalize.Template);

        public static void Forward(CudaBackend backend, PointwiseOp op, Tensor a, Tensor? b, Tensor y, double alpha)
        {
            long n = a.Shape.ElementCount;
            if (n == 0)
            {
                return;
            }
            var args = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
            args.Add(Ptr(y));
            args.Add(Ptr(a));
            args.Add(Ptr(b));
            args.Add(n);
            args.Add(b is null ? 1L : Math.Max(1L, b.Shape.ElementCount));
            args.Add((int)op);
            args.Add((float)alpha);
            backend.Kernel(Program, ForwardKernel[a.DType]).Launch(Elementwise.Grid(backend, n), Elementwise.Threads, 0, backend.Stream, args);
        }

        public static void Backward(CudaBackend backend, PointwiseOp op, Tensor a, Tensor? b, Tensor dy, Tensor? da, Tensor? db, double alpha)
        {
            long n = a.Shape.ElementCount;
            if (n == 0 || (da is null && db is null))
            {
                return;
            }
            if (da is not null || (op == PointwiseOp.Multiply && db is not null))
            {
                var args = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
                args.Add(Ptr(da));
                args.Add(op == PointwiseOp.Multiply ? Ptr(db) : Interop.CUdeviceptr.Null);
                args.Add(Ptr(a));
                args.Add(Ptr(b));
                args.Add(Ptr(dy));
                args.Add(n);
                args.Add((int)op);
                args.Add((float)alpha);
                backend.Kernel(Program, BackwardKernel[a.DType]).Launch(Elementwise.Grid(backend, n), Elementwise.Threads, 0, backend.Stream, args);
            }
            if (op == PointwiseOp.Add && db is not null)
            {
                int period = checked((int)db.Shape.ElementCount);
                long repeats = n / period;
                ColumnSum.Sum(backend, backend.Kernel(Program, AddPartials[a.DType]), backend.Kernel(Program, AddFinalize[a.DType]), Ptr(db), Ptr(dy), repeats, period);
            }
        }
    }
}

namespace Attention.Native
{
    using Attention.Native.Ops;

    // The op-table entries of Pointwise on the CUDA backend.
    public sealed partial class CudaBackend
    {
        internal override void PointwiseForward(PointwiseOp op, Tensor a, Tensor? b, Tensor y, double alpha) => PointwiseCuda.Forward(this, op, a, b, y, alpha);

        internal override void PointwiseBackward(PointwiseOp op, Tensor a, Tensor? b, Tensor dy, Tensor? da, Tensor? db, double alpha) =>
            PointwiseCuda.Backward(this, op, a, b, dy, da, db, alpha);
    }
}

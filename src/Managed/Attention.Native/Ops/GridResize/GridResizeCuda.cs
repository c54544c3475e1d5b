using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>CUDA launcher of <see cref="GridResize"/> (cuda/grid_resize.cu): one thread per output (forward) or input (backward) element.</summary>
    internal static class GridResizeCuda
    {
        private static readonly KernelNames ForwardKernel = new("grid_resize_forward");
        private static readonly KernelNames BackwardKernel = new("grid_resize_backward");

        public static KernelProgram Program { get; } = KernelProgram.ForStorageTypes("grid_resize.cu", ForwardKernel.Template, BackwardKernel.Template);

        public static void Forward(CudaBackend backend, Tensor x, int inHeight, int inWidth, Tensor y, int outHeight, int outWidth) =>
            Launch(backend, ForwardKernel[x.DType], y, x, x.Shape, inHeight, inWidth, outHeight, outWidth, y.Shape.ElementCount);

        public static void Backward(CudaBackend backend, Tensor dy, int outHeight, int outWidth, Tensor dx, int inHeight, int inWidth) =>
            Launch(backend, BackwardKernel[dy.DType], dx, dy, dx.Shape, inHeight, inWidth, outHeight, outWidth, dx.Shape.ElementCount);

        private static void Launch(CudaBackend backend, string kernel, Tensor output, Tensor input, Shape full, int inHeight, int inWidth, int outHeight, int outWidth, long n)
        {
            if (n == 0)
            {
                return;
            }
            var args = new KernelArgs(stackalloc byte[64], stackalloc int[8]);
            args.Add(Ptr(output));
            args.Add(Ptr(input));
            args.Add(full[0]);
            args.Add(inHeight);
            args.Add(inWidth);
            args.Add(outHeight);
            args.Add(outWidth);
            args.Add(full[2]);
            backend.Kernel(Program, kernel).Launch(Elementwise.Grid(backend, n), Elementwise.Threads, 0, backend.Stream, args);
        }
    }
}

namespace Attention.Native
{
    using Attention.Native.Ops;

    // The op-table entries of GridResize on the CUDA backend.
    public sealed partial class CudaBackend
    {
        internal override void GridResizeForward(Tensor x, int inHeight, int inWidth, Tensor y, int outHeight, int outWidth) =>
            GridResizeCuda.Forward(this, x, inHeight, inWidth, y, outHeight, outWidth);

        internal override void GridResizeBackward(Tensor dy, int outHeight, int outWidth, Tensor dx, int inHeight, int inWidth) =>
            GridResizeCuda.Backward(this, dy, outHeight, outWidth, dx, inHeight, inWidth);
    }
}

using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>CUDA launcher of <see cref="AdaptivePool"/> (cuda/adaptive_pool.cu): one thread per output (forward) or input (backward) element.</summary>
    internal static class AdaptivePoolCuda
    {
        private static readonly KernelNames ForwardKernel = new("adaptive_pool_forward");
        private static readonly KernelNames BackwardKernel = new("adaptive_pool_backward");

        public static KernelProgram Program { get; } = KernelProgram.ForStorageTypes("adaptive_pool.cu", ForwardKernel.Template, BackwardKernel.Template);

        public static void Forward(CudaBackend backend, Tensor x, Tensor y) =>
            Launch(backend, ForwardKernel[x.DType], y, x, x.Shape, y.Shape[1], y.Shape.ElementCount);

        public static void Backward(CudaBackend backend, Tensor dy, Tensor dx) =>
            Launch(backend, BackwardKernel[dy.DType], dx, dy, dx.Shape, dy.Shape[1], dx.Shape.ElementCount);

        private static void Launch(CudaBackend backend, string kernel, Tensor output, Tensor input, Shape full, int outputs, long n)
        {
            if (n == 0 || outputs == 0 || full[1] == 0)
            {
                return;
            }
            var args = new KernelArgs(stackalloc byte[64], stackalloc int[8]);
            args.Add(Ptr(output));
            args.Add(Ptr(input));
            args.Add(full[0]);
            args.Add(full[1]);
            args.Add(outputs);
            args.Add(full[2]);
            backend.Kernel(Program, kernel).Launch(Elementwise.Grid(backend, n), Elementwise.Threads, 0, backend.Stream, args);
        }
    }
}

namespace Attention.Native
{
    using Attention.Native.Ops;

    // The op-table entries of AdaptivePool on the CUDA backend.
    public sealed partial class CudaBackend
    {
        internal override void AdaptivePoolForward(Tensor x, Tensor y) => AdaptivePoolCuda.Forward(this, x, y);

        internal override void AdaptivePoolBackward(Tensor dy, Tensor dx) => AdaptivePoolCuda.Backward(this, dy, dx);
    }
}

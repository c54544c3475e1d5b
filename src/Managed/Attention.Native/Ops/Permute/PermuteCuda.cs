using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>CUDA launcher of <see cref="Permute"/> (cuda/permute.cu): one thread per element written, the axes in six fixed argument slots.</summary>
    internal static class PermuteCuda
    {
        private static readonly KernelNames ForwardKernel = new("permute_forward");
        private static readonly KernelNames BackwardKernel = new("permute_backward");

        public static KernelProgram Program { get; } = KernelProgram.ForStorageTypes("permute.cu", ForwardKernel.Template, BackwardKernel.Template);

        public static void Forward(CudaBackend backend, Tensor x, ReadOnlySpan<int> permutation, Tensor y) =>
            Launch(backend, ForwardKernel[x.DType], y, x, PermutePlan.Forward(x.Shape, permutation));

        public static void Backward(CudaBackend backend, Tensor dy, ReadOnlySpan<int> permutation, Tensor dx) =>
            Launch(backend, BackwardKernel[dy.DType], dx, dy, PermutePlan.Backward(dx.Shape, permutation));

        private static void Launch(CudaBackend backend, string kernel, Tensor output, Tensor input, PermutePlan plan)
        {
            long n = plan.Count;
            if (n == 0)
            {
                return;
            }
            var args = new KernelArgs(stackalloc byte[128], stackalloc int[16]);
            args.Add(Ptr(output));
            args.Add(Ptr(input));
            args.Add(n);
            foreach (int d in plan.Dims)
            {
                args.Add(d);
            }
            foreach (long s in plan.Strides)
            {
                args.Add(s);
            }
            backend.Kernel(Program, kernel).Launch(Elementwise.Grid(backend, n), Elementwise.Threads, 0, backend.Stream, args);
        }
    }
}

namespace Attention.Native
{
    using Attention.Native.Ops;

    // The op-table entries of Permute on the CUDA backend.
    public sealed partial class CudaBackend
    {
        internal override void PermuteForward(Tensor x, ReadOnlySpan<int> permutation, Tensor y) => PermuteCuda.Forward(this, x, permutation, y);

        internal override void PermuteBackward(Tensor dy, ReadOnlySpan<int> permutation, Tensor dx) => PermuteCuda.Backward(this, dy, permutation, dx);
    }
}

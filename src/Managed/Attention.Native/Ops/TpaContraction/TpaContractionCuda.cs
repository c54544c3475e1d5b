using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>CUDA launcher of <see cref="TpaContraction"/> (cuda/tpa_contraction.cu): one thread per output element; da one warp per coefficient.</summary>
    internal static class TpaContractionCuda
    {
        private const int WarpsPerBlock = 8;

        private static readonly KernelNames ForwardKernel = new("tpa_contraction_forward");
        private static readonly KernelNames BackwardA = new("tpa_contraction_backward_a");
        private static readonly KernelNames BackwardF = new("tpa_contraction_backward_f");

        public static KernelProgram Program { get; } = KernelProgram.ForStorageTypes("tpa_contraction.cu", ForwardKernel.Template, BackwardA.Template, BackwardF.Template);

        public static void Forward(CudaBackend backend, Tensor a, Tensor f, Tensor y)
        {
            long n = y.Shape.ElementCount;
            if (n == 0)
            {
                return;
            }
            var args = Args(stackalloc byte[96], stackalloc int[12], y, a, f, a.Shape, f.Shape[3]);
            backend.Kernel(Program, ForwardKernel[a.DType]).Launch(Elementwise.Grid(backend, n), Elementwise.Threads, 0, backend.Stream, args);
        }

        public static void Backward(CudaBackend backend, Tensor a, Tensor f, Tensor dy, Tensor? da, Tensor? df)
        {
            var s = a.Shape;
            int width = f.Shape[3];
            if (da is not null && s.ElementCount > 0)
            {
                var args = Args(stackalloc byte[96], stackalloc int[12], da, f, dy, s, width);
                backend.Kernel(Program, BackwardA[a.DType]).Launch(Dim3.CeilDiv(s.ElementCount, WarpsPerBlock), WarpsPerBlock * 32, 0, backend.Stream, args);
            }
            if (df is not null && f.Shape.ElementCount > 0)
            {
                var args = Args(stackalloc byte[96], stackalloc int[12], df, a, dy, s, width);
                backend.Kernel(Program, BackwardF[a.DType]).Launch(Elementwise.Grid(backend, f.Shape.ElementCount), Elementwise.Threads, 0, backend.Stream, args);
            }
        }

        private static KernelArgs Args(Span<byte> storage, Span<int> offsets, Tensor output, Tensor first, Tensor second, Shape a, int width)
        {
            var args = new KernelArgs(storage, offsets);
            args.Add(Ptr(output));
            args.Add(Ptr(first));
            args.Add(Ptr(second));
            args.Add((long)a[0] * a[1]);
            args.Add(a[2]);
            args.Add(a[3]);
            args.Add(width);
            return args;
        }
    }
}

namespace Attention.Native
{
    using Attention.Native.Ops;

    // The op-table entries of TpaContraction on the CUDA backend.
    public sealed partial class CudaBackend
    {
        internal override void TpaContractionForward(Tensor a, Tensor f, Tensor y) => TpaContractionCuda.Forward(this, a, f, y);

        internal override void TpaContractionBackward(Tensor a, Tensor f, Tensor dy, Tensor? da, Tensor? df) => TpaContractionCuda.Backward(this, a, f, dy, da, df);
    }
}

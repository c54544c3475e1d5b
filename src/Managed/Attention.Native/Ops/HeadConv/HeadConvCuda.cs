using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>
    /// CUDA launcher of <see cref="HeadConv"/> (cuda/head_conv.cu): one thread per element; weight and bias gradients as
    /// deterministic column sums over the N = B·T items.
    /// </summary>
    internal static class HeadConvCuda
    {
        private static readonly KernelNames ForwardKernel = new("head_conv_forward");
        private static readonly KernelNames BackwardKernel = new("head_conv_backward");
        private static readonly KernelNames ParamsPartials = new("head_conv_params_backward_partials");
        private static readonly KernelNames ParamsFinalize = new("head_conv_params_backward_finalize");

        public static KernelProgram Program { get; } = KernelProgram.ForStorageTypes(
            "head_conv.cu", ForwardKernel.Template, BackwardKernel.Template, ParamsPartials.Template, ParamsFinalize.Template);

        public static void Forward(CudaBackend backend, Tensor x, Tensor weight, Tensor? bias, Tensor y)
        {
            var s = x.Shape;
            long n = y.Shape.ElementCount;
            if (n == 0)
            {
                return;
            }
            var args = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
            args.Add(Ptr(y));
            args.Add(Ptr(x));
            args.Add(Ptr(weight));
            args.Add(Ptr(bias));
            args.Add((long)s[0]);
            args.Add(s[1]);
            args.Add(weight.Shape[0]);
            args.Add(s[2]);
            args.Add(weight.Shape[2]);
            backend.Kernel(Program, ForwardKernel[x.DType]).Launch(Elementwise.Grid(backend, n), Elementwise.Threads, 0, backend.Stream, args);
        }

        public static void Backward(CudaBackend backend, Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dweight, Tensor? dbias)
        {
            var s = x.Shape;
            long count = s[0];
            int inChannels = s[1], length = s[2], outChannels = weight.Shape[0], kernel = weight.Shape[2];
            if (dx is not null && s.ElementCount > 0)
            {
                var args = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
                args.Add(Ptr(dx));
                args.Add(Ptr(weight));
                args.Add(Ptr(dy));
                args.Add(count);
                args.Add(inChannels);
                args.Add(outChannels);
                args.Add(length);
                args.Add(kernel);
                backend.Kernel(Program, BackwardKernel[x.DType]).Launch(Elementwise.Grid(backend, s.ElementCount), Elementwise.Threads, 0, backend.Stream, args);
            }
            if ((dweight is null && dbias is null) || count == 0)
            {
                return;
            }
            int weights = outChannels * inChannels * kernel, columns = weights + outChannels;
            var (chunks, rowsPerChunk) = ColumnSum.Plan(backend.Device.MultiprocessorCount, count, columns);
            var scratch = backend.Scratch((long)chunks * columns * sizeof(float));
            var partials = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
            partials.Add(scratch.Pointer);
            partials.Add(Ptr(x));
            partials.Add(Ptr(dy));
            partials.Add(count);
            partials.Add(inChannels);
            partials.Add(outChannels);
            partials.Add(length);
            partials.Add(kernel);
            partials.Add(rowsPerChunk);
            backend.Kernel(Program, ParamsPartials[x.DType]).Launch(
                new Dim3(Dim3.CeilDiv(columns, ColumnSum.TileX), (uint)chunks), new Dim3(ColumnSum.TileX, ColumnSum.TileY), 0, backend.Stream, partials);
            var finalize = backend.Kernel(Program, ParamsFinalize[x.DType]);
            Span<byte> storage = stackalloc byte[64];
            Span<int> offsets = stackalloc int[8];
            foreach (var (target, offset, n) in new[] { (dweight, 0, weights), (dbias, weights, outChannels) })
            {
                if (target is null)
                {
                    continue;
                }
                var args = new KernelArgs(storage, offsets);
                args.Add(Ptr(target));
                args.Add(scratch.Pointer);
                args.Add(chunks);
                args.Add(columns);
                args.Add(offset);
                args.Add(n);
                finalize.Launch(Dim3.CeilDiv(n, ColumnSum.FinalizeBlock), ColumnSum.FinalizeBlock, 0, backend.Stream, args);
            }
        }
    }
}

namespace Attention.Native
{
    using Attention.Native.Ops;

    // The op-table entries of HeadConv on the CUDA backend.
    public sealed partial class CudaBackend
    {
        internal override void HeadConvForward(Tensor x, Tensor weight, Tensor? bias, Tensor y) => HeadConvCuda.Forward(this, x, weight, bias, y);

        internal override void HeadConvBackward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dweight, Tensor? dbias) =>
            HeadConvCuda.Backward(this, x, weight, dy, dx, dweight, dbias);
    }
}

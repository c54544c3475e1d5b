using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>
    /// CUDA launcher of <see cref="DepthwiseConv"/> (cuda/depthwise_conv.cu), both forms as a token grid
    /// (<see cref="DepthwiseGrid"/>): one thread per element; the weight and bias gradients as deterministic column sums
    /// over the tokens, then over the channels sharing a filter.
    /// </summary>
    internal static class DepthwiseConvCuda
    {
        private static readonly KernelNames ForwardKernel = new("depthwise_conv_forward");
        private static readonly KernelNames BackwardKernel = new("depthwise_conv_backward");
        private static readonly KernelNames ParamsPartials = new("depthwise_conv_params_backward_partials");
        private static readonly KernelNames ParamsFinalize = new("depthwise_conv_params_backward_finalize");

        public static KernelProgram Program { get; } = KernelProgram.ForStorageTypes(
            "depthwise_conv.cu", ForwardKernel.Template, BackwardKernel.Template, ParamsPartials.Template, ParamsFinalize.Template);

        public static void Forward(CudaBackend backend, Tensor x, Tensor weight, Tensor? bias, Tensor y)
        {
            var g = DepthwiseConv.Grid(x, weight);
            if (g.Tokens * g.Channels == 0)
            {
                return;
            }
            var args = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
            args.Add(Ptr(y));
            args.Add(Ptr(x));
            args.Add(Ptr(weight));
            args.Add(Ptr(bias));
            AddGrid(ref args, g);
            args.Add(g.Filters);
            args.Add(g.KernelH);
            args.Add(g.KernelW);
            backend.Kernel(Program, ForwardKernel[x.DType]).Launch(Elementwise.Grid(backend, g.Tokens * g.Channels), Elementwise.Threads, 0, backend.Stream, args);
        }

        public static void Backward(CudaBackend backend, Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dweight, Tensor? dbias)
        {
            var g = DepthwiseConv.Grid(x, weight);
            long n = g.Tokens * g.Channels;
            if (dx is not null && n > 0)
            {
                var args = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
                args.Add(Ptr(dx));
                args.Add(Ptr(weight));
                args.Add(Ptr(dy));
                AddGrid(ref args, g);
                args.Add(g.Filters);
                args.Add(g.KernelH);
                args.Add(g.KernelW);
                backend.Kernel(Program, BackwardKernel[x.DType]).Launch(Elementwise.Grid(backend, n), Elementwise.Threads, 0, backend.Stream, args);
            }
            if ((dweight is null && dbias is null) || n == 0)
            {
                return;
            }
            int columns = (g.Taps + 1) * g.Channels;
            var (chunks, rowsPerChunk) = ColumnSum.Plan(backend.Device.MultiprocessorCount, g.Tokens, columns);
            var scratch = backend.Scratch((long)chunks * columns * sizeof(float));
            var partials = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
            partials.Add(scratch.Pointer);
            partials.Add(Ptr(x));
            partials.Add(Ptr(dy));
            AddGrid(ref partials, g);
            partials.Add(g.KernelH);
            partials.Add(g.KernelW);
            partials.Add(rowsPerChunk);
            backend.Kernel(Program, ParamsPartials[x.DType]).Launch(
                new Dim3(Dim3.CeilDiv(columns, ColumnSum.TileX), (uint)chunks), new Dim3(ColumnSum.TileX, ColumnSum.TileY), 0, backend.Stream, partials);
            var finalize = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
            finalize.Add(Ptr(dweight));
            finalize.Add(Ptr(dbias));
            finalize.Add(scratch.Pointer);
            finalize.Add(chunks);
            finalize.Add(g.Channels);
            finalize.Add(g.Filters);
            finalize.Add(g.Taps);
            backend.Kernel(Program, ParamsFinalize[x.DType]).Launch(Dim3.CeilDiv(g.Filters * (g.Taps + 1), 128), 128, 0, backend.Stream, finalize);
        }

        // rows (the tokens B·H·W), height, width, channels: the kernels' shared leading shape arguments.
        private static void AddGrid(ref KernelArgs args, DepthwiseGrid g)
        {
            args.Add(g.Tokens);
            args.Add(g.Height);
            args.Add(g.Width);
            args.Add(g.Channels);
        }
    }
}

namespace Attention.Native
{
    using Attention.Native.Ops;

    // The op-table entries of DepthwiseConv on the CUDA backend.
    public sealed partial class CudaBackend
    {
        internal override void DepthwiseConvForward(Tensor x, Tensor weight, Tensor? bias, Tensor y) => DepthwiseConvCuda.Forward(this, x, weight, bias, y);

        internal override void DepthwiseConvBackward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dweight, Tensor? dbias) =>
            DepthwiseConvCuda.Backward(this, x, weight, dy, dx, dweight, dbias);
    }
}

using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>
    /// CUDA launcher of <see cref="DepthwiseConv"/> (cuda/depthwise_conv.cu): one thread per element; the weight and bias
    /// gradients as deterministic column sums over the tokens, then over the channels sharing a filter.
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
            var s = x.Shape;
            long rows = (long)s[0] * s[1], n = s.ElementCount;
            if (n == 0)
            {
                return;
            }
            var args = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
            args.Add(Ptr(y));
            args.Add(Ptr(x));
            args.Add(Ptr(weight));
            args.Add(Ptr(bias));
            args.Add(rows);
            args.Add(s[1]);
            args.Add(s[2]);
            args.Add(weight.Shape[0]);
            args.Add(weight.Shape[2]);
            backend.Kernel(Program, ForwardKernel[x.DType]).Launch(Elementwise.Grid(backend, n), Elementwise.Threads, 0, backend.Stream, args);
        }

        public static void Backward(CudaBackend backend, Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dweight, Tensor? dbias)
        {
            var s = x.Shape;
            long rows = (long)s[0] * s[1], n = s.ElementCount;
            int channels = s[2], filters = weight.Shape[0], kernel = weight.Shape[2];
            if (dx is not null && n > 0)
            {
                var args = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
                args.Add(Ptr(dx));
                args.Add(Ptr(weight));
                args.Add(Ptr(dy));
                args.Add(rows);
                args.Add(s[1]);
                args.Add(channels);
                args.Add(filters);
                args.Add(kernel);
                backend.Kernel(Program, BackwardKernel[x.DType]).Launch(Elementwise.Grid(backend, n), Elementwise.Threads, 0, backend.Stream, args);
            }
            if ((dweight is null && dbias is null) || rows == 0 || channels == 0)
            {
                return;
            }
            int columns = (kernel + 1) * channels;
            var (chunks, rowsPerChunk) = ColumnSum.Plan(backend.Device.MultiprocessorCount, rows, columns);
            var scratch = backend.Scratch((long)chunks * columns * sizeof(float));
            var partials = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
            partials.Add(scratch.Pointer);
            partials.Add(Ptr(x));
            partials.Add(Ptr(dy));
            partials.Add(rows);
            partials.Add(s[1]);
            partials.Add(channels);
            partials.Add(kernel);
            partials.Add(rowsPerChunk);
            backend.Kernel(Program, ParamsPartials[x.DType]).Launch(
                new Dim3(Dim3.CeilDiv(columns, ColumnSum.TileX), (uint)chunks), new Dim3(ColumnSum.TileX, ColumnSum.TileY), 0, backend.Stream, partials);
            var finalize = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
            finalize.Add(Ptr(dweight));
            finalize.Add(Ptr(dbias));
            finalize.Add(scratch.Pointer);
            finalize.Add(chunks);
            finalize.Add(channels);
            finalize.Add(filters);
            finalize.Add(kernel);
            backend.Kernel(Program, ParamsFinalize[x.DType]).Launch(Dim3.CeilDiv(filters * (kernel + 1), 128), 128, 0, backend.Stream, finalize);
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

using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>
    /// CUDA launcher of <see cref="FocusingMap"/> (cuda/focusing_map.cu): one warp per row; the backward keeps each row's
    /// statistics so the dscale column sums (deterministic partials) recompute du from them.
    /// </summary>
    internal static class FocusingMapCuda
    {
        private const int WarpsPerBlock = 8;

        private static readonly KernelNames ForwardKernel = new("focusing_map_forward");
        private static readonly KernelNames BackwardKernel = new("focusing_map_backward");
        private static readonly KernelNames ScalePartials = new("focusing_map_scale_backward_partials");
        private static readonly KernelNames ScaleFinalize = new("focusing_map_scale_backward_finalize");

        public static KernelProgram Program { get; } = KernelProgram.ForStorageTypes(
            "focusing_map.cu", ForwardKernel.Template, BackwardKernel.Template, ScalePartials.Template, ScaleFinalize.Template);

        public static void Forward(CudaBackend backend, Tensor x, Tensor scale, double focusingFactor, Tensor y)
        {
            long rows = x.Shape.Rows;
            int channels = x.Shape[-1];
            if (rows == 0 || channels == 0)
            {
                return;
            }
            var args = new KernelArgs(stackalloc byte[64], stackalloc int[8]);
            args.Add(Ptr(y));
            args.Add(Ptr(x));
            args.Add(Ptr(scale));
            args.Add(rows);
            args.Add(channels);
            args.Add((float)focusingFactor);
            backend.Kernel(Program, ForwardKernel[x.DType]).Launch(Dim3.CeilDiv(rows, WarpsPerBlock), WarpsPerBlock * 32, 0, backend.Stream, args);
        }

        public static void Backward(CudaBackend backend, Tensor x, Tensor scale, double focusingFactor, Tensor dy, Tensor? dx, Tensor? dscale)
        {
            long rows = x.Shape.Rows;
            int channels = x.Shape[-1];
            if (channels == 0 || (dx is null && dscale is null))
            {
                return;
            }
            var (chunks, rowsPerChunk) = ColumnSum.Plan(backend.Device.MultiprocessorCount, rows, channels);
            long statsBytes = dscale is null ? 0 : (rows * 4 * sizeof(float) + 255) / 256 * 256;
            long partialBytes = dscale is null ? 0 : (long)chunks * channels * sizeof(float);
            var scratch = dscale is null ? null : backend.Scratch(statsBytes + partialBytes);
            var stats = scratch?.Pointer ?? Interop.CUdeviceptr.Null;
            if (rows > 0)
            {
                var args = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
                args.Add(Ptr(dx));
                args.Add(stats);
                args.Add(Ptr(x));
                args.Add(Ptr(scale));
                args.Add(Ptr(dy));
                args.Add(rows);
                args.Add(channels);
                args.Add((float)focusingFactor);
                backend.Kernel(Program, BackwardKernel[x.DType]).Launch(Dim3.CeilDiv(rows, WarpsPerBlock), WarpsPerBlock * 32, 0, backend.Stream, args);
            }
            if (dscale is null)
            {
                return;
            }
            var partials = scratch!.Pointer + statsBytes;
            if (rows > 0)
            {
                var args = new KernelArgs(stackalloc byte[128], stackalloc int[12]);
                args.Add(partials);
                args.Add(Ptr(x));
                args.Add(Ptr(scale));
                args.Add(Ptr(dy));
                args.Add(stats);
                args.Add(rows);
                args.Add(channels);
                args.Add((float)focusingFactor);
                args.Add(rowsPerChunk);
                backend.Kernel(Program, ScalePartials[x.DType]).Launch(
                    new Dim3(Dim3.CeilDiv(channels, ColumnSum.TileX), (uint)chunks), new Dim3(ColumnSum.TileX, ColumnSum.TileY), 0, backend.Stream, args);
            }
            else
            {
                scratch.Slice(statsBytes, partialBytes).Zero(backend.Stream);
            }
            var finalize = new KernelArgs(stackalloc byte[64], stackalloc int[8]);
            finalize.Add(Ptr(dscale));
            finalize.Add(partials);
            finalize.Add(Ptr(scale));
            finalize.Add(chunks);
            finalize.Add(channels);
            backend.Kernel(Program, ScaleFinalize[x.DType]).Launch(Dim3.CeilDiv(channels, ColumnSum.FinalizeBlock), ColumnSum.FinalizeBlock, 0, backend.Stream, finalize);
        }
    }
}

namespace Attention.Native
{
    using Attention.Native.Ops;

    // The op-table entries of FocusingMap on the CUDA backend.
    public sealed partial class CudaBackend
    {
        internal override void FocusingMapForward(Tensor x, Tensor scale, double focusingFactor, Tensor y) =>
            FocusingMapCuda.Forward(this, x, scale, focusingFactor, y);

        internal override void FocusingMapBackward(Tensor x, Tensor scale, double focusingFactor, Tensor dy, Tensor? dx, Tensor? dscale) =>
            FocusingMapCuda.Backward(this, x, scale, focusingFactor, dy, dx, dscale);
    }
}

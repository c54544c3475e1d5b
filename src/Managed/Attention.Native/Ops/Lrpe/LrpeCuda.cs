using Attention.Native.Interop;
using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops
{
    /// <summary>
    /// CUDA launcher of <see cref="Lrpe"/> (cuda/lrpe.cu): one thread per element; dθ by deterministic column sums over the tokens. A
    /// ragged batch's per-token positions go to the device in stream order (<see cref="CudaBackend.UploadLaunchIndices"/>).
    /// </summary>
    internal static class LrpeCuda
    {
        private static readonly KernelNames ForwardKernel = new("lrpe_forward");
        private static readonly KernelNames BackwardKernel = new("lrpe_backward");
        private static readonly KernelNames ThetaPartials = new("lrpe_theta_backward_partials");
        private static readonly KernelNames ThetaFinalize = new("lrpe_theta_backward_finalize");

        public static KernelProgram Program { get; } = KernelProgram.ForStorageTypes(
            "lrpe.cu", ForwardKernel.Template, BackwardKernel.Template, ThetaPartials.Template, ThetaFinalize.Template);

        public static void Forward(CudaBackend backend, Tensor x, Tensor theta, Tensor y, TokenPositions positions)
        {
            var s = x.Shape;
            long rows = (long)s[0] * s[1], n = x.Shape.ElementCount;
            if (n == 0)
            {
                return;
            }
            var args = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
            args.Add(Ptr(y));
            args.Add(Ptr(x));
            args.Add(Ptr(theta));
            args.Add(rows);
            args.Add(s[1]);
            args.Add(s[2]);
            args.Add(s[3]);
            args.Add(positions.Offset);
            args.Add(backend.PositionsOnDevice(positions)); // a ragged batch: each row's own position
            backend.Kernel(Program, ForwardKernel[x.DType]).Launch(Elementwise.Grid(backend, n), Elementwise.Threads, 0, backend.Stream, args);
        }

        public static void Backward(CudaBackend backend, Tensor x, Tensor theta, Tensor dy, Tensor? dx, Tensor? dtheta, TokenPositions positions)
        {
            var s = x.Shape;
            long rows = (long)s[0] * s[1], n = x.Shape.ElementCount;
            // One upload serves both kernels: the dθ kernel is queued before any later upload.
            var perToken = (dx is not null && n > 0) || (dtheta is not null && rows > 0) ? backend.PositionsOnDevice(positions) : CUdeviceptr.Null;
            if (dx is not null && n > 0)
            {
                var args = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
                args.Add(Ptr(dx));
                args.Add(Ptr(theta));
                args.Add(Ptr(dy));
                args.Add(rows);
                args.Add(s[1]);
                args.Add(s[2]);
                args.Add(s[3]);
                args.Add(positions.Offset);
                args.Add(perToken);
                backend.Kernel(Program, BackwardKernel[x.DType]).Launch(Elementwise.Grid(backend, n), Elementwise.Threads, 0, backend.Stream, args);
            }
            int columns = s[2] * s[3];
            if (dtheta is null || columns == 0)
            {
                return;
            }
            var (chunks, rowsPerChunk) = ColumnSum.Plan(backend.Device.MultiprocessorCount, rows, columns);
            var scratch = backend.Scratch((long)chunks * columns * sizeof(float));
            if (rows > 0)
            {
                var args = new KernelArgs(stackalloc byte[128], stackalloc int[12]);
                args.Add(scratch.Pointer);
                args.Add(Ptr(x));
                args.Add(Ptr(theta));
                args.Add(Ptr(dy));
                args.Add(rows);
                args.Add(s[1]);
                args.Add(s[2]);
                args.Add(s[3]);
                args.Add(positions.Offset);
                args.Add(perToken);
                args.Add(rowsPerChunk);
                backend.Kernel(Program, ThetaPartials[x.DType]).Launch(
                    new Dim3(Dim3.CeilDiv(columns, ColumnSum.TileX), (uint)chunks), new Dim3(ColumnSum.TileX, ColumnSum.TileY), 0, backend.Stream, args);
            }
            else
            {
                scratch.Zero(backend.Stream);
            }
            ColumnSum.Finalize(backend, backend.Kernel(Program, ThetaFinalize[x.DType]), Ptr(dtheta), scratch.Pointer, chunks, columns, accumulate: true);
        }
    }
}

namespace Attention.Native
{
    using Attention.Native.Ops;

    // The op-table entries of Lrpe on the CUDA backend.
    public sealed partial class CudaBackend
    {
        internal override void LrpeForward(Tensor x, Tensor theta, Tensor y, TokenPositions positions) => LrpeCuda.Forward(this, x, theta, y, positions);

        internal override void LrpeBackward(Tensor x, Tensor theta, Tensor dy, Tensor? dx, Tensor? dtheta, TokenPositions positions) =>
            LrpeCuda.Backward(this, x, theta, dy, dx, dtheta, positions);
    }
}

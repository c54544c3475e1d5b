using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops;

/// <summary>CUDA launcher of <see cref="RmsNorm"/> (cuda/rmsnorm.cu): one warp per row; gain gradient by column sums.</summary>
internal static class RmsNormCuda
{
    private const int WarpsPerBlock = 4;

    private static readonly KernelNames ForwardKernel = new("rmsnorm_forward");
    private static readonly KernelNames BackwardKernel = new("rmsnorm_backward");
    private static readonly KernelNames GainPartials = new("rmsnorm_gain_backward_partials");
    private static readonly KernelNames GainFinalize = new("rmsnorm_gain_backward_finalize");

    public static KernelProgram Program { get; } = KernelProgram.ForStorageTypes(
        "rmsnorm.cu", ForwardKernel.Template, BackwardKernel.Template, GainPartials.Template, GainFinalize.Template);

    public static void Forward(CudaBackend backend, Tensor x, Tensor? gain, Tensor y, float epsilon)
    {
        long rows = x.Shape.Rows;
        int n = x.Shape[-1];
        if (rows == 0 || n == 0)
        {
            return;
        }
        var args = new KernelArgs(stackalloc byte[64], stackalloc int[8]);
        args.Add(Ptr(y));
        args.Add(Ptr(x));
        args.Add(Ptr(gain));
        args.Add(rows);
        args.Add(n);
        args.Add(epsilon);
        backend.Kernel(Program, ForwardKernel[x.DType]).Launch(Dim3.CeilDiv(rows, WarpsPerBlock), WarpsPerBlock * 32, 0, backend.Stream, args);
    }

    public static void Backward(CudaBackend backend, Tensor x, Tensor? gain, Tensor dy, Tensor dx, Tensor? dgain, float epsilon, bool accumulate)
    {
        long rows = x.Shape.Rows;
        int n = x.Shape[-1];
        if (n == 0)
        {
            return;
        }
        var (chunks, rowsPerChunk) = ColumnSum.Plan(backend.Device.MultiprocessorCount, rows, n);
        long inverseRmsBytes = dgain is null ? 0 : AlignUp(rows * sizeof(float), 256);
        long partialBytes = dgain is null ? 0 : (long)chunks * n * sizeof(float);
        var scratch = dgain is null ? null : backend.Scratch(inverseRmsBytes + partialBytes);
        var inverseRms = scratch?.Pointer ?? Interop.CUdeviceptr.Null;
        if (rows > 0)
        {
            var args = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
            args.Add(Ptr(dx));
            args.Add(inverseRms);
            args.Add(Ptr(x));
            args.Add(Ptr(gain));
            args.Add(Ptr(dy));
            args.Add(rows);
            args.Add(n);
            args.Add(epsilon);
            args.Add(accumulate ? 1 : 0);
            backend.Kernel(Program, BackwardKernel[x.DType]).Launch(Dim3.CeilDiv(rows, WarpsPerBlock), WarpsPerBlock * 32, 0, backend.Stream, args);
        }
        if (dgain is null)
        {
            return;
        }
        var partials = scratch!.Pointer + inverseRmsBytes;
        if (rows > 0)
        {
            var args = new KernelArgs(stackalloc byte[96], stackalloc int[12]);
            args.Add(partials);
            args.Add(Ptr(x));
            args.Add(Ptr(dy));
            args.Add(inverseRms);
            args.Add(rows);
            args.Add(n);
            args.Add(rowsPerChunk);
            backend.Kernel(Program, GainPartials[x.DType]).Launch(
                new Dim3(Dim3.CeilDiv(n, ColumnSum.TileX), (uint)chunks), new Dim3(ColumnSum.TileX, ColumnSum.TileY), 0, backend.Stream, args);
        }
        else
        {
            scratch.Slice(inverseRmsBytes, partialBytes).Zero(backend.Stream);
        }
        ColumnSum.Finalize(backend, backend.Kernel(Program, GainFinalize[x.DType]), Ptr(dgain), partials, chunks, n, accumulate);
    }

    private static long AlignUp(long n, long alignment) => (n + alignment - 1) / alignment * alignment;
}

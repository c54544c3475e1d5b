using Attention.Native.Runtime;

namespace Attention.Native.Ops;

/// <summary>
/// Launch planning for the two-stage column sums of cuda/include/reduce.cuh (bias and gain gradients):
/// enough row chunks to fill the device, each at least <see cref="MinRowsPerChunk"/> rows.
/// </summary>
internal static class ColumnSum
{
    public const int TileX = 32;
    public const int TileY = 8;
    public const int FinalizeBlock = 256;
    public const int MinRowsPerChunk = 64;
    public const int MaxChunks = 1024;

    public static (int Chunks, long RowsPerChunk) Plan(int multiprocessors, long rows, int n)
    {
        if (rows <= 0)
        {
            return (1, 1);
        }
        long columnBlocks = Math.Max(1, (n + TileX - 1) / TileX);
        long wanted = Math.Max(1, 4L * multiprocessors / columnBlocks);
        long chunks = Math.Clamp((rows + MinRowsPerChunk - 1) / MinRowsPerChunk, 1, Math.Min(wanted, MaxChunks));
        long perChunk = (rows + chunks - 1) / chunks;
        return ((int)((rows + perChunk - 1) / perChunk), perChunk);
    }

    /// <summary>Stage 2: <c>out (+)= Σ partials</c> with the program's finalize kernel.</summary>
    public static void Finalize(CudaBackend backend, CudaKernel finalize, Interop.CUdeviceptr output, Interop.CUdeviceptr partials, int chunks, int n, bool accumulate)
    {
        var args = new KernelArgs(stackalloc byte[64], stackalloc int[8]);
        args.Add(output);
        args.Add(partials);
        args.Add(chunks);
        args.Add(n);
        args.Add(accumulate ? 1 : 0);
        finalize.Launch(Dim3.CeilDiv(n, FinalizeBlock), FinalizeBlock, 0, backend.Stream, args);
    }

    /// <summary>
    /// Both stages for a kernel pair whose partials kernel takes <c>(partial, input, rows, n, rowsPerChunk)</c>:
    /// <c>output[col] += Σ_row input[row, col]</c>, deterministic.
    /// </summary>
    public static void Sum(CudaBackend backend, CudaKernel partials, CudaKernel finalize, Interop.CUdeviceptr output, Interop.CUdeviceptr input, long rows, int n)
    {
        if (n == 0)
        {
            return;
        }
        var (chunks, rowsPerChunk) = Plan(backend.Device.MultiprocessorCount, rows, n);
        var scratch = backend.Scratch((long)chunks * n * sizeof(float));
        if (rows > 0)
        {
            var args = new KernelArgs(stackalloc byte[64], stackalloc int[8]);
            args.Add(scratch.Pointer);
            args.Add(input);
            args.Add(rows);
            args.Add(n);
            args.Add(rowsPerChunk);
            partials.Launch(new Dim3(Dim3.CeilDiv(n, TileX), (uint)chunks), new Dim3(TileX, TileY), 0, backend.Stream, args);
        }
        else
        {
            scratch.Zero(backend.Stream);
        }
        Finalize(backend, finalize, output, scratch.Pointer, chunks, n, accumulate: true);
    }
}

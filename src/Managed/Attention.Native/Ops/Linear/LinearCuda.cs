using Attention.Native.Runtime;
using static Attention.Native.CudaBackend;

namespace Attention.Native.Ops;

/// <summary>CUDA launcher of <see cref="Linear"/>: GEMMs on cuBLAS (fp32 compute), bias kernels from cuda/linear.cu.</summary>
internal static class LinearCuda
{
    private static readonly KernelNames BiasFill = new("linear_bias_fill");
    private static readonly KernelNames BiasPartials = new("linear_bias_backward_partials");
    private static readonly KernelNames BiasFinalize = new("linear_bias_backward_finalize");

    public static KernelProgram Program { get; } =
        KernelProgram.ForStorageTypes("linear.cu", BiasFill.Template, BiasPartials.Template, BiasFinalize.Template);

    public static void Forward(CudaBackend backend, Tensor x, Tensor weight, Tensor? bias, Tensor y)
    {
        var (m, n, k) = Dims(x, weight);
        if (m == 0 || n == 0)
        {
            return;
        }
        float beta = 0f;
        if (bias is not null)
        {
            // y ← bias, then the GEMM adds x·wᵀ with beta = 1 (one rounding in bf16/fp16).
            var args = new KernelArgs(stackalloc byte[64], stackalloc int[8]);
            args.Add(Ptr(y));
            args.Add(Ptr(bias));
            args.Add((long)m);
            args.Add(n);
            uint blocks = (uint)Math.Min(Dim3.CeilDiv((long)m * n, 256), backend.Device.MultiprocessorCount * 8L);
            backend.Kernel(Program, BiasFill[x.DType]).Launch(blocks, 256, 0, backend.Stream, args);
            beta = 1f;
        }
        backend.Blas.LinearForward(Ptr(x), Ptr(weight), Ptr(y), m, n, k, beta, x.DType);
    }

    public static void Backward(CudaBackend backend, Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dweight, Tensor? dbias, bool accumulate)
    {
        var (m, n, k) = Dims(x, weight);
        float beta = accumulate ? 1f : 0f;
        if (dx is not null && m > 0 && k > 0)
        {
            backend.Blas.LinearBackwardData(Ptr(dy), Ptr(weight), Ptr(dx), m, n, k, beta, x.DType);
        }
        if (dweight is not null && n > 0 && k > 0)
        {
            backend.Blas.LinearBackwardWeight(Ptr(dy), Ptr(x), Ptr(dweight), m, n, k, beta, x.DType);
        }
        if (dbias is not null && n > 0)
        {
            var (chunks, rowsPerChunk) = ColumnSum.Plan(backend.Device.MultiprocessorCount, m, n);
            var partials = backend.Scratch((long)chunks * n * sizeof(float));
            if (m > 0)
            {
                var args = new KernelArgs(stackalloc byte[64], stackalloc int[8]);
                args.Add(partials.Pointer);
                args.Add(Ptr(dy));
                args.Add((long)m);
                args.Add(n);
                args.Add(rowsPerChunk);
                backend.Kernel(Program, BiasPartials[x.DType]).Launch(
                    new Dim3(Dim3.CeilDiv(n, ColumnSum.TileX), (uint)chunks), new Dim3(ColumnSum.TileX, ColumnSum.TileY), 0, backend.Stream, args);
            }
            else
            {
                partials.Zero(backend.Stream);
            }
            ColumnSum.Finalize(backend, backend.Kernel(Program, BiasFinalize[x.DType]), Ptr(dbias), partials.Pointer, chunks, n, accumulate);
        }
    }

    // cuBLAS takes int dimensions; the rows of x (all leading axes) must fit.
    private static (int M, int N, int K) Dims(Tensor x, Tensor weight)
    {
        long rows = x.Shape.Rows;
        return rows > int.MaxValue
            ? throw new ArgumentException($"x: expected at most {int.MaxValue} rows for cuBLAS, actual {rows}", nameof(x))
            : ((int)rows, weight.Shape[0], x.Shape[-1]);
    }
}

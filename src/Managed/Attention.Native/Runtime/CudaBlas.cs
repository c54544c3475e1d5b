using Attention.Native.Interop;
using static Attention.Native.Interop.NativeMethods;

namespace Attention.Native.Runtime;

/// <summary>
/// A cuBLAS handle bound to a stream, with row-major helpers. cuBLAS is column-major: a row-major
/// matrix A[r, c] is the column-major matrix Aᵀ, so every row-major product C = op(A)·op(B) is issued as
/// the column-major product Cᵀ = op(B)ᵀ·op(A)ᵀ (operands swapped, no data moved). All products accumulate
/// in fp32 (CUBLAS_COMPUTE_32F) whatever the storage type.
/// </summary>
/// <remarks>Thread safety: one thread at a time (a cuBLAS handle with one workspace bound to one stream). Stream rules: every product is queued on the stream the handle is bound to (the constructor's, then <see cref="SetStream"/>'s) and returns before it runs. Its one workspace is used in that stream's order, so synchronise the old stream before moving the handle to another.</remarks>
public sealed unsafe class CudaBlas : IDisposable
{
    /// <summary>Workspace handed to cuBLAS (NVIDIA recommends 32 MiB on Hopper).</summary>
    public const long WorkspaceBytes = 32L << 20;

    private readonly CudaContext _context;
    private readonly DeviceBuffer<byte>? _workspace;
    private nint _handle;

    /// <summary>Creates a handle in <paramref name="context"/> issuing work on <paramref name="stream"/>.</summary>
    public CudaBlas(CudaContext context, CudaStream stream)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(stream);
        NativeLibraries.Require(NativeLibraryKind.Cublas);
        _context = context;
        context.MakeCurrent();
        nint handle;
        StatusCheck.Check(cublasCreate_v2(&handle), nameof(cublasCreate_v2));
        _handle = handle;
        try
        {
            int version;
            StatusCheck.Check(cublasGetVersion_v2(handle, &version), nameof(cublasGetVersion_v2));
            Version = version;
            SetStream(stream);
            // Reduced-precision split-K reductions would make bf16/fp16 results drift from the fp32 reference.
            StatusCheck.Check(cublasSetMathMode(handle, cublasMath_t.CUBLAS_DEFAULT_MATH | cublasMath_t.CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION), nameof(cublasSetMathMode));
            _workspace = context.Allocate<byte>(WorkspaceBytes);
            try
            {
                StatusCheck.Check(cublasSetWorkspace_v2(handle, _workspace.Pointer, (nuint)WorkspaceBytes), nameof(cublasSetWorkspace_v2));
            }
            catch (EntryPointNotFoundException)
            {
                // cuBLAS older than 11.4 has no cublasSetWorkspace; it then manages its own.
                _workspace.Dispose();
                _workspace = null;
            }
        }
        catch
        {
            _workspace?.Dispose();
            _ = cublasDestroy_v2(handle);
            _handle = 0;
            throw;
        }
    }

    /// <summary>cuBLAS version, e.g. 120804 for 12.8.4.</summary>
    public int Version { get; }

    private nint Handle
    {
        get
        {
            ObjectDisposedException.ThrowIf(_handle == 0, this);
            return _handle;
        }
    }

    /// <summary>Issues subsequent work on <paramref name="stream"/>.</summary>
    public void SetStream(CudaStream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        StatusCheck.Check(cublasSetStream_v2(Handle, stream.Handle), nameof(cublasSetStream_v2));
    }

    /// <summary>The cuBLAS storage type for <paramref name="dtype"/>.</summary>
    public static cudaDataType DataType(DType dtype) => dtype switch
    {
        DType.F32 => cudaDataType.CUDA_R_32F,
        DType.BF16 => cudaDataType.CUDA_R_16BF,
        DType.F16 => cudaDataType.CUDA_R_16F,
        _ => throw new ArgumentException($"dtype: expected F32, BF16 or F16 for cuBLAS, actual {dtype}", nameof(dtype)),
    };

    /// <summary>Column-major <c>cublasGemmEx</c>: C = alpha·op(A)·op(B) + beta·C, fp32 compute.</summary>
    public void GemmEx(
        cublasOperation_t transA, cublasOperation_t transB, int m, int n, int k,
        float alpha, CUdeviceptr a, int lda, CUdeviceptr b, int ldb,
        float beta, CUdeviceptr c, int ldc, DType dtype)
    {
        _context.MakeCurrent();
        var type = DataType(dtype);
        StatusCheck.Check(
            cublasGemmEx(Handle, transA, transB, m, n, k, &alpha, a, type, lda, b, type, ldb, &beta, c, type, ldc,
                cublasComputeType_t.CUBLAS_COMPUTE_32F, cublasGemmAlgo_t.CUBLAS_GEMM_DEFAULT),
            nameof(cublasGemmEx));
    }

    /// <summary>Column-major <c>cublasGemmStridedBatchedEx</c>, fp32 compute.</summary>
    public void GemmStridedBatchedEx(
        cublasOperation_t transA, cublasOperation_t transB, int m, int n, int k,
        float alpha, CUdeviceptr a, int lda, long strideA, CUdeviceptr b, int ldb, long strideB,
        float beta, CUdeviceptr c, int ldc, long strideC, int batchCount, DType dtype)
    {
        _context.MakeCurrent();
        var type = DataType(dtype);
        StatusCheck.Check(
            cublasGemmStridedBatchedEx(Handle, transA, transB, m, n, k, &alpha, a, type, lda, strideA, b, type, ldb, strideB,
                &beta, c, type, ldc, strideC, batchCount, cublasComputeType_t.CUBLAS_COMPUTE_32F, cublasGemmAlgo_t.CUBLAS_GEMM_DEFAULT),
            nameof(cublasGemmStridedBatchedEx));
    }

    /// <summary>
    /// Row-major C[M, N] = alpha·op(A)·op(B) + beta·C with op(A) [M, K], op(B) [K, N]; A is stored [M, K]
    /// (or [K, M] when <paramref name="transposeA"/>), B [K, N] (or [N, K] when <paramref name="transposeB"/>).
    /// </summary>
    public void RowMajorGemm(
        bool transposeA, bool transposeB, int m, int n, int k,
        float alpha, CUdeviceptr a, CUdeviceptr b, float beta, CUdeviceptr c, DType dtype)
    {
        int lda = transposeA ? m : k;
        int ldb = transposeB ? k : n;
        // Column-major Cᵀ[N, M] = op(B)ᵀ · op(A)ᵀ.
        GemmEx(
            transposeB ? cublasOperation_t.CUBLAS_OP_T : cublasOperation_t.CUBLAS_OP_N,
            transposeA ? cublasOperation_t.CUBLAS_OP_T : cublasOperation_t.CUBLAS_OP_N,
            n, m, k, alpha, b, ldb, a, lda, beta, c, n, dtype);
    }

    /// <summary>Linear forward product: y[M, N] = x[M, K] · w[N, K]ᵀ (+ beta·y).</summary>
    public void LinearForward(CUdeviceptr x, CUdeviceptr w, CUdeviceptr y, int m, int n, int k, float beta, DType dtype) =>
        RowMajorGemm(false, true, m, n, k, 1f, x, w, beta, y, dtype);

    /// <summary>Linear input gradient: dx[M, K] = dy[M, N] · w[N, K] (+ beta·dx).</summary>
    public void LinearBackwardData(CUdeviceptr dy, CUdeviceptr w, CUdeviceptr dx, int m, int n, int k, float beta, DType dtype) =>
        RowMajorGemm(false, false, m, k, n, 1f, dy, w, beta, dx, dtype);

    /// <summary>Linear weight gradient: dw[N, K] = dy[M, N]ᵀ · x[M, K] (+ beta·dw).</summary>
    public void LinearBackwardWeight(CUdeviceptr dy, CUdeviceptr x, CUdeviceptr dw, int m, int n, int k, float beta, DType dtype) =>
        RowMajorGemm(true, false, n, k, m, 1f, dy, x, beta, dw, dtype);

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_handle != 0)
        {
            if (!_context.IsDisposed)
            {
                _context.MakeCurrent();
                _ = cublasDestroy_v2(_handle);
            }
            _handle = 0;
        }
        _workspace?.Dispose();
    }
}

using System.Runtime.InteropServices;

namespace Attention.Native.Interop;

// cuBLAS (libcublas.so.13/.12/.11, cublas64_*.dll). Names as in cublas_api.h; the v2 API's exported
// symbols carry the _v2 suffix where cublas_v2.h maps them (cublasCreate -> cublasCreate_v2).
// A cublasHandle_t is an opaque pointer; a cudaStream_t is the same object as a driver CUstream.
internal static unsafe partial class NativeMethods
{
    internal const string CublasLibrary = "cublas";

    [LibraryImport(CublasLibrary)]
    internal static partial cublasStatus_t cublasCreate_v2(nint* handle);

    [LibraryImport(CublasLibrary)]
    internal static partial cublasStatus_t cublasDestroy_v2(nint handle);

    [LibraryImport(CublasLibrary)]
    internal static partial cublasStatus_t cublasGetVersion_v2(nint handle, int* version);

    [LibraryImport(CublasLibrary)]
    internal static partial cublasStatus_t cublasSetStream_v2(nint handle, nint streamId);

    [LibraryImport(CublasLibrary)]
    internal static partial cublasStatus_t cublasSetWorkspace_v2(nint handle, CUdeviceptr workspace, nuint workspaceSizeInBytes);

    [LibraryImport(CublasLibrary)]
    internal static partial cublasStatus_t cublasSetMathMode(nint handle, cublasMath_t mode);

    [LibraryImport(CublasLibrary)]
    internal static partial byte* cublasGetStatusName(cublasStatus_t status);

    [LibraryImport(CublasLibrary)]
    internal static partial cublasStatus_t cublasGemmEx(
        nint handle, cublasOperation_t transa, cublasOperation_t transb,
        int m, int n, int k,
        void* alpha,
        CUdeviceptr A, cudaDataType Atype, int lda,
        CUdeviceptr B, cudaDataType Btype, int ldb,
        void* beta,
        CUdeviceptr C, cudaDataType Ctype, int ldc,
        cublasComputeType_t computeType, cublasGemmAlgo_t algo);

    [LibraryImport(CublasLibrary)]
    internal static partial cublasStatus_t cublasGemmStridedBatchedEx(
        nint handle, cublasOperation_t transa, cublasOperation_t transb,
        int m, int n, int k,
        void* alpha,
        CUdeviceptr A, cudaDataType Atype, int lda, long strideA,
        CUdeviceptr B, cudaDataType Btype, int ldb, long strideB,
        void* beta,
        CUdeviceptr C, cudaDataType Ctype, int ldc, long strideC,
        int batchCount, cublasComputeType_t computeType, cublasGemmAlgo_t algo);
}

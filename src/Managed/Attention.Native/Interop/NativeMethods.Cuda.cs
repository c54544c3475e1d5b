using System.Runtime.InteropServices;

namespace Attention.Native.Interop;

// CUDA driver API (libcuda.so.1 / nvcuda.dll). Names and signatures as in cuda.h; where cuda.h maps a
// name to a versioned symbol (cuMemAlloc -> cuMemAlloc_v2), the versioned symbol is bound.
// Handles (CUcontext, CUmodule, CUfunction, CUstream, CUevent) are opaque pointers; CUdevice is an int.
internal static unsafe partial class NativeMethods
{
    internal const string CudaLibrary = "cuda";

    static NativeMethods() => NativeLibraries.RegisterResolver();

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuInit(uint Flags);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuDriverGetVersion(int* driverVersion);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuGetErrorName(CUresult error, byte** pStr);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuGetErrorString(CUresult error, byte** pStr);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuDeviceGetCount(int* count);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuDeviceGet(int* device, int ordinal);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuDeviceGetName(byte* name, int len, int dev);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuDeviceGetAttribute(int* pi, CUdevice_attribute attrib, int dev);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuDeviceTotalMem_v2(nuint* bytes, int dev);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuDevicePrimaryCtxRetain(nint* pctx, int dev);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuDevicePrimaryCtxRelease_v2(int dev);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuCtxSetCurrent(nint ctx);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuCtxGetCurrent(nint* pctx);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuCtxSynchronize();

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuMemGetInfo_v2(nuint* free, nuint* total);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuMemAlloc_v2(CUdeviceptr* dptr, nuint bytesize);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuMemFree_v2(CUdeviceptr dptr);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuMemcpyHtoD_v2(CUdeviceptr dstDevice, void* srcHost, nuint ByteCount);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuMemcpyDtoH_v2(void* dstHost, CUdeviceptr srcDevice, nuint ByteCount);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuMemcpyDtoD_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, nuint ByteCount);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dstDevice, void* srcHost, nuint ByteCount, nint hStream);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuMemcpyDtoHAsync_v2(void* dstHost, CUdeviceptr srcDevice, nuint ByteCount, nint hStream);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, nuint ByteCount, nint hStream);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuMemsetD8_v2(CUdeviceptr dstDevice, byte uc, nuint N);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuMemsetD32_v2(CUdeviceptr dstDevice, uint ui, nuint N);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuMemsetD8Async(CUdeviceptr dstDevice, byte uc, nuint N, nint hStream);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuMemsetD32Async(CUdeviceptr dstDevice, uint ui, nuint N, nint hStream);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuStreamCreate(nint* phStream, uint Flags);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuStreamDestroy_v2(nint hStream);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuStreamSynchronize(nint hStream);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuEventCreate(nint* phEvent, uint Flags);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuEventDestroy_v2(nint hEvent);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuEventRecord(nint hEvent, nint hStream);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuEventSynchronize(nint hEvent);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuStreamWaitEvent(nint hStream, nint hEvent, uint Flags);

    // CUDA 12.8 added cuEventElapsedTime_v2 and newer headers map the name to it; drivers keep the original
    // symbol for older binaries, and older drivers (e.g. JetPack 6) have only that one. CudaEvent tries it first.
    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuEventElapsedTime(float* pMilliseconds, nint hStart, nint hEnd);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuEventElapsedTime_v2(float* pMilliseconds, nint hStart, nint hEnd);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuModuleLoadData(nint* module, void* image);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuModuleUnload(nint hmod);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuModuleGetFunction(nint* hfunc, nint hmod, byte* name);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuFuncSetAttribute(nint hfunc, CUfunction_attribute attrib, int value);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuFuncGetAttribute(int* pi, CUfunction_attribute attrib, nint hfunc);

    [LibraryImport(CudaLibrary)]
    internal static partial CUresult cuLaunchKernel(
        nint f,
        uint gridDimX, uint gridDimY, uint gridDimZ,
        uint blockDimX, uint blockDimY, uint blockDimZ,
        uint sharedMemBytes, nint hStream, void** kernelParams, void** extra);

    internal const uint CU_STREAM_DEFAULT = 0;
    internal const uint CU_STREAM_NON_BLOCKING = 1;
    internal const uint CU_EVENT_DEFAULT = 0;
    internal const uint CU_EVENT_BLOCKING_SYNC = 1;
    internal const uint CU_EVENT_DISABLE_TIMING = 2;
}

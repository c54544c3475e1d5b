namespace Attention.Native.Interop;

/// <summary>The one place native status codes become exceptions.</summary>
internal static class StatusCheck
{
    public static void Check(CUresult status, string call)
    {
        if (status != CUresult.CUDA_SUCCESS)
        {
            throw status == CUresult.CUDA_ERROR_OUT_OF_MEMORY
                ? new CudaOutOfMemoryException(call, -1)
                : new CudaException(status, call);
        }
    }

    public static void Check(nvrtcResult status, string call, string? programName = null, string? log = null)
    {
        if (status != nvrtcResult.NVRTC_SUCCESS)
        {
            throw new NvrtcException(status, call, programName, log);
        }
    }

    public static void Check(cublasStatus_t status, string call)
    {
        if (status != cublasStatus_t.CUBLAS_STATUS_SUCCESS)
        {
            throw new CublasException(status, call);
        }
    }

    // Names come from the enum; a code this build does not know asks the driver (newer drivers add codes).
    public static unsafe string NameOf(CUresult status)
    {
        if (Enum.IsDefined(status))
        {
            return status.ToString();
        }
        try
        {
            byte* name;
            if (NativeLibraries.Get(NativeLibraryKind.Cuda).IsLoaded
                && NativeMethods.cuGetErrorName(status, &name) == CUresult.CUDA_SUCCESS && name is not null)
            {
                return new string((sbyte*)name);
            }
        }
        catch (DllNotFoundException)
        {
        }
        catch (EntryPointNotFoundException)
        {
        }
        return $"CUresult({(int)status})";
    }
}

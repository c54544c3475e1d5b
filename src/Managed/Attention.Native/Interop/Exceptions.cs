namespace Attention.Native.Interop;

/// <summary>A CUDA driver API call failed.</summary>
public class CudaException : Exception
{
    /// <summary>Creates an exception for a failed call.</summary>
    public CudaException(CUresult status, string call, string? detail = null)
        : base($"{call} failed: {StatusCheck.NameOf(status)} ({(int)status}){(detail is null ? "" : ": " + detail)}")
    {
        Status = status;
        Call = call;
    }

    /// <inheritdoc/>
    public CudaException()
    {
        Call = "";
    }

    /// <inheritdoc/>
    public CudaException(string message)
        : base(message)
    {
        Call = "";
    }

    /// <inheritdoc/>
    public CudaException(string message, Exception innerException)
        : base(message, innerException)
    {
        Call = "";
    }

    /// <summary>The status code.</summary>
    public CUresult Status { get; }

    /// <summary>The status name as in cuda.h, e.g. <c>CUDA_ERROR_OUT_OF_MEMORY</c>.</summary>
    public string StatusName => StatusCheck.NameOf(Status);

    /// <summary>The driver function that failed.</summary>
    public string Call { get; }
}

/// <summary>A device allocation failed: the device has too little free memory.</summary>
public sealed class CudaOutOfMemoryException : CudaException
{
    /// <summary>Creates the exception for an allocation of <paramref name="requestedBytes"/>.</summary>
    public CudaOutOfMemoryException(string call, long requestedBytes, string? detail = null)
        : base(CUresult.CUDA_ERROR_OUT_OF_MEMORY, call, $"requested {requestedBytes} bytes{(detail is null ? "" : "; " + detail)}")
    {
        RequestedBytes = requestedBytes;
    }

    /// <inheritdoc/>
    public CudaOutOfMemoryException()
    {
    }

    /// <inheritdoc/>
    public CudaOutOfMemoryException(string message)
        : base(message)
    {
    }

    /// <inheritdoc/>
    public CudaOutOfMemoryException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Bytes that were asked for.</summary>
    public long RequestedBytes { get; }
}

/// <summary>An NVRTC call failed; for a compile failure, <see cref="Log"/> holds the compiler's log.</summary>
public sealed class NvrtcException : Exception
{
    /// <summary>Creates the exception.</summary>
    public NvrtcException(nvrtcResult status, string call, string? programName = null, string? log = null)
        : base(Format(status, call, programName, log))
    {
        Status = status;
        Call = call;
        ProgramName = programName;
        Log = log;
    }

    /// <inheritdoc/>
    public NvrtcException()
    {
        Call = "";
    }

    /// <inheritdoc/>
    public NvrtcException(string message)
        : base(message)
    {
        Call = "";
    }

    /// <inheritdoc/>
    public NvrtcException(string message, Exception innerException)
        : base(message, innerException)
    {
        Call = "";
    }

    /// <summary>The status code.</summary>
    public nvrtcResult Status { get; }

    /// <summary>The status name as in nvrtc.h.</summary>
    public string StatusName => Status.ToString();

    /// <summary>The NVRTC function that failed.</summary>
    public string Call { get; }

    /// <summary>What was being compiled: the kernel file and its kernels, e.g. <c>rope.cu (rope_forward&lt;float&gt;, …)</c>.</summary>
    public string? ProgramName { get; }

    /// <summary>The compiler's log, when there is one.</summary>
    public string? Log { get; }

    private static string Format(nvrtcResult status, string call, string? programName, string? log)
    {
        var text = $"{call} failed: {status} ({(int)status})";
        if (programName is not null)
        {
            text += $" compiling {programName}";
        }
        if (!string.IsNullOrWhiteSpace(log))
        {
            text += Environment.NewLine + log.TrimEnd();
        }
        return text;
    }
}

/// <summary>A cuBLAS call failed.</summary>
public sealed class CublasException : Exception
{
    /// <summary>Creates the exception.</summary>
    public CublasException(cublasStatus_t status, string call)
        : base($"{call} failed: {status} ({(int)status})")
    {
        Status = status;
        Call = call;
    }

    /// <inheritdoc/>
    public CublasException()
    {
        Call = "";
    }

    /// <inheritdoc/>
    public CublasException(string message)
        : base(message)
    {
        Call = "";
    }

    /// <inheritdoc/>
    public CublasException(string message, Exception innerException)
        : base(message, innerException)
    {
        Call = "";
    }

    /// <summary>The status code.</summary>
    public cublasStatus_t Status { get; }

    /// <summary>The status name as in cublas_api.h.</summary>
    public string StatusName => Status.ToString();

    /// <summary>The cuBLAS function that failed.</summary>
    public string Call { get; }
}

/// <summary>A native library could not be loaded; the message lists every path tried.</summary>
public sealed class NativeLibraryNotFoundException : DllNotFoundException
{
    /// <summary>Creates the exception.</summary>
    public NativeLibraryNotFoundException(string library, IReadOnlyList<string> attempts)
        : base($"{library}: no loadable library found; tried: {string.Join("; ", attempts)}")
    {
        Library = library;
        Attempts = attempts;
    }

    /// <inheritdoc/>
    public NativeLibraryNotFoundException()
    {
        Library = "";
        Attempts = [];
    }

    /// <inheritdoc/>
    public NativeLibraryNotFoundException(string message)
        : base(message)
    {
        Library = "";
        Attempts = [];
    }

    /// <inheritdoc/>
    public NativeLibraryNotFoundException(string message, Exception innerException)
        : base(message, innerException)
    {
        Library = "";
        Attempts = [];
    }

    /// <summary>Which library.</summary>
    public string Library { get; }

    /// <summary>Every path or name tried, with the loader's answer.</summary>
    public IReadOnlyList<string> Attempts { get; }
}

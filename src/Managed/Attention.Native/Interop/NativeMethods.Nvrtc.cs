using System.Runtime.InteropServices;

namespace Attention.Native.Interop;

// NVRTC (libnvrtc.so.13/.12/.11.2, nvrtc64_*.dll). Names and signatures as in nvrtc.h.
internal static unsafe partial class NativeMethods
{
    internal const string NvrtcLibrary = "nvrtc";

    [LibraryImport(NvrtcLibrary)]
    internal static partial byte* nvrtcGetErrorString(nvrtcResult result);

    [LibraryImport(NvrtcLibrary)]
    internal static partial nvrtcResult nvrtcVersion(int* major, int* minor);

    [LibraryImport(NvrtcLibrary)]
    internal static partial nvrtcResult nvrtcGetNumSupportedArchs(int* numArchs);

    [LibraryImport(NvrtcLibrary)]
    internal static partial nvrtcResult nvrtcGetSupportedArchs(int* supportedArchs);

    [LibraryImport(NvrtcLibrary)]
    internal static partial nvrtcResult nvrtcCreateProgram(nint* prog, byte* src, byte* name, int numHeaders, byte** headers, byte** includeNames);

    [LibraryImport(NvrtcLibrary)]
    internal static partial nvrtcResult nvrtcDestroyProgram(nint* prog);

    [LibraryImport(NvrtcLibrary)]
    internal static partial nvrtcResult nvrtcCompileProgram(nint prog, int numOptions, byte** options);

    [LibraryImport(NvrtcLibrary)]
    internal static partial nvrtcResult nvrtcGetProgramLogSize(nint prog, nuint* logSizeRet);

    [LibraryImport(NvrtcLibrary)]
    internal static partial nvrtcResult nvrtcGetProgramLog(nint prog, byte* log);

    [LibraryImport(NvrtcLibrary)]
    internal static partial nvrtcResult nvrtcGetPTXSize(nint prog, nuint* ptxSizeRet);

    [LibraryImport(NvrtcLibrary)]
    internal static partial nvrtcResult nvrtcGetPTX(nint prog, byte* ptx);

    [LibraryImport(NvrtcLibrary)]
    internal static partial nvrtcResult nvrtcGetCUBINSize(nint prog, nuint* cubinSizeRet);

    [LibraryImport(NvrtcLibrary)]
    internal static partial nvrtcResult nvrtcGetCUBIN(nint prog, byte* cubin);

    [LibraryImport(NvrtcLibrary)]
    internal static partial nvrtcResult nvrtcAddNameExpression(nint prog, byte* name_expression);

    [LibraryImport(NvrtcLibrary)]
    internal static partial nvrtcResult nvrtcGetLoweredName(nint prog, byte* name_expression, byte** lowered_name);
}

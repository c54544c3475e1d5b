using Attention.Native.Interop;
using static Attention.Native.Interop.NativeMethods;

namespace Attention.Native.Runtime;

/// <summary>Facts about the loaded NVRTC library.</summary>
/// <remarks>Thread safety: safe from any thread.</remarks>
public static unsafe class Nvrtc
{
    private static readonly Lazy<(int Major, int Minor)> VersionLazy = new(() =>
    {
        NativeLibraries.Require(NativeLibraryKind.Nvrtc);
        int major, minor;
        StatusCheck.Check(nvrtcVersion(&major, &minor), nameof(nvrtcVersion));
        return (major, minor);
    });

    private static readonly Lazy<IReadOnlyList<int>> ArchsLazy = new(() =>
    {
        NativeLibraries.Require(NativeLibraryKind.Nvrtc);
        int count;
        StatusCheck.Check(nvrtcGetNumSupportedArchs(&count), nameof(nvrtcGetNumSupportedArchs));
        var archs = new int[count];
        fixed (int* p = archs)
        {
            StatusCheck.Check(nvrtcGetSupportedArchs(p), nameof(nvrtcGetSupportedArchs));
        }
        return archs;
    });

    /// <summary>True when an NVRTC library can be loaded.</summary>
    public static bool IsAvailable => NativeLibraries.Get(NativeLibraryKind.Nvrtc).IsLoaded;

    /// <summary>The NVRTC version, e.g. (12, 8).</summary>
    public static (int Major, int Minor) Version => VersionLazy.Value;

    /// <summary>The version as text, e.g. "12.8".</summary>
    public static string VersionText => $"{Version.Major}.{Version.Minor}";

    /// <summary>The architectures this NVRTC can emit CUBIN for, as numbers (80 for sm_80).</summary>
    public static IReadOnlyList<int> SupportedArchs => ArchsLazy.Value;
}

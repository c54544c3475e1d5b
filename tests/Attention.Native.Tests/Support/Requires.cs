using Attention.Native.Interop;
using Attention.Native.Runtime;

namespace Attention.Native.Tests.Support;

/// <summary>Skips a test, with a visible reason, when what it needs is not on this machine.</summary>
internal static class Requires
{
    private static readonly Lazy<(CudaBackend? Backend, string Reason)> Gpu = new(() =>
    {
        if (Environment.GetEnvironmentVariable(Backend.BackendVariable) is { } forced && forced.Equals("cpu", StringComparison.OrdinalIgnoreCase))
        {
            return (null, $"{Backend.BackendVariable}=cpu");
        }
        return CudaBackend.TryCreate(0, out var backend, out var reason) ? (backend, "ok") : (null, reason);
    });

    /// <summary>NVRTC loads; otherwise the test is ignored naming every path tried.</summary>
    public static void Nvrtc()
    {
        var status = NativeLibraries.Get(NativeLibraryKind.Nvrtc);
        if (!status.IsLoaded)
        {
            Assert.Ignore($"no NVRTC library: {status.Describe()}");
        }
    }

    /// <summary>The CUDA backend the Gpu tests share, or null when this machine has none (never ignores the caller).</summary>
    public static CudaBackend? CudaDeviceIfPresent() => Gpu.Value.Backend;

    /// <summary>A CUDA device with NVRTC and cuBLAS; otherwise the test is ignored with the reason.</summary>
    public static CudaBackend CudaDevice()
    {
        var (backend, reason) = Gpu.Value;
        if (backend is null)
        {
            Assert.Ignore($"no CUDA device: {reason}");
        }
        return backend!;
    }
}

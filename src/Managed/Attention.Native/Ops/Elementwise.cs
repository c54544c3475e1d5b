using Attention.Native.Runtime;

namespace Attention.Native.Ops;

/// <summary>Launch shape of the grid-stride elementwise kernels: 256 threads, enough blocks to fill the device and no more.</summary>
internal static class Elementwise
{
    public const int Threads = 256;

    public static Dim3 Grid(CudaBackend backend, long n) =>
        (uint)Math.Clamp((n + Threads - 1) / Threads, 1, 32L * backend.Device.MultiprocessorCount);
}

using Attention.Native.Interop;
using static Attention.Native.Interop.NativeMethods;

namespace Attention.Native.Runtime;

/// <summary>A CUDA device and the properties the kernels are tuned by.</summary>
/// <remarks>Thread safety: immutable after creation; safe to share.</remarks>
public sealed unsafe class CudaDevice
{
    private static readonly Lazy<int> DriverVersionLazy = new(InitializeDriver);

    private CudaDevice(int ordinal)
    {
        Ordinal = ordinal;
        int handle;
        StatusCheck.Check(cuDeviceGet(&handle, ordinal), nameof(cuDeviceGet));
        Handle = handle;
        byte* name = stackalloc byte[256];
        StatusCheck.Check(cuDeviceGetName(name, 256, handle), nameof(cuDeviceGetName));
        Name = new string((sbyte*)name);
        nuint total;
        StatusCheck.Check(cuDeviceTotalMem_v2(&total, handle), nameof(cuDeviceTotalMem_v2));
        TotalMemoryBytes = (long)total;
        ComputeCapabilityMajor = Attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
        ComputeCapabilityMinor = Attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
        MultiprocessorCount = Attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
        MaxSharedMemoryPerBlockOptin = Attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
        MaxSharedMemoryPerMultiprocessor = Attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR);
        MaxThreadsPerBlock = Attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
        ClockRateKHz = Attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_CLOCK_RATE);
        MemoryClockRateKHz = Attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE);
        MemoryBusWidthBits = Attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH);
        L2CacheBytes = Attribute(CUdevice_attribute.CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE);
    }

    /// <summary>The driver's CUDA version, e.g. 13000 for 13.0. Initialises the driver on first use.</summary>
    public static int DriverVersion => DriverVersionLazy.Value;

    /// <summary>Number of CUDA devices (initialises the driver).</summary>
    public static int Count
    {
        get
        {
            _ = DriverVersion;
            int count;
            StatusCheck.Check(cuDeviceGetCount(&count), nameof(cuDeviceGetCount));
            return count;
        }
    }

    /// <summary>The device ordinal.</summary>
    public int Ordinal { get; }

    internal int Handle { get; }

    /// <summary>The marketing name, e.g. "NVIDIA H100 80GB HBM3".</summary>
    public string Name { get; }

    /// <summary>Total device memory in bytes.</summary>
    public long TotalMemoryBytes { get; }

    /// <summary>Compute capability, major part.</summary>
    public int ComputeCapabilityMajor { get; }

    /// <summary>Compute capability, minor part.</summary>
    public int ComputeCapabilityMinor { get; }

    /// <summary>The exact architecture name NVRTC targets, e.g. <c>sm_90</c>.</summary>
    public string Arch => $"sm_{ComputeCapabilityMajor}{ComputeCapabilityMinor}";

    /// <summary>Number of streaming multiprocessors.</summary>
    public int MultiprocessorCount { get; }

    /// <summary>Largest dynamic shared memory a block may opt in to, in bytes.</summary>
    public int MaxSharedMemoryPerBlockOptin { get; }

    /// <summary>Shared memory per multiprocessor, in bytes.</summary>
    public int MaxSharedMemoryPerMultiprocessor { get; }

    /// <summary>Largest block.</summary>
    public int MaxThreadsPerBlock { get; }

    /// <summary>Peak SM clock in kHz.</summary>
    public int ClockRateKHz { get; }

    /// <summary>Peak memory clock in kHz.</summary>
    public int MemoryClockRateKHz { get; }

    /// <summary>Memory bus width in bits.</summary>
    public int MemoryBusWidthBits { get; }

    /// <summary>L2 cache size in bytes.</summary>
    public int L2CacheBytes { get; }

    /// <summary>Theoretical DRAM bandwidth in GB/s (double data rate × bus width).</summary>
    public double PeakMemoryBandwidthGBps => 2.0 * MemoryClockRateKHz * 1e3 * (MemoryBusWidthBits / 8.0) / 1e9;

    /// <summary>The device with ordinal <paramref name="ordinal"/>.</summary>
    public static CudaDevice Get(int ordinal)
    {
        int count = Count;
        if (ordinal < 0 || ordinal >= count)
        {
            throw new ArgumentOutOfRangeException(nameof(ordinal), ordinal, $"expected a device ordinal in [0, {count}), actual {ordinal}");
        }
        return new CudaDevice(ordinal);
    }

    /// <inheritdoc/>
    public override string ToString() => $"cuda:{Ordinal} {Name} ({Arch}, {MultiprocessorCount} SMs, {TotalMemoryBytes / (1 << 20)} MiB)";

    private int Attribute(CUdevice_attribute attribute)
    {
        int value;
        StatusCheck.Check(cuDeviceGetAttribute(&value, attribute, Handle), nameof(cuDeviceGetAttribute));
        return value;
    }

    private static int InitializeDriver()
    {
        NativeLibraries.Require(NativeLibraryKind.Cuda);
        StatusCheck.Check(cuInit(0), nameof(cuInit));
        int version;
        StatusCheck.Check(cuDriverGetVersion(&version), nameof(cuDriverGetVersion));
        return version;
    }
}

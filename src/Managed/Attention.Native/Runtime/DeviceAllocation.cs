using Attention.Native.Interop;

namespace Attention.Native.Runtime;

/// <summary>
/// One cuMemAlloc'd range. Buffers and their views share it, so a view keeps it alive; it is freed by the
/// owning buffer's Dispose, or, if leaked, handed by the finalizer to its context to free later with the
/// context current (never from the finalizer thread itself).
/// </summary>
internal sealed class DeviceAllocation : IDisposable
{
    public DeviceAllocation(CudaContext context, long bytes, DeviceMemoryCache? cache = null)
    {
        Context = context;
        if (cache is null || bytes == 0)
        {
            Bytes = bytes;
            Pointer = context.AllocateBytes(bytes);
        }
        else
        {
            Pointer = cache.Take(bytes, out long bucket);
            Bytes = bucket;
            _cache = cache;
        }
    }

    // The caller's memory (CudaBackend.Wrap): never freed here; Dispose only ends this library's use of it.
    private DeviceAllocation(CudaContext context, CUdeviceptr pointer, long bytes)
    {
        Context = context;
        Pointer = pointer;
        Bytes = bytes;
        IsExternal = true;
        GC.SuppressFinalize(this);
    }

    /// <summary>An allocation over the caller's device memory, which Dispose leaves alone.</summary>
    public static DeviceAllocation External(CudaContext context, CUdeviceptr pointer, long bytes) => new(context, pointer, bytes);

    // Where the block goes back on Dispose (a leaked one is freed by the context instead).
    private readonly DeviceMemoryCache? _cache;

    /// <summary>True for the caller's memory (not allocated here, never freed here).</summary>
    public bool IsExternal { get; }

    ~DeviceAllocation()
    {
        if (!IsFreed)
        {
            Context.DeferFree(Pointer, Bytes);
        }
    }

    public CudaContext Context { get; }

    public CUdeviceptr Pointer { get; }

    public long Bytes { get; }

    public bool IsFreed { get; private set; }

    /// <summary>Counts writes through the public copy API, so a pass can tell its parameters changed under it.</summary>
    public long Version => Interlocked.Read(ref _version);

    public void MarkWritten() => Interlocked.Increment(ref _version);

    private long _version;

    public void Dispose()
    {
        if (IsFreed)
        {
            return;
        }
        IsFreed = true;
        GC.SuppressFinalize(this);
        if (IsExternal)
        {
            return;
        }
        if (_cache is not null)
        {
            _cache.Give(Pointer, Bytes);
        }
        else
        {
            Context.FreeBytes(Pointer, Bytes);
        }
    }
}

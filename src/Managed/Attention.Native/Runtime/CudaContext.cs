using System.Collections.Concurrent;
using Attention.Native.Interop;
using static Attention.Native.Interop.NativeMethods;

namespace Attention.Native.Runtime;

/// <summary>
/// The primary context of a device, made current on whichever thread uses it. Owns allocation: a
/// <see cref="DeviceBuffer{T}"/> leaked to the finalizer is queued here and freed on the next call that
/// holds the context, never from the finalizer thread.
/// </summary>
/// <remarks>Thread safety: safe to share; each thread that uses it makes it current for itself, and allocation bookkeeping is atomic. Stream rules: allocation is a synchronous driver call, and freeing a buffer allocated here returns its memory to the driver at once (<see cref="DeviceBuffer{T}"/>); <see cref="Synchronize"/> waits for all work on the device, every stream included.</remarks>
public sealed unsafe class CudaContext : IDisposable
{
    // The context object (not the raw handle) last made current on this thread: a primary context released
    // and retained again may come back with the same handle value and must still be set.
    [ThreadStatic]
    private static CudaContext? t_current;

    private readonly ConcurrentQueue<CUdeviceptr> _deferredFrees = new();
    private nint _handle;
    private long _allocatedBytes;
    private long _peakAllocatedBytes;

    /// <summary>Retains the primary context of <paramref name="device"/>.</summary>
    public CudaContext(CudaDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        Device = device;
        nint ctx;
        StatusCheck.Check(cuDevicePrimaryCtxRetain(&ctx, device.Handle), nameof(cuDevicePrimaryCtxRetain));
        _handle = ctx;
        MakeCurrent();
    }

    /// <summary>The device.</summary>
    public CudaDevice Device { get; }

    /// <summary>True once disposed.</summary>
    public bool IsDisposed => _handle == 0;

    internal nint Handle => _handle;

    /// <summary>Makes this context current on the calling thread (cheap when it already is).</summary>
    public void MakeCurrent()
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        if (!ReferenceEquals(t_current, this))
        {
            StatusCheck.Check(cuCtxSetCurrent(_handle), nameof(cuCtxSetCurrent));
            t_current = this;
        }
        DrainDeferredFrees();
    }

    /// <summary>Waits for all work on the device.</summary>
    public void Synchronize()
    {
        MakeCurrent();
        StatusCheck.Check(cuCtxSynchronize(), nameof(cuCtxSynchronize));
    }

    /// <summary>Free and total device memory in bytes.</summary>
    public (long Free, long Total) MemoryInfo()
    {
        MakeCurrent();
        nuint free, total;
        StatusCheck.Check(cuMemGetInfo_v2(&free, &total), nameof(cuMemGetInfo_v2));
        return ((long)free, (long)total);
    }

    /// <summary>Bytes currently allocated through this context (buffers, tensors, scratch).</summary>
    public long AllocatedBytes => Interlocked.Read(ref _allocatedBytes);

    /// <summary>The most bytes allocated through this context at once since creation or the last <see cref="ResetPeakAllocatedBytes"/>.</summary>
    public long PeakAllocatedBytes => Interlocked.Read(ref _peakAllocatedBytes);

    /// <summary>Starts a new peak measurement from what is allocated now.</summary>
    public void ResetPeakAllocatedBytes() => Interlocked.Exchange(ref _peakAllocatedBytes, AllocatedBytes);

    /// <summary>Allocates <paramref name="length"/> elements of device memory (contents undefined).</summary>
    public DeviceBuffer<T> Allocate<T>(long length)
        where T : unmanaged => new(this, length);

    internal CUdeviceptr AllocateBytes(long bytes)
    {
        MakeCurrent();
        if (bytes == 0)
        {
            return CUdeviceptr.Null;
        }
        CUdeviceptr ptr;
        var status = cuMemAlloc_v2(&ptr, (nuint)bytes);
        if (status == CUresult.CUDA_ERROR_OUT_OF_MEMORY)
        {
            var (free, total) = MemoryInfo();
            throw new CudaOutOfMemoryException(nameof(cuMemAlloc_v2), bytes, $"{free} of {total} bytes free on {Device.Name}");
        }
        StatusCheck.Check(status, nameof(cuMemAlloc_v2));
        long now = Interlocked.Add(ref _allocatedBytes, bytes);
        long peak;
        while (now > (peak = Interlocked.Read(ref _peakAllocatedBytes)) && Interlocked.CompareExchange(ref _peakAllocatedBytes, now, peak) != peak)
        {
        }
        return ptr;
    }

    internal void FreeBytes(CUdeviceptr ptr, long bytes)
    {
        if (ptr.IsNull || IsDisposed)
        {
            return;
        }
        Interlocked.Add(ref _allocatedBytes, -bytes);
        MakeCurrent();
        StatusCheck.Check(cuMemFree_v2(ptr), nameof(cuMemFree_v2));
    }

    // Called from a finalizer: only queue; the owning thread frees with the context current.
    internal void DeferFree(CUdeviceptr ptr, long bytes)
    {
        if (!ptr.IsNull && !IsDisposed)
        {
            Interlocked.Add(ref _allocatedBytes, -bytes);
            _deferredFrees.Enqueue(ptr);
        }
    }

    private void DrainDeferredFrees()
    {
        while (_deferredFrees.TryDequeue(out var ptr))
        {
            _ = cuMemFree_v2(ptr); // best effort: the buffer's owner is long gone
        }
    }

    /// <summary>Releases the primary context (the driver destroys it when no one else retains it).</summary>
    public void Dispose()
    {
        if (_handle == 0)
        {
            return;
        }
        DrainDeferredFrees();
        if (ReferenceEquals(t_current, this))
        {
            t_current = null;
        }
        _handle = 0;
        _ = cuDevicePrimaryCtxRelease_v2(Device.Handle);
    }
}

using System.Runtime.CompilerServices;
using Attention.Native.Interop;
using static Attention.Native.Interop.NativeMethods;

namespace Attention.Native.Runtime;

/// <summary>
/// A typed range of device memory. An owning buffer frees its memory on <see cref="Dispose"/>; a view
/// (<see cref="Slice"/>, <see cref="Cast{TOther}"/>) frees nothing and becomes unusable when its owner is
/// disposed. Using a disposed buffer throws <see cref="ObjectDisposedException"/>; disposing twice is harmless.
/// </summary>
/// <typeparam name="T">An unmanaged element type.</typeparam>
/// <remarks>Thread safety: as a tensor: concurrent reads are safe; an upload, zeroing or copy into it must not overlap any other use. Stream rules: the calls without a stream run on the legacy default stream, which is ordered with every blocking stream (the default kind of <see cref="CudaStream"/>, and the CUDA backend's); <c>Download</c> and <see cref="ToArray"/> return with the data. A call given a stream is queued after that stream's work: <c>Upload</c> and <c>Download</c> then wait for it, <c>Zero</c> and <see cref="CopyTo"/> do not (synchronise the stream before the host or another stream reads the result). A buffer from <c>CudaContext.Allocate</c> returns its memory to the driver on <see cref="Dispose"/>: synchronise first if queued work still uses it (a tensor's buffer goes back to its backend's cache instead, reused in stream order; a buffer over the caller's memory frees nothing).</remarks>
public sealed unsafe class DeviceBuffer<T> : IDisposable
    where T : unmanaged
{
    private readonly DeviceAllocation _allocation;
    private readonly CUdeviceptr _pointer;
    private readonly bool _isView;
    private bool _disposed;

    internal DeviceBuffer(CudaContext context, long length, DeviceMemoryCache? cache = null)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        _allocation = new DeviceAllocation(context, ByteCounts.Of(length, sizeof(T), nameof(length), $"{length} elements of {typeof(T).Name}"), cache);
        _pointer = _allocation.Pointer;
        Length = length;
    }

    /// <summary>A buffer owning (ending the use of) <paramref name="allocation"/>: for the caller's memory, which Dispose leaves allocated.</summary>
    internal DeviceBuffer(DeviceAllocation allocation)
    {
        _allocation = allocation;
        _pointer = allocation.Pointer;
        Length = allocation.Bytes / sizeof(T);
    }

    private DeviceBuffer(DeviceAllocation allocation, CUdeviceptr pointer, long length)
    {
        _allocation = allocation;
        _pointer = pointer;
        Length = length;
        _isView = true;
    }

    /// <summary>The context the memory belongs to.</summary>
    public CudaContext Context => _allocation.Context;

    /// <summary>Number of elements.</summary>
    public long Length { get; }

    /// <summary>Number of bytes.</summary>
    public long ByteLength => Length * sizeof(T);

    /// <summary>The allocation this buffer owns or views.</summary>
    internal DeviceAllocation Allocation => _allocation;

    /// <summary>True for a view that does not own its memory.</summary>
    public bool IsView => _isView;

    /// <summary>True once this buffer, or the buffer it views, is disposed.</summary>
    public bool IsDisposed => _disposed || _allocation.IsFreed;

    /// <summary>The device address of element 0.</summary>
    public CUdeviceptr Pointer
    {
        get
        {
            ThrowIfDisposed();
            return _pointer;
        }
    }

    /// <summary>Copies <paramref name="source"/> to the start of the buffer (synchronous).</summary>
    public void Upload(ReadOnlySpan<T> source)
    {
        _allocation.MarkWritten();
        CheckFits(source.Length, nameof(source));
        if (source.IsEmpty)
        {
            return;
        }
        Context.MakeCurrent();
        fixed (T* src = source)
        {
            StatusCheck.Check(cuMemcpyHtoD_v2(_pointer, src, Bytes(source.Length)), nameof(cuMemcpyHtoD_v2));
        }
    }

    /// <summary>Copies <paramref name="source"/> to the start of the buffer in order on <paramref name="stream"/>, and waits for it.</summary>
    public void Upload(ReadOnlySpan<T> source, CudaStream stream)
    {
        UploadQueued(source, stream);
        // The caller may pass page-locked memory, which the driver reads later: wait for the copy.
        stream.Synchronize();
    }

    /// <summary>
    /// Copies <paramref name="source"/> to the start of the buffer in order on <paramref name="stream"/> without waiting for
    /// the stream. Only for pageable host memory (managed arrays, the stack): the driver copies such a source into its own
    /// staging memory before it returns, so the caller may reuse it at once; page-locked memory would be read later.
    /// </summary>
    internal void UploadQueued(ReadOnlySpan<T> source, CudaStream stream)
    {
        _allocation.MarkWritten();
        ArgumentNullException.ThrowIfNull(stream);
        CheckFits(source.Length, nameof(source));
        if (source.IsEmpty)
        {
            return;
        }
        Context.MakeCurrent();
        fixed (T* src = source)
        {
            StatusCheck.Check(cuMemcpyHtoDAsync_v2(_pointer, src, Bytes(source.Length), stream.Handle), nameof(cuMemcpyHtoDAsync_v2));
        }
    }

    /// <summary>Copies the start of the buffer into <paramref name="destination"/> (synchronous).</summary>
    public void Download(Span<T> destination)
    {
        CheckFits(destination.Length, nameof(destination));
        if (destination.IsEmpty)
        {
            return;
        }
        Context.MakeCurrent();
        fixed (T* dst = destination)
        {
            StatusCheck.Check(cuMemcpyDtoH_v2(dst, _pointer, Bytes(destination.Length)), nameof(cuMemcpyDtoH_v2));
        }
    }

    /// <summary>Copies the start of the buffer into <paramref name="destination"/> after the work queued on <paramref name="stream"/>.</summary>
    public void Download(Span<T> destination, CudaStream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        CheckFits(destination.Length, nameof(destination));
        if (destination.IsEmpty)
        {
            return;
        }
        Context.MakeCurrent();
        fixed (T* dst = destination)
        {
            StatusCheck.Check(cuMemcpyDtoHAsync_v2(dst, _pointer, Bytes(destination.Length), stream.Handle), nameof(cuMemcpyDtoHAsync_v2));
            stream.Synchronize();
        }
    }

    /// <summary>The whole buffer as a new array.</summary>
    public T[] ToArray()
    {
        var result = new T[checked((int)Length)];
        Download(result);
        return result;
    }

    /// <summary>Sets every byte to zero (synchronous).</summary>
    public void Zero()
    {
        _allocation.MarkWritten();
        ThrowIfDisposed();
        if (Length == 0)
        {
            return;
        }
        Context.MakeCurrent();
        StatusCheck.Check(cuMemsetD8_v2(_pointer, 0, (nuint)ByteLength), nameof(cuMemsetD8_v2));
    }

    /// <summary>Sets every byte to zero, in order on <paramref name="stream"/>.</summary>
    public void Zero(CudaStream stream)
    {
        _allocation.MarkWritten();
        ArgumentNullException.ThrowIfNull(stream);
        ThrowIfDisposed();
        if (Length == 0)
        {
            return;
        }
        Context.MakeCurrent();
        StatusCheck.Check(cuMemsetD8Async(_pointer, 0, (nuint)ByteLength, stream.Handle), nameof(cuMemsetD8Async));
    }

    /// <summary>Copies this buffer into <paramref name="destination"/> (device to device, same length).</summary>
    public void CopyTo(DeviceBuffer<T> destination, CudaStream? stream = null)
    {
        destination._allocation.MarkWritten();
        ArgumentNullException.ThrowIfNull(destination);
        ThrowIfDisposed();
        destination.ThrowIfDisposed();
        if (destination.Length != Length)
        {
            throw new ArgumentException($"destination: expected {Length} elements, actual {destination.Length}", nameof(destination));
        }
        if (Length == 0)
        {
            return;
        }
        Context.MakeCurrent();
        if (stream is null)
        {
            StatusCheck.Check(cuMemcpyDtoD_v2(destination._pointer, _pointer, (nuint)ByteLength), nameof(cuMemcpyDtoD_v2));
        }
        else
        {
            StatusCheck.Check(cuMemcpyDtoDAsync_v2(destination._pointer, _pointer, (nuint)ByteLength, stream.Handle), nameof(cuMemcpyDtoDAsync_v2));
        }
    }

    /// <summary>A view of <paramref name="length"/> elements from <paramref name="start"/>; it frees nothing.</summary>
    public DeviceBuffer<T> Slice(long start, long length)
    {
        ThrowIfDisposed();
        if (start < 0 || length < 0 || start > Length - length)
        {
            throw new ArgumentOutOfRangeException(nameof(start), $"expected a range inside [0, {Length}), actual start {start}, length {length}");
        }
        return new DeviceBuffer<T>(_allocation, _pointer + start * sizeof(T), length);
    }

    /// <summary>The same bytes as elements of <typeparamref name="TOther"/> (a view; the byte length must divide evenly).</summary>
    public DeviceBuffer<TOther> Cast<TOther>()
        where TOther : unmanaged
    {
        ThrowIfDisposed();
        if (ByteLength % sizeof(TOther) != 0)
        {
            throw new InvalidOperationException($"Cast<{typeof(TOther).Name}>: expected an element size dividing {ByteLength} bytes, actual {sizeof(TOther)}");
        }
        return DeviceBuffer<TOther>.View(_allocation, _pointer, ByteLength / sizeof(TOther));
    }

    internal static DeviceBuffer<T> View(DeviceAllocation allocation, CUdeviceptr pointer, long length) => new(allocation, pointer, length);

    /// <summary>Frees the memory of an owning buffer; a view only becomes unusable.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        if (!_isView)
        {
            _allocation.Dispose();
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"DeviceBuffer<{typeof(T).Name}>({Length}{(_isView ? ", view" : "")})";

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(IsDisposed, this);

    private static nuint Bytes(int count) => (nuint)((long)count * sizeof(T));

    private void CheckFits(int count, string name)
    {
        ThrowIfDisposed();
        if (count > Length)
        {
            throw new ArgumentException($"{name}: expected at most {Length} elements, actual {count}", name);
        }
    }
}

using Attention.Native.Interop;
using Attention.Native.Runtime;

namespace Attention.Native;

/// <summary>
/// A tensor in device memory, used by the CUDA backend: a block of the backend's own, or the caller's memory
/// (<see cref="CudaBackend.Wrap(CUdeviceptr, Shape, DType)"/>), which it reads and writes in place and never frees.
/// </summary>
/// <remarks>Thread safety: as <see cref="Tensor"/>: concurrent reads are safe, a write must not overlap any other use of the storage. Stream rules: as <see cref="Tensor"/>: ops on it are queued on its backend's stream (<see cref="CudaBackend.Stream"/>), and copying it to or from the host waits for that stream. Work that uses its memory directly (<see cref="Buffer"/>, <see cref="Pointer"/>, or the caller's own use of the memory a wrapped tensor views) stays in order with the backend's ops on that stream; on any other stream, the caller orders it with the backend's work (an event, or the backend's <c>Synchronize()</c>) both before and after.</remarks>
public sealed class DeviceTensor : Tensor
{
    private readonly CudaBackend _backend;

    internal DeviceTensor(CudaBackend backend, Shape shape, DType dtype)
        : base(shape, dtype)
    {
        _backend = backend;
        long bytes = shape.BytesOf(dtype, nameof(shape));
        if (bytes > backend.Device.TotalMemoryBytes)
        {
            throw new ArgumentException($"shape: expected at most {backend.Device.TotalMemoryBytes} bytes (the memory of {backend.Device.Name}), actual {bytes} for {shape} {dtype}", nameof(shape));
        }
        Buffer = new DeviceBuffer<byte>(backend.Context, bytes, backend.MemoryCache);
    }

    /// <summary>A tensor over <paramref name="buffer"/> (the caller's memory: <see cref="CudaBackend.Wrap(CUdeviceptr, Shape, DType)"/>), strided when <paramref name="strides"/> is set.</summary>
    internal DeviceTensor(CudaBackend backend, Shape shape, DType dtype, DeviceBuffer<byte> buffer, long[]? strides = null)
        : base(shape, dtype)
    {
        _backend = backend;
        Buffer = buffer;
        InitStrides(strides);
    }

    private DeviceTensor(CudaBackend backend, DeviceBuffer<byte> view, Shape shape, DType dtype)
        : base(shape, dtype)
    {
        _backend = backend;
        Buffer = view;
    }

    /// <inheritdoc/>
    public override Backend Backend => _backend;

    /// <summary>The device memory (bytes) holding the elements.</summary>
    public DeviceBuffer<byte> Buffer { get; }

    /// <summary>The device address of element 0.</summary>
    public CUdeviceptr Pointer => Buffer.Pointer;

    /// <inheritdoc/>
    public override bool IsDisposed => Buffer.IsDisposed;

    /// <summary>True when the memory is the caller's (<see cref="CudaBackend.Wrap(CUdeviceptr, Shape, DType)"/>), not this library's.</summary>
    public bool IsExternal => Buffer.Allocation.IsExternal;

    /// <inheritdoc/>
    internal override long Version => Buffer.Allocation.Version;

    /// <inheritdoc/>
    public override void CopyFromBytes(ReadOnlySpan<byte> source)
    {
        ThrowIfDisposed();
        if (source.Length != ByteCount)
        {
            throw new ArgumentException($"source: expected {ByteCount} bytes, actual {source.Length}", nameof(source));
        }
        if (IsContiguous)
        {
            Buffer.Upload(source, _backend.Stream);
            return;
        }
        // Scatter into a host image of the storage the view spans and upload that; a view with gaps between its elements
        // (not a plain transpose) keeps what lies in the gaps, so its image is downloaded first.
        var image = new byte[StorageByteCount];
        if (StorageElementCount != ElementCount)
        {
            Buffer.Download(image, _backend.Stream);
        }
        ScatterStrided(source, image);
        Buffer.Upload(image, _backend.Stream);
    }

    /// <inheritdoc/>
    public override void CopyToBytes(Span<byte> destination)
    {
        ThrowIfDisposed();
        if (destination.Length != ByteCount)
        {
            throw new ArgumentException($"destination: expected {ByteCount} bytes, actual {destination.Length}", nameof(destination));
        }
        if (IsContiguous)
        {
            Buffer.Download(destination, _backend.Stream);
            return;
        }
        var image = new byte[StorageByteCount];
        Buffer.Download(image, _backend.Stream);
        GatherStrided(image, destination);
    }

    /// <inheritdoc/>
    private protected override Tensor StorageView(Shape shape) => new DeviceTensor(_backend, Buffer.Slice(0, Buffer.Length), shape, DType);

    /// <inheritdoc/>
    public override Tensor Reshape(Shape shape)
    {
        ThrowIfDisposed();
        ThrowIfStrided(nameof(Reshape));
        if (shape.ElementCount != ElementCount)
        {
            throw new ArgumentException($"shape: expected {ElementCount} elements (from {Shape}), actual {shape.ElementCount} for {shape}", nameof(shape));
        }
        return new DeviceTensor(_backend, Buffer.Slice(0, Buffer.Length), shape, DType);
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing) => Buffer.Dispose();
}

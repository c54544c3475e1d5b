using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Attention.Native;

/// <summary>A tensor in managed host memory, used by the CPU backend.</summary>
/// <remarks>Thread safety: as <see cref="Tensor"/>: concurrent reads are safe, a write must not overlap any other use of the storage.</remarks>
public sealed class HostTensor : Tensor
{
    private readonly HostStorage _storage;
    private readonly int _byteOffset;

    internal HostTensor(CpuBackend backend, Shape shape, DType dtype)
        : base(shape, dtype)
    {
        Backend = backend;
        long bytes = shape.BytesOf(dtype, nameof(shape));
        if (bytes > Array.MaxLength)
        {
            throw new ArgumentException($"shape: expected at most {Array.MaxLength} bytes of host storage, actual {bytes} for {shape} {dtype}", nameof(shape));
        }
        // Pinned so CPU kernels can work through stable addresses (see PinnedBuffer); zero-filled.
        _storage = new HostStorage(GC.AllocateArray<byte>((int)bytes, pinned: true));
    }

    private HostTensor(CpuBackend backend, HostStorage storage, Shape shape, DType dtype, int byteOffset)
        : base(shape, dtype)
    {
        Backend = backend;
        _storage = storage;
        _byteOffset = byteOffset;
    }

    /// <inheritdoc/>
    public override Backend Backend { get; }

    /// <inheritdoc/>
    public override bool IsDisposed => _storage.Data is null;

    /// <summary>The raw bytes of the elements (writable: taking it counts as a write, see <see cref="Tensor.Version"/>).</summary>
    public Span<byte> Bytes
    {
        get
        {
            var bytes = RawBytes;
            _storage.MarkWritten();
            return bytes;
        }
    }

    /// <inheritdoc/>
    internal override long Version => _storage.Version;

    /// <summary>The raw bytes for the library's own reads and kernel outputs (no version change).</summary>
    internal Span<byte> RawBytes
    {
        get
        {
            ThrowIfDisposed();
            return _storage.Data.AsSpan(_byteOffset, checked((int)ByteCount));
        }
    }

    /// <summary>
    /// The elements as a span of <typeparamref name="T"/>, which must match the dtype:
    /// float (F32), double (F64), <see cref="Half"/> (F16) or <see cref="BFloat16"/> (BF16).
    /// </summary>
    public Span<T> AsSpan<T>()
        where T : unmanaged
    {
        CheckElementType<T>();
        return MemoryMarshal.Cast<byte, T>(Bytes);
    }

    internal unsafe PinnedBuffer<T> Pinned<T>()
        where T : unmanaged
    {
        CheckElementType<T>();
        var bytes = RawBytes;
        return new PinnedBuffer<T>((T*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(bytes)), ElementCount);
    }

    private void CheckElementType<T>()
        where T : unmanaged
    {
        var expected = typeof(T) == typeof(float) ? DType.F32
            : typeof(T) == typeof(double) ? DType.F64
            : typeof(T) == typeof(Half) ? DType.F16
            : typeof(T) == typeof(BFloat16) ? (DType?)DType.BF16
            : null;
        if (expected != DType)
        {
            throw new InvalidOperationException($"T: expected the element type of dtype {DType}, actual {typeof(T).Name}");
        }
    }

    /// <inheritdoc/>
    public override void CopyFromBytes(ReadOnlySpan<byte> source)
    {
        var bytes = Bytes; // counts as a write
        if (source.Length != bytes.Length)
        {
            throw new ArgumentException($"source: expected {bytes.Length} bytes, actual {source.Length}", nameof(source));
        }
        source.CopyTo(bytes);
    }

    /// <inheritdoc/>
    public override void CopyToBytes(Span<byte> destination)
    {
        var bytes = RawBytes;
        if (destination.Length != bytes.Length)
        {
            throw new ArgumentException($"destination: expected {bytes.Length} bytes, actual {destination.Length}", nameof(destination));
        }
        bytes.CopyTo(destination);
    }

    /// <inheritdoc/>
    public override Tensor Reshape(Shape shape)
    {
        ThrowIfDisposed();
        if (shape.ElementCount != ElementCount)
        {
            throw new ArgumentException($"shape: expected {ElementCount} elements (from {Shape}), actual {shape.ElementCount} for {shape}", nameof(shape));
        }
        return new HostTensor((CpuBackend)Backend, _storage.AsView(), shape, DType, _byteOffset);
    }

    /// <summary>
    /// The contiguous elements [<paramref name="elementOffset"/>, + shape's count) as a tensor of <paramref name="shape"/> sharing
    /// this storage (one sequence of a ragged batch, one state row of a pool); writes through it are writes to this tensor.
    /// </summary>
    internal HostTensor View(long elementOffset, Shape shape)
    {
        ThrowIfDisposed();
        if (elementOffset < 0 || elementOffset > ElementCount - shape.ElementCount)
        {
            throw new ArgumentOutOfRangeException(nameof(elementOffset), elementOffset, $"elementOffset: expected a range of {shape.ElementCount} elements inside the {ElementCount} of {Shape}, actual offset {elementOffset}");
        }
        return new HostTensor((CpuBackend)Backend, _storage.AsView(), shape, DType, _byteOffset + checked((int)(elementOffset * DType.SizeInBytes())));
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing) => _storage.Release();

    /// <summary>Shared storage: the owner's release empties every view.</summary>
    private sealed class HostStorage(byte[] data)
    {
        private readonly HostStorage? _owner;
        private byte[]? _data = data;
        private long _version;

        private HostStorage(HostStorage owner)
            : this(owner._data!) => _owner = owner;

        public byte[]? Data => _owner is { } o ? (o._data is null ? null : _data) : _data;

        public HostStorage AsView() => new(_owner ?? this);

        // Views share the owner's count.
        public long Version => Interlocked.Read(ref (_owner ?? this)._version);

        public void MarkWritten() => Interlocked.Increment(ref (_owner ?? this)._version);

        // The owner's release empties every view; a view's release detaches only that view.
        public void Release() => _data = null;
    }
}

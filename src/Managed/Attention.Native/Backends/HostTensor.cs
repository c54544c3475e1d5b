using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Attention.Native;

/// <summary>
/// A tensor in host memory, used by the CPU backend: its own pinned array, or memory the caller owns (<see cref="CpuBackend.Wrap{T}(Memory{T}, Shape)"/>,
/// <see cref="CpuBackend.Wrap{T}(System.Numerics.Tensors.Tensor{T})"/>, <see cref="CpuBackend.Wrap(nint, Shape, DType, object?)"/>), which it reads
/// and writes in place.
/// </summary>
/// <remarks>Thread safety: as <see cref="Tensor"/>: concurrent reads are safe, a write must not overlap any other use of the storage (through this tensor or through the caller's own memory). Stream rules: none: host memory, read and written during the calls that use it. Copying it to a CUDA backend (<c>To</c>, or a device tensor's <c>CopyFrom</c>) returns when the copy is done.</remarks>
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
        _storage = HostStorage.Owned(GC.AllocateArray<byte>((int)bytes, pinned: true));
    }

    /// <summary>A tensor over <paramref name="bytes"/> bytes of the caller's memory at <paramref name="pointer"/> (pinned or native).</summary>
    private unsafe HostTensor(CpuBackend backend, Shape shape, DType dtype, long[]? strides, byte* pointer, long bytes, MemoryHandle pin, object? keepAlive)
        : base(shape, dtype)
    {
        Backend = backend;
        InitStrides(strides);
        _storage = HostStorage.External(pointer, checked((int)bytes), pin, keepAlive);
    }

    /// <summary>
    /// Wraps the caller's memory of <paramref name="bytes"/> bytes; <paramref name="pin"/> is released, and
    /// <paramref name="keepAlive"/> let go, when the tensor is disposed.
    /// </summary>
    internal static unsafe HostTensor External(CpuBackend backend, Shape shape, DType dtype, void* pointer, long bytes, MemoryHandle pin, object? keepAlive, string name,
        long[]? strides = null)
    {
        try
        {
            long expected = strides is null ? shape.BytesOf(dtype, nameof(shape)) : checked(Extent(shape, strides) * dtype.SizeInBytes());
            if (bytes != expected)
            {
                throw new ArgumentException($"{name}: expected {expected} bytes for {shape} {dtype}, actual {bytes}", name);
            }
            if (expected > Array.MaxLength)
            {
                throw new ArgumentException($"shape: expected at most {Array.MaxLength} bytes of host storage, actual {expected} for {shape} {dtype}", nameof(shape));
            }
            if (pointer == null && expected > 0)
            {
                throw new ArgumentException($"{name}: expected an address for {expected} bytes, actual null", name);
            }
            if ((nuint)pointer % (nuint)dtype.SizeInBytes() != 0)
            {
                throw new ArgumentException($"{name}: expected an address aligned to the {dtype.SizeInBytes()}-byte elements, actual 0x{(nuint)pointer:x}", name);
            }
            return new HostTensor(backend, shape, dtype, strides, (byte*)pointer, expected, pin, keepAlive);
        }
        catch
        {
            pin.Dispose(); // a refused wrap leaves the caller's memory unpinned
            throw;
        }
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
    public override bool IsDisposed => _storage.IsReleased;

    /// <summary>True when the storage is the caller's memory (a wrapped span, tensor or pointer), not this library's.</summary>
    public bool IsExternal => _storage.IsExternal;

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
            return _storage.Slice(_byteOffset, checked((int)StorageByteCount));
        }
    }

    /// <summary>
    /// The elements as a span of <typeparamref name="T"/>, which must match the dtype:
    /// float (F32), double (F64), <see cref="Half"/> (F16) or <see cref="BFloat16"/> (BF16).
    /// </summary>
    public Span<T> AsSpan<T>()
        where T : unmanaged
    {
        ThrowIfStrided(nameof(AsSpan));
        CheckElementType<T>();
        return MemoryMarshal.Cast<byte, T>(Bytes);
    }

    /// <summary>
    /// The elements as a <see cref="TensorSpan{T}"/> of this tensor's shape (System.Numerics.Tensors), over the same memory: no
    /// copy, and writes through it are writes to this tensor. <typeparamref name="T"/> must match the dtype, as for <see cref="AsSpan{T}"/>.
    /// </summary>
    public TensorSpan<T> AsTensorSpan<T>()
        where T : unmanaged
    {
        var span = AsSpan<T>();
        Span<nint> lengths = stackalloc nint[Shape.Rank];
        for (int i = 0; i < lengths.Length; i++)
        {
            lengths[i] = Shape[i];
        }
        return new TensorSpan<T>(span, lengths);
    }

    internal unsafe PinnedBuffer<T> Pinned<T>()
        where T : unmanaged
    {
        CheckElementType<T>();
        var bytes = RawBytes;
        return new PinnedBuffer<T>((T*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(bytes)), StorageElementCount);
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
        if (source.Length != ByteCount)
        {
            throw new ArgumentException($"source: expected {ByteCount} bytes, actual {source.Length}", nameof(source));
        }
        if (IsContiguous)
        {
            source.CopyTo(bytes);
        }
        else
        {
            ScatterStrided(source, bytes);
        }
    }

    /// <inheritdoc/>
    public override void CopyToBytes(Span<byte> destination)
    {
        var bytes = RawBytes;
        if (destination.Length != ByteCount)
        {
            throw new ArgumentException($"destination: expected {ByteCount} bytes, actual {destination.Length}", nameof(destination));
        }
        if (IsContiguous)
        {
            bytes.CopyTo(destination);
        }
        else
        {
            GatherStrided(bytes, destination);
        }
    }

    /// <inheritdoc/>
    private protected override Tensor StorageView(Shape shape) => new HostTensor((CpuBackend)Backend, _storage.AsView(), shape, DType, _byteOffset);

    /// <inheritdoc/>
    public override Tensor Reshape(Shape shape)
    {
        ThrowIfDisposed();
        ThrowIfStrided(nameof(Reshape));
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

    /// <summary>
    /// Shared storage: this library's pinned array, or the caller's memory (a pointer, with the pin of a wrapped Memory and a
    /// reference keeping its owner alive). The owner's release empties every view (and lets the caller's memory go); a view's
    /// release detaches only that view.
    /// </summary>
    private sealed unsafe class HostStorage
    {
        private readonly HostStorage? _owner;
        private readonly byte[]? _array;
        private readonly byte* _pointer;
        private readonly int _length;
        private PinRelease? _pin;
        private object? _keepAlive;
        private bool _released;
        private long _version;

        private HostStorage(HostStorage? owner, byte[]? array, byte* pointer, int length, PinRelease? pin, object? keepAlive)
        {
            _owner = owner;
            _array = array;
            _pointer = pointer;
            _length = length;
            _pin = pin;
            _keepAlive = keepAlive;
        }

        public static HostStorage Owned(byte[] array) => new(null, array, null, array.Length, null, null);

        public static HostStorage External(byte* pointer, int length, MemoryHandle pin, object? keepAlive) =>
            new(null, null, pointer, length, new PinRelease(pin), keepAlive);

        private HostStorage Root => _owner ?? this;

        public bool IsReleased => _released || Root._released;

        public bool IsExternal => Root._array is null;

        public Span<byte> Slice(int offset, int length)
        {
            var root = Root;
            return root._array is { } array ? array.AsSpan(offset, length) : new Span<byte>(root._pointer, root._length).Slice(offset, length);
        }

        public HostStorage AsView() => new(Root, null, null, 0, null, null);

        // Views share the owner's count.
        public long Version => Interlocked.Read(ref Root._version);

        public void MarkWritten() => Interlocked.Increment(ref Root._version);

        public void Release()
        {
            if (_released)
            {
                return;
            }
            _released = true;
            if (_owner is null)
            {
                _pin?.Dispose();
                _pin = null;
                _keepAlive = null;
            }
        }
    }

    /// <summary>The pin of a wrapped Memory: released by the tensor's Dispose, or, for a leaked tensor, once nothing reaches it.</summary>
    private sealed class PinRelease(MemoryHandle pin) : IDisposable
    {
        private MemoryHandle _pin = pin;

        ~PinRelease() => _pin.Dispose();

        public void Dispose()
        {
            _pin.Dispose();
            _pin = default;
            GC.SuppressFinalize(this);
        }
    }
}

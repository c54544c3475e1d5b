namespace Attention.Native;

/// <summary>
/// A dense row-major tensor owned by a <see cref="Native.Backend"/>: host memory for the CPU backend,
/// device memory for the CUDA backend. Dispose it to free its memory; a view made by
/// <see cref="Reshape"/> shares the storage and becomes unusable when its owner is disposed.
/// </summary>
/// <remarks>Thread safety: reads (CopyTo, ToArray, use as an op input) may run on many threads at once; a write (CopyFrom, a writable span, use as an op output) must not overlap any other use of the same storage. Not detected. Stream rules: a tensor of the CUDA backend is used in order on its backend's stream: reads to the host (<c>CopyTo</c>, <c>ToArray</c>, <c>To</c>) wait for the work queued before them, and writes from the host (<c>CopyFrom</c>) return when the copy is done; an op that uses the tensor is queued after both. A host tensor has no stream: every access is immediate.</remarks>
public abstract class Tensor : IDisposable
{
    private protected Tensor(Shape shape, DType dtype)
    {
        Shape = shape;
        DType = dtype;
    }

    /// <summary>The shape.</summary>
    public Shape Shape { get; }

    /// <summary>The element type.</summary>
    public DType DType { get; }

    // Element strides of a strided view (Transpose); null for the row-major layout of the shape.
    private long[]? _strides;

    /// <summary>
    /// The distance in elements between neighbours along each axis. A tensor is row-major (<see cref="IsContiguous"/>) unless it
    /// is a strided view made by <see cref="Transpose"/>.
    /// </summary>
    public IReadOnlyList<long> Strides => _strides ?? ContiguousStrides(Shape);

    /// <summary>
    /// True for the row-major layout of <see cref="Shape"/>. Ops take contiguous tensors only, except
    /// <see cref="Ops.SoftmaxAttention"/>, whose q, k, v, o and gradients may be any view whose last axis is contiguous
    /// (e.g. <c>[B, H, T, d]</c> memory seen as <c>[B, T, H, d]</c> through <see cref="Transpose"/>).
    /// </summary>
    public bool IsContiguous => _strides is null;

    /// <summary>The element strides when strided, else null (the row-major layout).</summary>
    internal long[]? StridesOrNull => _strides;

    /// <summary>
    /// Elements of storage the view spans from its first element: one past its farthest element (the element count for a
    /// row-major tensor or a transpose; more for a view with gaps, such as q of a fused [B, T, 3, H, d] projection).
    /// </summary>
    internal long StorageElementCount => _strides is null ? ElementCount : Extent(Shape, _strides);

    /// <summary>Bytes of storage the view spans (<see cref="StorageElementCount"/> elements).</summary>
    internal long StorageByteCount => checked(StorageElementCount * DType.SizeInBytes());

    /// <summary>One past the farthest element of a view of <paramref name="shape"/> with <paramref name="strides"/> (0 when empty).</summary>
    internal static long Extent(Shape shape, IReadOnlyList<long> strides)
    {
        if (shape.ElementCount == 0)
        {
            return 0;
        }
        long last = 0;
        for (int i = 0; i < shape.Rank; i++)
        {
            last = checked(last + ((shape[i] - 1) * strides[i]));
        }
        return checked(last + 1);
    }

    /// <summary>
    /// Checks <paramref name="strides"/> for a caller's view of <paramref name="shape"/> (one per axis, none negative, the last
    /// axis contiguous as every op needs) and returns them, or null for the row-major layout; <paramref name="name"/> names the argument.
    /// </summary>
    internal static long[]? CheckStrides(Shape shape, IReadOnlyList<long> strides, string name)
    {
        ArgumentNullException.ThrowIfNull(strides, name);
        if (strides.Count != shape.Rank)
        {
            throw new ArgumentException($"{name}: expected {shape.Rank} strides for {shape}, actual {strides.Count}", name);
        }
        if (strides.Any(s => s < 0) || (shape.Rank > 0 && shape[-1] > 1 && strides[^1] != 1))
        {
            throw new ArgumentException($"{name}: expected non-negative strides with a contiguous last axis (stride 1), actual [{string.Join(", ", strides)}]", name);
        }
        var copy = strides.ToArray();
        return copy.AsSpan().SequenceEqual(ContiguousStrides(shape)) ? null : copy;
    }

    /// <summary>Makes this new tensor (made by a wrap, before any use) a view with <paramref name="strides"/> (null: row-major).</summary>
    private protected void InitStrides(long[]? strides) => _strides = strides;

    /// <summary>
    /// A view of this storage with axes <paramref name="axis0"/> and <paramref name="axis1"/> swapped (negative axes count from
    /// the end), no copy: <c>[B, H, T, d]</c> memory becomes a <c>[B, T, H, d]</c> view with <c>Transpose(1, 2)</c>. Reading it
    /// (<see cref="CopyTo(Span{float})"/>, <see cref="ToArray"/>) gathers the elements in the view's row-major order.
    /// </summary>
    public Tensor Transpose(int axis0, int axis1)
    {
        ThrowIfDisposed();
        int rank = Shape.Rank;
        int a = axis0 < 0 ? axis0 + rank : axis0, b = axis1 < 0 ? axis1 + rank : axis1;
        if (a < 0 || a >= rank)
        {
            throw new ArgumentOutOfRangeException(nameof(axis0), axis0, $"axis0: expected an axis of a rank-{rank} tensor, actual {axis0}");
        }
        if (b < 0 || b >= rank)
        {
            throw new ArgumentOutOfRangeException(nameof(axis1), axis1, $"axis1: expected an axis of a rank-{rank} tensor, actual {axis1}");
        }
        var dims = new int[rank];
        for (int i = 0; i < rank; i++)
        {
            dims[i] = Shape[i];
        }
        var strides = Strides.ToArray();
        (dims[a], dims[b]) = (dims[b], dims[a]);
        (strides[a], strides[b]) = (strides[b], strides[a]);
        var shape = new Shape(dims);
        var view = StorageView(shape);
        view._strides = strides.AsSpan().SequenceEqual(ContiguousStrides(shape)) ? null : strides;
        return view;
    }

    /// <summary>A tensor of <paramref name="shape"/> (the same element count) over this storage from the same first element.</summary>
    private protected abstract Tensor StorageView(Shape shape);

    /// <summary>The row-major strides of <paramref name="shape"/>.</summary>
    internal static long[] ContiguousStrides(Shape shape)
    {
        var strides = new long[shape.Rank];
        long stride = 1;
        for (int i = shape.Rank - 1; i >= 0; i--)
        {
            strides[i] = stride;
            stride *= shape[i];
        }
        return strides;
    }

    /// <summary>Copies this strided view's elements from <paramref name="storage"/> (its memory, from its first element) into <paramref name="logical"/>, row-major in the view's shape.</summary>
    private protected void GatherStrided(ReadOnlySpan<byte> storage, Span<byte> logical)
    {
        int size = DType.SizeInBytes();
        Span<int> index = stackalloc int[Shape.Rank];
        long offset = 0;
        for (long e = 0; e < ElementCount; e++, offset = NextOffset(index, offset))
        {
            storage.Slice(checked((int)(offset * size)), size).CopyTo(logical.Slice(checked((int)(e * size)), size));
        }
    }

    /// <summary>The inverse of <see cref="GatherStrided"/>: the view's elements from <paramref name="logical"/> into <paramref name="storage"/>.</summary>
    private protected void ScatterStrided(ReadOnlySpan<byte> logical, Span<byte> storage)
    {
        int size = DType.SizeInBytes();
        Span<int> index = stackalloc int[Shape.Rank];
        long offset = 0;
        for (long e = 0; e < ElementCount; e++, offset = NextOffset(index, offset))
        {
            logical.Slice(checked((int)(e * size)), size).CopyTo(storage.Slice(checked((int)(offset * size)), size));
        }
    }

    // Steps the row-major index of a strided view to the next element and returns that element's storage offset.
    private long NextOffset(Span<int> index, long offset)
    {
        var strides = _strides!;
        for (int i = index.Length - 1; i >= 0; i--)
        {
            offset += strides[i];
            if (++index[i] < Shape[i])
            {
                return offset;
            }
            offset -= strides[i] * Shape[i];
            index[i] = 0;
        }
        return offset;
    }

    /// <summary>Throws when this is a strided view (for the operations that need the row-major layout).</summary>
    private protected void ThrowIfStrided(string what)
    {
        if (!IsContiguous)
        {
            throw new InvalidOperationException($"{what}: expected a contiguous tensor, actual a strided view {Shape} with strides [{string.Join(", ", Strides)}]");
        }
    }

    /// <summary>The backend whose memory holds the data.</summary>
    public abstract Backend Backend { get; }

    /// <summary>Number of elements.</summary>
    public long ElementCount => Shape.ElementCount;

    /// <summary>Number of bytes of storage.</summary>
    public long ByteCount => checked(ElementCount * DType.SizeInBytes());

    /// <summary>True once this tensor, or the tensor whose storage it views, was disposed.</summary>
    public abstract bool IsDisposed { get; }

    /// <summary>
    /// A count of writes to the storage through the public API (copies in, writable spans, device uploads), shared by
    /// views; a training pass compares it to detect parameters changed between its forward and its backward.
    /// </summary>
    internal abstract long Version { get; }

    /// <summary>Copies raw element bytes (in this tensor's dtype) into the tensor.</summary>
    public abstract void CopyFromBytes(ReadOnlySpan<byte> source);

    /// <summary>Copies the raw element bytes out of the tensor.</summary>
    public abstract void CopyToBytes(Span<byte> destination);

    /// <summary>A tensor of another shape with the same element count sharing this storage (no copy).</summary>
    public abstract Tensor Reshape(Shape shape);

    /// <summary>Writes <paramref name="source"/>, converted to this tensor's dtype.</summary>
    public void CopyFrom(ReadOnlySpan<float> source)
    {
        CheckLength(source.Length, nameof(source));
        var raw = new byte[ByteCount];
        ElementConvert.FromSingle(source, DType, raw);
        CopyFromBytes(raw);
    }

    /// <summary>Writes <paramref name="source"/>, converted to this tensor's dtype.</summary>
    public void CopyFrom(ReadOnlySpan<double> source)
    {
        CheckLength(source.Length, nameof(source));
        var raw = new byte[ByteCount];
        ElementConvert.FromDouble(source, DType, raw);
        CopyFromBytes(raw);
    }

    /// <summary>Reads the elements, converted to float.</summary>
    public void CopyTo(Span<float> destination)
    {
        CheckLength(destination.Length, nameof(destination));
        var raw = new byte[ByteCount];
        CopyToBytes(raw);
        ElementConvert.ToSingle(raw, DType, destination);
    }

    /// <summary>Reads the elements, converted to double.</summary>
    public void CopyTo(Span<double> destination)
    {
        CheckLength(destination.Length, nameof(destination));
        var raw = new byte[ByteCount];
        CopyToBytes(raw);
        ElementConvert.ToDouble(raw, DType, destination);
    }

    /// <summary>The elements as a new float array.</summary>
    public float[] ToArray()
    {
        var result = new float[checked((int)ElementCount)];
        CopyTo(result);
        return result;
    }

    /// <summary>The elements as a new double array.</summary>
    public double[] ToDoubleArray()
    {
        var result = new double[checked((int)ElementCount)];
        CopyTo(result);
        return result;
    }

    /// <summary>
    /// This tensor on <paramref name="backend"/> (same shape and dtype). On its own backend it is not copied: the result is a
    /// view sharing this storage (disposing the view frees nothing). Otherwise a copy; a host tensor crosses once, without an
    /// intermediate buffer.
    /// </summary>
    public Tensor To(Backend backend)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ThrowIfDisposed();
        if (ReferenceEquals(backend, Backend))
        {
            return Reshape(Shape);
        }
        if (this is HostTensor { IsContiguous: true } host)
        {
            return backend.Create(Shape, DType, copy => copy.CopyFromBytes(host.RawBytes));
        }
        return backend.Create(Shape, DType, copy =>
        {
            if (copy is HostTensor target)
            {
                CopyToBytes(target.Bytes);
            }
            else
            {
                var raw = new byte[ByteCount];
                CopyToBytes(raw);
                copy.CopyFromBytes(raw);
            }
        });
    }

    /// <summary>Frees the storage (a view frees nothing). Calling it twice is harmless.</summary>
    public void Dispose()
    {
        Dispose(disposing: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases the storage.</summary>
    protected abstract void Dispose(bool disposing);

    /// <inheritdoc/>
    public override string ToString() => $"Tensor({DType}, {Shape}, {Backend.Name})";

    /// <summary>Throws <see cref="ObjectDisposedException"/> when the storage is gone.</summary>
    protected internal void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(IsDisposed, this);

    private void CheckLength(int length, string name)
    {
        ThrowIfDisposed();
        if (length != ElementCount)
        {
            throw new ArgumentException($"{name}: expected {ElementCount} elements (shape {Shape}), actual {length}", name);
        }
    }
}

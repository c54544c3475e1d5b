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
        if (this is HostTensor host)
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

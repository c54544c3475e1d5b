using System.Collections;
using System.Globalization;

namespace Attention.Native;

/// <summary>An immutable tensor shape (row-major; the last axis is contiguous).</summary>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public readonly struct Shape : IEquatable<Shape>, IReadOnlyList<int>
{
    private readonly int[]? _dims;
    private readonly long _elements;

    /// <summary>
    /// Creates a shape; every dimension must be non-negative and their product must fit a signed 64-bit count
    /// (so every element count and byte count derived from a shape is computed without wrapping).
    /// </summary>
    public Shape(params ReadOnlySpan<int> dims)
    {
        long n = 1;
        bool overflow = false;
        foreach (int d in dims)
        {
            if (d < 0)
            {
                throw new ArgumentException($"dims: expected non-negative dimensions, actual {Format(dims)}", nameof(dims));
            }
            // Checked in 128 bits so a zero later in the list still yields 0, not an overflow.
            Int128 product = (Int128)n * d;
            if (product > long.MaxValue)
            {
                overflow = true;
                n = 1;
                continue;
            }
            n = (long)product;
        }
        if (overflow && !dims.Contains(0))
        {
            throw new ArgumentException($"dims: expected dimensions whose product is at most {long.MaxValue} elements, actual {Format(dims)}", nameof(dims));
        }
        _dims = dims.ToArray();
        _elements = overflow ? 0 : n;
    }

    /// <summary>Number of axes.</summary>
    public int Rank => _dims?.Length ?? 0;

    /// <summary>Number of axes (same as <see cref="Rank"/>).</summary>
    public int Count => Rank;

    /// <summary>Size of axis <paramref name="axis"/>; negative axes count from the end.</summary>
    public int this[int axis]
    {
        get
        {
            int rank = Rank;
            int a = axis < 0 ? axis + rank : axis;
            if ((uint)a >= (uint)rank)
            {
                throw new ArgumentOutOfRangeException(nameof(axis), axis, $"axis out of range for shape {this}");
            }
            return _dims![a];
        }
    }

    /// <summary>Product of all dimensions (1 for a scalar shape).</summary>
    public long ElementCount => _dims is null ? 1 : _elements;

    /// <summary>
    /// Bytes of a dense tensor of this shape in <paramref name="dtype"/>; throws <see cref="ArgumentException"/> naming
    /// <paramref name="name"/> and the shape when the count does not fit a signed 64-bit byte count.
    /// </summary>
    internal long BytesOf(DType dtype, string name) => ByteCounts.Of(ElementCount, dtype.SizeInBytes(), name, $"{this} {dtype}");

    /// <summary>The dimensions.</summary>
    public ReadOnlySpan<int> Dims => _dims;

    /// <summary>Product of all dimensions but the last: the number of rows of the matrix view.</summary>
    public long Rows
    {
        get
        {
            long n = 1;
            for (int i = 0; i < Rank - 1; i++)
            {
                n = checked(n * _dims![i]);
            }
            return n;
        }
    }

    /// <summary>A new shape with the last axis replaced.</summary>
    public Shape WithLast(int last)
    {
        var dims = Dims.ToArray();
        dims[^1] = last;
        return new Shape(dims);
    }

    /// <inheritdoc/>
    public bool Equals(Shape other) => Dims.SequenceEqual(other.Dims);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is Shape s && Equals(s);

    /// <inheritdoc/>
    public override int GetHashCode()
    {
        var h = new HashCode();
        foreach (int d in Dims)
        {
            h.Add(d);
        }
        return h.ToHashCode();
    }

    /// <summary>Formats as <c>[2, 3, 4]</c>, the form used in error messages.</summary>
    public override string ToString() => Format(Dims);

    internal static string Format(ReadOnlySpan<int> dims)
    {
        var parts = new string[dims.Length];
        for (int i = 0; i < dims.Length; i++)
        {
            parts[i] = dims[i].ToString(CultureInfo.InvariantCulture);
        }
        return "[" + string.Join(", ", parts) + "]";
    }

    /// <inheritdoc/>
    public IEnumerator<int> GetEnumerator() => ((IEnumerable<int>)(_dims ?? [])).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>Shape equality.</summary>
    public static bool operator ==(Shape left, Shape right) => left.Equals(right);

    /// <summary>Shape inequality.</summary>
    public static bool operator !=(Shape left, Shape right) => !left.Equals(right);
}

using System.Collections;
using System.Globalization;

namespace Attention.Native;

/// <summary>An immutable tensor shape (row-major; the last axis is contiguous).</summary>
public readonly struct Shape : IEquatable<Shape>, IReadOnlyList<int>
{
    private readonly int[]? _dims;

    /// <summary>Creates a shape; every dimension must be non-negative.</summary>
    public Shape(params ReadOnlySpan<int> dims)
    {
        foreach (int d in dims)
        {
            if (d < 0)
            {
                throw new ArgumentException($"dims: expected non-negative dimensions, actual {Format(dims)}", nameof(dims));
            }
        }
        _dims = dims.ToArray();
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
    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (int d in Dims)
            {
                n = checked(n * d);
            }
            return n;
        }
    }

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

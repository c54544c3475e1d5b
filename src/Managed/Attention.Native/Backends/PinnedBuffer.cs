using System.Runtime.CompilerServices;

namespace Attention.Native;

/// <summary>
/// A bounds-checked view of pinned host memory that, unlike a span, can be captured by the lambdas of
/// <see cref="Parallel.For(int, int, Action{int})"/>. Host tensors live in pinned arrays, so the address is stable.
/// </summary>
/// <typeparam name="T">The element type.</typeparam>
internal readonly unsafe struct PinnedBuffer<T>
    where T : unmanaged
{
    private readonly T* _data;

    public PinnedBuffer(T* data, long length)
    {
        _data = data;
        Length = length;
    }

    public long Length { get; }

    public bool IsEmpty => Length == 0;

    public ref T this[long index]
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            if ((ulong)index >= (ulong)Length)
            {
                ThrowOutOfRange(index, 1);
            }
            return ref _data[index];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Span<T> Slice(long start, int length)
    {
        if (start < 0 || length < 0 || start > Length - length)
        {
            ThrowOutOfRange(start, length);
        }
        return new Span<T>(_data + start, length);
    }

    public Span<T> Span => new(_data, checked((int)Length));

    /// <summary>The elements [<paramref name="start"/>, +<paramref name="length"/>) as a buffer of their own (one sequence of a ragged batch); empty stays empty.</summary>
    public PinnedBuffer<T> Part(long start, long length)
    {
        if (IsEmpty)
        {
            return this;
        }
        if (start < 0 || length < 0 || start > Length - length)
        {
            ThrowOutOfRange(start, length);
        }
        return new PinnedBuffer<T>(_data + start, length);
    }

    private void ThrowOutOfRange(long start, long count) =>
        throw new ArgumentOutOfRangeException(nameof(start), $"range [{start}, {start + count}) outside buffer of {Length} elements");
}

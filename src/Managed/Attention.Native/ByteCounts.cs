namespace Attention.Native;

/// <summary>Element-count × element-size products, computed so that they never wrap.</summary>
internal static class ByteCounts
{
    /// <summary>
    /// <paramref name="count"/> × <paramref name="elementSize"/>, or an <see cref="ArgumentException"/> naming
    /// <paramref name="name"/> and <paramref name="what"/> when the product passes <see cref="long.MaxValue"/>.
    /// </summary>
    public static long Of(long count, int elementSize, string name, string what)
    {
        if (count < 0)
        {
            throw new ArgumentException($"{name}: expected a non-negative element count, actual {count} for {what}", name);
        }
        if (elementSize > 0 && count > long.MaxValue / elementSize)
        {
            throw new ArgumentException($"{name}: expected at most {long.MaxValue} bytes, actual {(Int128)count * elementSize} bytes for {what}", name);
        }
        return count * elementSize;
    }
}

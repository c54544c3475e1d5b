using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace Attention.Native;

/// <summary>Converts raw element bytes of any <see cref="DType"/> to and from float/double.</summary>
internal static class ElementConvert
{
    public static void ToSingle(ReadOnlySpan<byte> raw, DType dtype, Span<float> destination)
    {
        switch (dtype)
        {
            case DType.F32:
                MemoryMarshal.Cast<byte, float>(raw).CopyTo(destination);
                break;
            case DType.F64:
                TensorPrimitives.ConvertTruncating<double, float>(MemoryMarshal.Cast<byte, double>(raw), destination);
                break;
            case DType.F16:
                TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(raw), destination);
                break;
            case DType.BF16:
                var bits = MemoryMarshal.Cast<byte, ushort>(raw);
                for (int i = 0; i < bits.Length; i++)
                {
                    destination[i] = BitConverter.UInt32BitsToSingle((uint)bits[i] << 16);
                }
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype");
        }
    }

    public static void FromSingle(ReadOnlySpan<float> source, DType dtype, Span<byte> raw)
    {
        switch (dtype)
        {
            case DType.F32:
                source.CopyTo(MemoryMarshal.Cast<byte, float>(raw));
                break;
            case DType.F64:
                TensorPrimitives.ConvertChecked<float, double>(source, MemoryMarshal.Cast<byte, double>(raw));
                break;
            case DType.F16:
                TensorPrimitives.ConvertToHalf(source, MemoryMarshal.Cast<byte, Half>(raw));
                break;
            case DType.BF16:
                var bits = MemoryMarshal.Cast<byte, ushort>(raw);
                for (int i = 0; i < source.Length; i++)
                {
                    bits[i] = BFloat16.RoundToBits(source[i]);
                }
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype");
        }
    }

    public static void ToDouble(ReadOnlySpan<byte> raw, DType dtype, Span<double> destination)
    {
        if (dtype == DType.F64)
        {
            MemoryMarshal.Cast<byte, double>(raw).CopyTo(destination);
            return;
        }
        var tmp = new float[destination.Length];
        ToSingle(raw, dtype, tmp);
        TensorPrimitives.ConvertChecked<float, double>(tmp, destination);
    }

    public static void FromDouble(ReadOnlySpan<double> source, DType dtype, Span<byte> raw)
    {
        if (dtype == DType.F64)
        {
            source.CopyTo(MemoryMarshal.Cast<byte, double>(raw));
            return;
        }
        var tmp = new float[source.Length];
        TensorPrimitives.ConvertTruncating<double, float>(source, tmp);
        FromSingle(tmp, dtype, raw);
    }
}

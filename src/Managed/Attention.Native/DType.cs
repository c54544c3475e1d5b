namespace Attention.Native;

/// <summary>Element type of a tensor. Names match the safetensors dtype strings.</summary>
public enum DType
{
    /// <summary>IEEE 754 binary32.</summary>
    F32,
    /// <summary>bfloat16 (8-bit exponent, 7-bit mantissa); computed with fp32 accumulation.</summary>
    BF16,
    /// <summary>IEEE 754 binary16; computed with fp32 accumulation.</summary>
    F16,
    /// <summary>IEEE 754 binary64. CPU backend only: the precision the gradient checker runs the reference in.</summary>
    F64,
}

/// <summary>Size and naming helpers for <see cref="DType"/>.</summary>
/// <remarks>Thread safety: stateless; safe from any thread.</remarks>
public static class DTypeExtensions
{
    /// <summary>Bytes per element.</summary>
    public static int SizeInBytes(this DType dtype) => dtype switch
    {
        DType.F32 => 4,
        DType.BF16 or DType.F16 => 2,
        DType.F64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    /// <summary>True for the 16-bit storage types that compute in fp32.</summary>
    public static bool IsHalfPrecision(this DType dtype) => dtype is DType.BF16 or DType.F16;
}

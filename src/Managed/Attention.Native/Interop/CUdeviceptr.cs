namespace Attention.Native.Interop;

/// <summary>A device address (cuda.h <c>CUdeviceptr</c>, 64-bit). Byte offsets add to it.</summary>
/// <param name="Value">The raw address.</param>
/// <remarks>Thread safety: immutable; safe to share between threads. Stream rules: a plain address; work that uses it follows the rules of the buffer it points into (<see cref="Attention.Native.Runtime.DeviceBuffer{T}"/>).</remarks>
public readonly record struct CUdeviceptr(ulong Value)
{
    /// <summary>The null device address.</summary>
    public static CUdeviceptr Null => default;

    /// <summary>True for the null address.</summary>
    public bool IsNull => Value == 0;

    /// <summary>The address <paramref name="bytes"/> further on.</summary>
    public static CUdeviceptr operator +(CUdeviceptr pointer, long bytes) => new(pointer.Value + (ulong)bytes);

    /// <summary>The address <paramref name="bytes"/> further on.</summary>
    public CUdeviceptr Add(long bytes) => this + bytes;

    /// <inheritdoc/>
    public override string ToString() => $"0x{Value:x}";
}

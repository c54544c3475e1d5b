namespace Attention.Native.Runtime;

/// <summary>
/// One kernel file and the kernel instantiations to compile from it (NVRTC name expressions such as
/// <c>rope_forward&lt;float&gt;</c>). Each op's CUDA launcher declares its program; <c>Ops.KernelCatalog</c>
/// lists them all so every kernel is compile-checked.
/// </summary>
/// <param name="SourceName">The kernel file name in <c>cuda/</c>, e.g. <c>rope.cu</c>.</param>
/// <param name="NameExpressions">The kernels to instantiate, exactly as NVRTC name expressions.</param>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed record KernelProgram(string SourceName, IReadOnlyList<string> NameExpressions)
{
    /// <summary>Instantiations of each kernel template for each storage type (float, bf16_t, half_t).</summary>
    public static KernelProgram ForStorageTypes(string sourceName, params string[] templates)
    {
        ArgumentNullException.ThrowIfNull(templates);
        var names = new List<string>();
        foreach (var template in templates)
        {
            foreach (var type in StorageTypeNames)
            {
                names.Add($"{template}<{type}>");
            }
        }
        return new KernelProgram(sourceName, names);
    }

    /// <summary>The CUDA type names of the storage dtypes (see cuda/include/common.cuh).</summary>
    public static IReadOnlyList<string> StorageTypeNames { get; } = ["float", "bf16_t", "half_t"];

    /// <summary>The CUDA type name for <paramref name="dtype"/> (F32, BF16, F16).</summary>
    public static string StorageTypeName(DType dtype) => dtype switch
    {
        DType.F32 => "float",
        DType.BF16 => "bf16_t",
        DType.F16 => "half_t",
        _ => throw new ArgumentException($"dtype: expected F32, BF16 or F16 on the CUDA backend, actual {dtype}", nameof(dtype)),
    };

    /// <summary>Value equality over the name list (records compare lists by reference).</summary>
    public bool Equals(KernelProgram? other) =>
        other is not null && SourceName == other.SourceName && NameExpressions.SequenceEqual(other.NameExpressions);

    /// <inheritdoc/>
    public override int GetHashCode()
    {
        var h = new HashCode();
        h.Add(SourceName);
        foreach (var n in NameExpressions)
        {
            h.Add(n);
        }
        return h.ToHashCode();
    }
}

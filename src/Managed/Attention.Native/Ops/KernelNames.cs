namespace Attention.Native.Ops;

/// <summary>The name expressions of one kernel template for each storage dtype, built once.</summary>
internal sealed class KernelNames(string template)
{
    private readonly string[] _names = [.. Runtime.KernelProgram.StorageTypeNames.Select(t => $"{template}<{t}>")];

    /// <summary>The template, e.g. <c>rope_forward</c>.</summary>
    public string Template { get; } = template;

    /// <summary>The instantiation for <paramref name="dtype"/>, e.g. <c>rope_forward&lt;bf16_t&gt;</c>.</summary>
    public string this[DType dtype] => dtype switch
    {
        DType.F32 => _names[0],
        DType.BF16 => _names[1],
        DType.F16 => _names[2],
        _ => throw new ArgumentException($"dtype: expected F32, BF16 or F16 on the CUDA backend, actual {dtype}", nameof(dtype)),
    };
}

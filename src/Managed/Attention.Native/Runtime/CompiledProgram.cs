namespace Attention.Native.Runtime;

/// <summary>The output of compiling a <see cref="KernelProgram"/> for one target.</summary>
/// <param name="Key">The cache key (SHA-256, hex).</param>
/// <param name="Target">The NVRTC target: <c>sm_XY</c> for CUBIN, <c>compute_XY</c> for PTX.</param>
/// <param name="Image">CUBIN bytes, or PTX text bytes (null-terminated) for a PTX target.</param>
/// <param name="LoweredNames">Name expression → mangled kernel name in the image.</param>
/// <param name="Log">The compiler's log (warnings), possibly empty.</param>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed record CompiledProgram(string Key, string Target, byte[] Image, IReadOnlyDictionary<string, string> LoweredNames, string Log)
{
    /// <summary>True when the image is PTX (the driver JIT-compiles it at load).</summary>
    public bool IsPtx => Target.StartsWith("compute_", StringComparison.Ordinal);

    /// <summary>Where this came from in this process: compiled now, read from disk, or from memory.</summary>
    public CompileOrigin Origin { get; init; }
}

/// <summary>Where a <see cref="CompiledProgram"/> came from.</summary>
public enum CompileOrigin
{
    /// <summary>NVRTC compiled it in this call.</summary>
    Compiled,
    /// <summary>Read from the on-disk cache.</summary>
    DiskCache,
    /// <summary>Already compiled in this process.</summary>
    Memory,
}

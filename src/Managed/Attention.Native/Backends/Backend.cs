using Attention.Native.Ops;

namespace Attention.Native;

/// <summary>Which implementation a backend is.</summary>
public enum BackendKind
{
    /// <summary>The managed CPU reference.</summary>
    Cpu,
    /// <summary>NVIDIA GPUs through the CUDA driver API, NVRTC and cuBLAS.</summary>
    Cuda,
}

/// <summary>
/// Where tensors live and ops run. The CPU backend is the reference every GPU result is tested against;
/// the CUDA backend runs the kernels in <c>cuda/</c>. Ops (<see cref="Linear"/>, <see cref="Rope"/>,
/// <see cref="RmsNorm"/>, …) validate their arguments once and then dispatch to the tensors' backend.
/// </summary>
/// <remarks>Thread safety: safe to use from many threads. The CPU backend shares no state between calls. The CUDA backend queues every op on its current stream, with that stream's scratch buffers and one cuBLAS handle: layer calls (forward, backward, cache steps) take the backend for their whole duration, so they are serialised; direct op calls must come from one thread at a time per backend. Stream rules: the CPU backend has no stream: an op has finished when its call returns. The CUDA backend queues every op, upload and layer call on its current stream (<see cref="CudaBackend.Stream"/>: its own, or the caller's inside <see cref="CudaBackend.UseStream"/>) in call order, and a call may return before the GPU has run it; reading a tensor back waits for the work queued before it, and <see cref="Synchronize"/> waits for all of it.</remarks>
public abstract partial class Backend : IDisposable
{
    /// <summary>Environment variable choosing the default backend: <c>cpu</c>, <c>cuda</c> or <c>auto</c> (the same as unset).</summary>
    public const string BackendVariable = "ATTENTION_NATIVE_BACKEND";

    /// <summary>Environment variable choosing the CUDA device ordinal of the default backend.</summary>
    public const string DeviceVariable = "ATTENTION_NATIVE_DEVICE";

    private static readonly Lazy<(Backend Backend, string Reason)> DefaultLazy = new(SelectDefault);

    /// <summary>The managed CPU backend (one per process).</summary>
    public static CpuBackend Cpu { get; } = new();

    /// <summary>
    /// CUDA when a device, NVRTC and cuBLAS all load; otherwise the CPU. <see cref="DefaultReason"/> says why.
    /// <c>ATTENTION_NATIVE_BACKEND=cpu|cuda</c> forces the choice (cuda then throws if it cannot start); any value other than
    /// those and <c>auto</c> throws <see cref="InvalidOperationException"/> naming the accepted values.
    /// </summary>
    public static Backend Default => DefaultLazy.Value.Backend;

    /// <summary>Why <see cref="Default"/> is what it is.</summary>
    public static string DefaultReason => DefaultLazy.Value.Reason;

    /// <summary>CPU or CUDA.</summary>
    public abstract BackendKind Kind { get; }

    /// <summary>A short name, e.g. <c>cpu</c> or <c>cuda:0 (NVIDIA H100 80GB HBM3, sm_90)</c>.</summary>
    public abstract string Name { get; }

    /// <summary>True when <paramref name="dtype"/> can be stored and computed on this backend.</summary>
    public abstract bool Supports(DType dtype);

    /// <summary>An uninitialised tensor (the CPU backend zero-fills).</summary>
    public Tensor Empty(Shape shape, DType dtype = DType.F32)
    {
        CheckDType(dtype, nameof(dtype));
        return Allocate(shape, dtype, zero: false);
    }

    /// <summary>A zero-filled tensor.</summary>
    public Tensor Zeros(Shape shape, DType dtype = DType.F32)
    {
        CheckDType(dtype, nameof(dtype));
        return Allocate(shape, dtype, zero: true);
    }

    /// <summary>A tensor holding <paramref name="values"/> converted to <paramref name="dtype"/>.</summary>
    public Tensor FromArray(ReadOnlySpan<float> values, Shape shape, DType dtype = DType.F32)
    {
        var tensor = Empty(shape, dtype);
        try
        {
            tensor.CopyFrom(values);
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    /// <summary>A tensor holding <paramref name="values"/> converted to <paramref name="dtype"/>.</summary>
    public Tensor FromArray(ReadOnlySpan<double> values, Shape shape, DType dtype)
    {
        var tensor = Empty(shape, dtype);
        try
        {
            tensor.CopyFrom(values);
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    /// <summary>A new tensor filled by <paramref name="fill"/>; disposed again if filling throws, so a failed op leaves no buffer behind.</summary>
    internal Tensor Create(Shape shape, DType dtype, Action<Tensor> fill)
    {
        var tensor = Empty(shape, dtype);
        try
        {
            fill(tensor);
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    /// <summary>Waits for all work queued by this backend.</summary>
    public abstract void Synchronize();

    /// <inheritdoc/>
    public void Dispose()
    {
        Dispose(disposing: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases native resources.</summary>
    protected virtual void Dispose(bool disposing)
    {
    }

    /// <inheritdoc/>
    public override string ToString() => Name;

    private protected abstract Tensor Allocate(Shape shape, DType dtype, bool zero);

    /// <summary>
    /// Holds this backend for one whole layer call (forward, backward, cache step). The CUDA backend's ops share its stream,
    /// that stream's scratch buffers and one cuBLAS handle, so two threads' calls must not interleave; the CPU backend shares nothing
    /// and returns at once.
    /// </summary>
    internal virtual CallGate EnterCall() => default;

    /// <summary>Releases what <see cref="EnterCall"/> took (nothing on the CPU).</summary>
    internal readonly struct CallGate(Lock? gate) : IDisposable
    {
        public void Dispose() => gate?.Exit();
    }

    /// <summary>The error an op's table entry throws on a backend that does not implement it yet.</summary>
    private protected NotSupportedException Unsupported(string op) =>
        new($"{op}: not implemented on the {Kind} backend ({Name}); run it on Backend.Cpu");

    private void CheckDType(DType dtype, string name)
    {
        if (!Supports(dtype))
        {
            throw new ArgumentException($"{name}: expected a dtype the {Kind} backend supports, actual {dtype}", name);
        }
    }

    /// <summary>
    /// The backend <paramref name="value"/> of <see cref="BackendVariable"/> forces: null for automatic (unset, empty or
    /// <c>auto</c>). Any other value is refused: a typo would otherwise silently pick a backend the user did not ask for.
    /// </summary>
    internal static BackendKind? ParseBackendVariable(string? value) => value?.Trim().ToUpperInvariant() switch
    {
        null or "" or "AUTO" => null,
        "CPU" => BackendKind.Cpu,
        "CUDA" => BackendKind.Cuda,
        _ => throw new InvalidOperationException($"{BackendVariable}: expected cpu, cuda or auto (or unset), actual '{value}'"),
    };

    private static (Backend, string) SelectDefault()
    {
        var forced = ParseBackendVariable(Environment.GetEnvironmentVariable(BackendVariable));
        if (forced == BackendKind.Cpu)
        {
            return (Cpu, $"{BackendVariable}=cpu");
        }
        int ordinal = int.TryParse(Environment.GetEnvironmentVariable(DeviceVariable), out int d) ? d : 0;
        if (CudaBackend.TryCreate(ordinal, out var cuda, out string why))
        {
            return (cuda!, $"CUDA device {ordinal} with NVRTC and cuBLAS loaded");
        }
        if (forced == BackendKind.Cuda)
        {
            throw new InvalidOperationException($"{BackendVariable}=cuda but the CUDA backend cannot start: {why}");
        }
        return (Cpu, $"CPU because {why}");
    }

    // ---- The op table: each op's public entry validates, then calls these on the tensors' backend. ----

    internal abstract void LinearForward(Tensor x, Tensor weight, Tensor? bias, Tensor y);

    internal abstract void LinearBackward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dweight, Tensor? dbias, bool accumulate);

    internal abstract void RopeForward(Tensor x, Tensor y, RopeOptions options, TokenPositions positions);

    internal abstract void RopeBackward(Tensor dy, Tensor dx, RopeOptions options, TokenPositions positions);

    internal abstract void RmsNormForward(Tensor x, Tensor? gain, Tensor y, float epsilon);

    internal abstract void RmsNormBackward(Tensor x, Tensor? gain, Tensor dy, Tensor dx, Tensor? dgain, float epsilon, bool accumulate);
}

namespace Attention.Native.Tests.Support;

/// <summary>
/// The same values on the CPU backend (F32, the reference) and on the CUDA backend (in the storage type under test).
/// Inputs are rounded to the storage type first, so both backends see identical numbers.
/// </summary>
internal sealed class GpuPair : IDisposable
{
    public required Tensor Cpu { get; init; }
    public required Tensor Gpu { get; init; }

    /// <summary>The storage types every CUDA op supports.</summary>
    public static DType[] StorageTypes { get; } = [DType.F32, DType.BF16, DType.F16];

    public static GpuPair Of(CudaBackend gpu, float[] values, Shape shape, DType dtype)
    {
        var v = TestData.Representable(values, dtype);
        return new GpuPair { Cpu = Backend.Cpu.FromArray(v, shape), Gpu = gpu.FromArray(v, shape, dtype) };
    }

    public static GpuPair Random(CudaBackend gpu, int seed, Shape shape, DType dtype, double scale = 1.0) =>
        Of(gpu, TestData.NormalSingle(seed, shape.ElementCount, scale), shape, dtype);

    /// <summary>Positive values in [low, high) (e.g. for inputs of a log or a power).</summary>
    public static GpuPair Uniform(CudaBackend gpu, int seed, Shape shape, DType dtype, double low, double high)
    {
        var random = new Random(seed);
        var values = new float[shape.ElementCount];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = (float)(low + (high - low) * random.NextDouble());
        }
        return Of(gpu, values, shape, dtype);
    }

    public static GpuPair Zeros(CudaBackend gpu, Shape shape, DType dtype) =>
        new() { Cpu = Backend.Cpu.Zeros(shape), Gpu = gpu.Zeros(shape, dtype) };

    /// <summary>Wraps tensors an op returned on each backend (the pair owns them).</summary>
    public static GpuPair Wrap(Tensor cpu, Tensor gpu) => new() { Cpu = cpu, Gpu = gpu };

    /// <summary>Asserts max|gpu − cpu| within design.md's tolerance for <paramref name="dtype"/> (and logs the figure).</summary>
    public void Compare(string op, DType dtype) => Parity.AssertClose(op, dtype, Cpu.Shape.ToString(), Cpu.ToArray(), Gpu.ToArray());

    public void Dispose()
    {
        Cpu.Dispose();
        Gpu.Dispose();
    }
}

/// <summary>
/// A gradient on both backends, checked by contribution (<see cref="Closeness.Added"/>): the CPU reference runs first, into
/// zeros, which gives the reference contribution; <see cref="Start"/> then gives the GPU tensor starting values (normal, of
/// the contribution's root-mean-square size, exactly representable in the storage type), the GPU op runs into it, and
/// <see cref="Compare"/> checks what it added. For an op that writes rather than adds, the starting values are garbage it
/// must replace and the comparison takes a zero start.
/// </summary>
internal sealed class GradientPair : IDisposable
{
    private readonly CudaBackend _gpu;
    private readonly DType _dtype;
    private readonly int _seed;
    private float[]? _before;
    private bool _adds;
    private Tensor? _device;

    private GradientPair(CudaBackend gpu, int seed, Shape shape, DType dtype)
    {
        _gpu = gpu;
        _seed = seed;
        _dtype = dtype;
        Cpu = Backend.Cpu.Zeros(shape);
    }

    /// <summary>The CPU reference's gradient: zeros until the CPU op has run into it, then the reference contribution.</summary>
    public Tensor Cpu { get; }

    /// <summary>The GPU's gradient, holding the starting values once <see cref="Start"/> has run.</summary>
    public Tensor Gpu => _device ?? throw new InvalidOperationException("GradientPair.Start must run after the CPU op and before the GPU one");

    public static GradientPair Zeros(CudaBackend gpu, int seed, Shape shape, DType dtype) => new(gpu, seed, shape, dtype);

    /// <summary>After the CPU op, before the GPU one: the GPU tensor's starting values (see the class).</summary>
    /// <param name="adds">Whether the op adds into the gradient (false: it writes).</param>
    public void Start(bool adds = true)
    {
        var start = StartingValues(_seed, Cpu.ToArray(), _dtype);
        _device?.Dispose();
        _device = _gpu.FromArray(start, Cpu.Shape, _dtype);
        _before = start;
        _adds = adds;
    }

    /// <summary>Normal values of the contribution's root-mean-square size, exactly representable in <paramref name="dtype"/>.</summary>
    public static float[] StartingValues(int seed, float[] contribution, DType dtype)
    {
        double squares = 0;
        foreach (float c in contribution)
        {
            squares += (double)c * c;
        }
        double rms = contribution.Length == 0 ? 1 : Math.Sqrt(squares / contribution.Length);
        return TestData.Representable(TestData.NormalSingle(seed, contribution.Length, rms > 0 ? rms : 1), dtype);
    }

    /// <summary><see cref="Start"/> for each non-null pair.</summary>
    public static void Start(bool adds, params GradientPair?[] pairs)
    {
        foreach (var pair in pairs)
        {
            pair?.Start(adds);
        }
    }

    /// <summary>What the GPU op added against the CPU's contribution (recorded for the parity report).</summary>
    public void Compare(string op, DType dtype) =>
        Parity.AssertAdded(op, dtype, Cpu.Shape.ToString(), _adds ? _before : null, Cpu.ToArray(), Gpu.ToArray());

    public void Dispose()
    {
        Cpu.Dispose();
        _device?.Dispose();
    }
}

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

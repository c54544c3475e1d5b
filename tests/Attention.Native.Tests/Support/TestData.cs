namespace Attention.Native.Tests.Support;

/// <summary>Deterministic random inputs.</summary>
internal static class TestData
{
    public static double[] Normal(int seed, long count, double scale = 1.0)
    {
        var random = new Random(seed);
        var values = new double[count];
        for (long i = 0; i < count; i++)
        {
            // Box–Muller.
            double u1 = 1.0 - random.NextDouble(), u2 = random.NextDouble();
            values[i] = scale * Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
        }
        return values;
    }

    public static float[] NormalSingle(int seed, long count, double scale = 1.0) =>
        Array.ConvertAll(Normal(seed, count, scale), v => (float)v);

    /// <summary>Values exactly representable in <paramref name="dtype"/> (so CPU and GPU see the same inputs).</summary>
    public static float[] Representable(float[] values, DType dtype)
    {
        using var t = Backend.Cpu.FromArray(values, new Shape(values.Length), dtype);
        return t.ToArray();
    }
}

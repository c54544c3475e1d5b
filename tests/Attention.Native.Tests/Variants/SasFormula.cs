using System.Numerics;
using System.Runtime.CompilerServices;
using Attention.Native.Tests.Support;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>
/// SAS's per-token head simulation written out plainly in F64 (variants.md): the projection, the two convolutions across
/// heads and (q, k) the width expansion. Used by the formula test, and to build GPU parity data whose ReLU inputs stay clear
/// of 0 (SAS's gradient jumps where a ReLU input crosses 0, so data with one within rounding of 0 has no well-defined parity).
/// </summary>
internal static class SasFormula
{
    /// <summary>rows [n, inWidth] · wᵀ (+ bias) → [n, outWidth].</summary>
    // Optimised even in Debug builds: the parity data generation runs ~10⁹ multiply-adds through here.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static T[] Dense<T>(T[] rows, int n, int inWidth, T[] w, T[]? bias, int outWidth)
        where T : IFloatingPoint<T>
    {
        var y = new T[n * outWidth];
        for (int r = 0; r < n; r++)
        {
            for (int o = 0; o < outWidth; o++)
            {
                T sum = bias is null ? T.Zero : bias[o];
                for (int i = 0; i < inWidth; i++)
                {
                    sum += rows[(r * inWidth) + i] * w[(o * inWidth) + i];
                }
                y[(r * outWidth) + o] = sum;
            }
        }
        return y;
    }

    public static T[] Relu<T>(T[] a)
        where T : IFloatingPoint<T> => [.. a.Select(v => T.Max(v, T.Zero))];

    public static T[] Plus<T>(T[] a, T[] c)
        where T : IFloatingPoint<T> => [.. a.Zip(c, (p, r) => p + r)];

    /// <summary>Conv across heads with zero padding: X [n, cin, len] → [n, cout, len], w [cout, cin, kernel].</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static T[] Conv<T>(T[] input, int n, int cin, int cout, int len, int kernel, T[] w, T[] bias)
        where T : IFloatingPoint<T>
    {
        var y = new T[n * cout * len];
        int pad = (kernel - 1) / 2;
        for (int s = 0; s < n; s++)
        {
            for (int c = 0; c < cout; c++)
            {
                for (int l = 0; l < len; l++)
                {
                    T sum = bias[c];
                    for (int ci = 0; ci < cin; ci++)
                    {
                        for (int j = 0; j < kernel; j++)
                        {
                            int at = l + j - pad;
                            if (at >= 0 && at < len)
                            {
                                sum += w[(((c * cin) + ci) * kernel) + j] * input[(((s * cin) + ci) * len) + at];
                            }
                        }
                    }
                    y[(((s * cout) + c) * len) + l] = sum;
                }
            }
        }
        return y;
    }

    /// <summary>
    /// One stream ("q", "k", "v") of <paramref name="n"/> token rows x [n, d_model]: the simulated heads [n, H', D'] (or
    /// [n, H', D] without the width expansion), and every ReLU input met on the way (conv1's output, then fc1's).
    /// </summary>
    public static (T[] Simulated, List<T[]> ReluInputs) Stream<T>(SasConfig c, Func<string, T[]> w, T[] x, int n, string stream)
        where T : IFloatingPoint<T>
    {
        int h = c.Heads, d = c.HeadDim, hs = c.SimHeads, ds = c.SimHeadDim;
        var projected = Dense(x, n, c.DModel, w($"w_{stream}"), null, h * d);
        var x1 = Conv(projected, n, h, hs, d, c.KernelSize, w($"sas_{stream}_conv1_w"), w($"sas_{stream}_conv1_b"));
        var simulated = Plus(x1, Conv(Relu(x1), n, hs, hs, d, c.KernelSize, w($"sas_{stream}_conv2_w"), w($"sas_{stream}_conv2_b")));
        if (stream == "v")
        {
            return (simulated, [x1]);
        }
        var y1 = Dense(simulated, n * hs, d, w($"sas_{stream}_fc1_w"), w($"sas_{stream}_fc1_b"), ds);
        return (Plus(y1, Dense(Relu(y1), n * hs, ds, w($"sas_{stream}_fc2_w"), w($"sas_{stream}_fc2_b"), ds)), [x1, y1]);
    }

    /// <summary>
    /// The smallest |ReLU input| of one token row, relative to the RMS of the ReLU inputs of its stage (so a value is "near the
    /// kink" on the scale its rounding error lives on).
    /// </summary>
    public static double KinkMargin(SasConfig c, IReadOnlyDictionary<string, double[]> w, double[] token)
    {
        double margin = double.PositiveInfinity;
        foreach (string stream in new[] { "q", "k", "v" })
        {
            foreach (var z in Stream(c, name => w[name], token, 1, stream).ReluInputs)
            {
                double rms = Math.Sqrt(z.Sum(v => v * v) / z.Length);
                margin = Math.Min(margin, z.Min(Math.Abs) / rms);
            }
        }
        return margin;
    }

    /// <summary>
    /// The relative distance from 0 every ReLU input of the SAS parity data keeps: 1e-4 of its stage's RMS, about 100× the
    /// fp32 rounding error of these inputs (projections of width ≤ 512; <c>GpuVariantSetupTests</c> measures it).
    /// </summary>
    public const double ParityMargin = 1e-4;

    /// <summary>
    /// Parity input x [batch, tokens, d_model] for a SAS layer with parameters <paramref name="w"/>: normal tokens (from
    /// <paramref name="seed"/>, rounded to <paramref name="dtype"/>), each redrawn until its <see cref="KinkMargin"/> is at least
    /// <see cref="ParityMargin"/>. Tokens are independent, and each ReLU input depends on its own token alone, so every ReLU
    /// input of the whole batch keeps that margin.
    /// </summary>
    public static float[] KinkFreeInput(SasConfig c, IReadOnlyDictionary<string, double[]> w, int seed, int batch, int tokens, DType dtype)
    {
        var random = new Random(seed);
        var values = new float[batch * tokens * c.DModel];
        // Candidates are drawn in the generator's order and judged many at a time on all cores; row after row takes the next
        // candidate that passes, so the result is the one-at-a-time loop's.
        var candidates = new List<float[]>();
        var passes = new List<bool>();
        int next = 0;
        for (int row = 0; row < batch * tokens; row++)
        {
            while (true)
            {
                if (next == candidates.Count)
                {
                    var chunk = new float[64][];
                    for (int n = 0; n < chunk.Length; n++)
                    {
                        var token = new float[c.DModel];
                        for (int i = 0; i < token.Length; i++)
                        {
                            // Box–Muller, as TestData.
                            double u1 = 1.0 - random.NextDouble(), u2 = random.NextDouble();
                            token[i] = (float)(Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2));
                        }
                        chunk[n] = TestData.Representable(token, dtype);
                    }
                    var verdicts = new bool[chunk.Length];
                    Parallel.For(0, chunk.Length, n => verdicts[n] = KinkMargin(c, w, Array.ConvertAll(chunk[n], v => (double)v)) >= ParityMargin);
                    candidates.AddRange(chunk);
                    passes.AddRange(verdicts);
                }
                if (passes[next++])
                {
                    candidates[next - 1].CopyTo(values, row * c.DModel);
                    break;
                }
            }
        }
        return values;
    }
}

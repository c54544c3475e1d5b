namespace Attention.Native.Tests.Support;

/// <summary>
/// Central finite differences in double precision. For a loss L(θ) = Σ dy ⊙ f(θ), compares each analytic
/// gradient element with (L(θ+h) − L(θ−h)) / 2h and returns the largest error relative to (1 + |analytic|).
/// The op under test runs in F64 on the CPU backend: the same generic code as its F32 path.
/// </summary>
internal static class GradientCheck
{
    public const double Step = 1e-5;

    /// <summary>Errors above this fail: central differences in double are accurate to ~1e-9 here.</summary>
    public const double Tolerance = 1e-6;

    public static double MaxError(double[][] inputs, Func<double[][], double[]> forward, double[] dy, double[][] analytic, int maxProbesPerInput = 400, int seed = 7)
    {
        var random = new Random(seed);
        double worst = 0;
        // The errors a backward that added nothing, or 0.9× the gradients, would have had on the probes (over every input:
        // a degenerate shape may have an input whose gradient is exactly zero, e.g. dq with one key).
        double nothing = 0, ninety = 0;
        for (int p = 0; p < inputs.Length; p++)
        {
            if (analytic[p] is null)
            {
                continue;
            }
            int count = inputs[p].Length;
            IEnumerable<int> probes = count <= maxProbesPerInput
                ? Enumerable.Range(0, count)
                : Enumerable.Range(0, maxProbesPerInput).Select(_ => random.Next(count));
            foreach (int i in probes)
            {
                double saved = inputs[p][i];
                inputs[p][i] = saved + Step;
                double plus = Loss(forward(inputs), dy);
                inputs[p][i] = saved - Step;
                double minus = Loss(forward(inputs), dy);
                inputs[p][i] = saved;
                double numeric = (plus - minus) / (2 * Step);
                double error = Math.Abs(numeric - analytic[p][i]) / (1 + Math.Abs(analytic[p][i]));
                worst = Math.Max(worst, error);
                nothing = Math.Max(nothing, Math.Abs(numeric));
                ninety = Math.Max(ninety, Math.Abs(numeric - (0.9 * analytic[p][i])) / (1 + Math.Abs(0.9 * analytic[p][i])));
            }
        }
        // A check that could not tell those from the right gradients proves nothing: it fails.
        if (nothing <= Tolerance || ninety <= Tolerance)
        {
            Assert.Fail($"insensitive gradient check (a backward adding nothing would err {nothing:E2}, one adding 0.9× {ninety:E2}; tolerance {Tolerance:E0})");
        }
        return worst;
    }

    /// <summary>Asserts the error is within <see cref="Tolerance"/> and reports it.</summary>
    public static void AssertClose(string what, double error)
    {
        TestContext.Out.WriteLine($"[gradcheck] {what}: max relative error {error:E2}");
        Assert.That(error, Is.LessThanOrEqualTo(Tolerance), $"{what}: finite-difference gradient error");
    }

    private static double Loss(double[] y, double[] dy)
    {
        double sum = 0;
        for (int i = 0; i < y.Length; i++)
        {
            sum += y[i] * dy[i];
        }
        return sum;
    }
}

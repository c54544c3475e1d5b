namespace Attention.Native.Tests.Support;

/// <summary>
/// The two comparisons every numeric test makes, as pure functions (<see cref="Parity"/> and <see cref="Precision"/> assert
/// and report them).
/// <list type="bullet">
/// <item>Outputs, design.md's rule: max|actual − reference| ≤ tol·(1 + max|reference|), tol 1e-4 for fp32 (and F64), 2e-2 for
/// bf16/fp16 storage with fp32 accumulation.</item>
/// <item>Gradients an op adds into a buffer (or writes, from zero): what it added, after − before, against the reference
/// contribution, normalised by the contribution's own size: max|(after − before) − c| ≤ tol·max|c| + u·max|before + c|, u the
/// unit roundoff of the storage type (storing the sum rounds it). Against 1 + max|after| a small gradient would drown in
/// its starting values; here a backward that adds nothing, or 0.9× the contribution, fails. Every comparison checks that
/// too (<see cref="AddedResult.Sensitive"/>), with the two wrong results stored as an op would store them.</item>
/// </list>
/// A NaN error counts as +∞.
/// </summary>
internal static class Closeness
{
    public static double Factor(DType dtype) => dtype is DType.F32 or DType.F64 ? 1e-4 : 2e-2;

    /// <summary>Half an ulp, relative: the rounding of storing a value in <paramref name="dtype"/>.</summary>
    public static double UnitRoundoff(DType dtype) => dtype switch
    {
        DType.BF16 => Math.ScaleB(1, -8),
        DType.F16 => Math.ScaleB(1, -11),
        DType.F32 => Math.ScaleB(1, -24),
        _ => Math.ScaleB(1, -53),
    };

    /// <summary>An output comparison: max|err|, the tolerance it was held to and max|err| / (1 + max|ref|).</summary>
    public readonly record struct OutputResult(double MaxError, double Tolerance, double Relative, double Factor)
    {
        public bool Passed => MaxError <= Tolerance;
    }

    public static OutputResult Output(IReadOnlyList<float> reference, IReadOnlyList<float> actual, DType dtype)
    {
        double maxRef = 0, maxErr = MaxError(reference, actual);
        for (int i = 0; i < reference.Count; i++)
        {
            maxRef = Math.Max(maxRef, Math.Abs(reference[i]));
        }
        double factor = Factor(dtype);
        return new OutputResult(maxErr, factor * (1 + maxRef), maxErr / (1 + maxRef), factor);
    }

    /// <summary>
    /// A gradient comparison: max|(after − before) − c|, the bound, max|c| (the scale), and whether the bound would reject a
    /// backward that added nothing and one that added 0.9·c (if not, the case cannot tell them from a right one).
    /// </summary>
    public readonly record struct AddedResult(double MaxError, double Bound, double Scale, bool Sensitive, double Factor)
    {
        public double Relative => Scale > 0 ? MaxError / Scale : MaxError;

        public bool Passed => MaxError <= Bound && Sensitive;
    }

    /// <param name="before">The buffer's values before the op (null: zeros, an op that writes).</param>
    /// <param name="contribution">The reference contribution (what a right op adds).</param>
    /// <param name="after">The buffer after the op under test.</param>
    /// <param name="dtype">The storage type of <paramref name="after"/>.</param>
    public static AddedResult Added(IReadOnlyList<float>? before, IReadOnlyList<float> contribution, IReadOnlyList<float> after, DType dtype)
    {
        int n = contribution.Count;
        IReadOnlyList<float> start = before ?? new float[n];
        double scale = 0, sumMax = 0;
        for (int i = 0; i < n; i++)
        {
            scale = Math.Max(scale, Math.Abs(contribution[i]));
            sumMax = Math.Max(sumMax, Math.Abs((double)start[i] + contribution[i]));
        }
        double factor = Factor(dtype);
        double bound = (factor * scale) + (UnitRoundoff(dtype) * sumMax);
        double error = AddedError(start, contribution, after);
        // The two wrong ops, stored in the storage type: after = before, and after = before + 0.9·c.
        var ninety = new float[n];
        for (int i = 0; i < n; i++)
        {
            ninety[i] = (float)(start[i] + (0.9 * contribution[i]));
        }
        if (dtype is DType.BF16 or DType.F16)
        {
            ninety = TestData.Representable(ninety, dtype);
        }
        // A contribution that is exactly zero (dq with one key) has nothing to tell apart: adding nothing is right there.
        bool sensitive = scale == 0 || (AddedError(start, contribution, start) > bound && AddedError(start, contribution, ninety) > bound);
        return new AddedResult(error, bound, scale, sensitive, factor);
    }

    private static double AddedError(IReadOnlyList<float> before, IReadOnlyList<float> contribution, IReadOnlyList<float> after)
    {
        double maxErr = 0;
        for (int i = 0; i < contribution.Count; i++)
        {
            double err = Math.Abs(((double)after[i] - before[i]) - contribution[i]);
            maxErr = Math.Max(maxErr, double.IsNaN(err) ? double.PositiveInfinity : err);
        }
        return maxErr;
    }

    private static double MaxError(IReadOnlyList<float> reference, IReadOnlyList<float> actual)
    {
        double maxErr = 0;
        for (int i = 0; i < reference.Count; i++)
        {
            double err = Math.Abs((double)reference[i] - actual[i]);
            maxErr = Math.Max(maxErr, double.IsNaN(err) ? double.PositiveInfinity : err);
        }
        return maxErr;
    }
}

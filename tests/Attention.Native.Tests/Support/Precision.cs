namespace Attention.Native.Tests.Support;

/// <summary>
/// CPU-vs-CPU comparisons (an F32 path against the F64 one, a 16-bit CPU path against F32) by <see cref="Closeness"/>'s
/// rules. They are not GPU results, so nothing is kept for the parity report.
/// </summary>
internal static class Precision
{
    /// <summary>An output against its reference (design.md's rule).</summary>
    public static void AssertClose(string what, DType dtype, string shape, float[] reference, float[] actual)
    {
        Assert.That(actual, Has.Length.EqualTo(reference.Length), $"{what}: output length");
        AssertOutput(what, dtype, shape, Closeness.Output(reference, actual, dtype), "actual − reference");
    }

    /// <summary>A gradient added into <paramref name="before"/> (null: written from zero) against the reference contribution.</summary>
    public static void AssertAdded(string what, DType dtype, string shape, float[]? before, float[] contribution, float[] after)
    {
        Assert.That(after, Has.Length.EqualTo(contribution.Length), $"{what}: gradient length");
        AssertAdded(what, dtype, shape, Closeness.Added(before, contribution, after, dtype), "actual − reference");
    }

    internal static void AssertOutput(string what, DType dtype, string shape, Closeness.OutputResult r, string difference)
    {
        TestContext.Out.WriteLine($"[precision] {what} {dtype} {shape}: max|err| {r.MaxError:E3} (bound {r.Tolerance:E3}, rel {r.Relative:E3})");
        Assert.That(r.MaxError, Is.LessThanOrEqualTo(r.Tolerance), $"{what} {dtype} {shape}: max |{difference}| = {r.MaxError:E3} > {r.Tolerance:E3}");
    }

    internal static void AssertAdded(string what, DType dtype, string shape, Closeness.AddedResult r, string difference)
    {
        TestContext.Out.WriteLine($"[precision] {what} {dtype} {shape}: added max|err| {r.MaxError:E3} (bound {r.Bound:E3}, rel {r.Relative:E3} of max|contribution| {r.Scale:E3})");
        Assert.That(r.Sensitive, Is.True,
            $"{what} {dtype} {shape}: insensitive case: a backward adding nothing, or 0.9× the contribution, would pass (max|contribution| {r.Scale:E3}, bound {r.Bound:E3})");
        Assert.That(r.MaxError, Is.LessThanOrEqualTo(r.Bound),
            $"{what} {dtype} {shape}: max |added ({difference})| = {r.MaxError:E3} > {r.Bound:E3} ({r.Relative:E3} of max|contribution| {r.Scale:E3})");
    }
}

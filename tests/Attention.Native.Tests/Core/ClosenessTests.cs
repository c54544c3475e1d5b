using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Core;

/// <summary>
/// The checker itself (<see cref="Closeness"/>, behind <see cref="Parity"/> and <see cref="Precision"/>): for a gradient
/// added into starting values, a right result passes, and one that added nothing, 0.9× or 1.1× the contribution, or
/// overwrote the starting values, fails, in every storage type, whatever the contribution's size; a case whose starting
/// values drown the contribution is refused as insensitive; the finite-difference check refuses a gradient it cannot tell
/// from zero.
/// </summary>
public class ClosenessTests
{
    private static IEnumerable<TestCaseData> Cases() =>
        from dtype in new[] { DType.F32, DType.BF16, DType.F16 }
        from size in new[] { 1e-3, 1.0, 300.0 }
        select new TestCaseData(dtype, size);

    private static (float[] Before, float[] Contribution) Data(DType dtype, double size)
    {
        var contribution = TestData.NormalSingle(3, 600, size);
        double rms = Math.Sqrt(contribution.Average(c => (double)c * c));
        var before = TestData.Representable(TestData.NormalSingle(4, 600, rms), dtype);
        return (before, contribution);
    }

    private static float[] Stored(float[] before, float[] contribution, double factor, bool overwrite, DType dtype) =>
        TestData.Representable([.. before.Select((b, i) => (float)((overwrite ? 0 : b) + (factor * contribution[i])))], dtype);

    [TestCaseSource(nameof(Cases))]
    public void Right_passes_and_nothing_or_scaled_or_overwritten_fails(DType dtype, double size)
    {
        var (before, c) = Data(dtype, size);
        Assert.Multiple(() =>
        {
            Assert.That(Closeness.Added(before, c, Stored(before, c, 1.0, false, dtype), dtype).Passed, Is.True, "right");
            Assert.That(Closeness.Added(before, c, Stored(before, c, 0.0, false, dtype), dtype).Passed, Is.False, "added nothing");
            Assert.That(Closeness.Added(before, c, Stored(before, c, 0.9, false, dtype), dtype).Passed, Is.False, "0.9×");
            Assert.That(Closeness.Added(before, c, Stored(before, c, 1.1, false, dtype), dtype).Passed, Is.False, "1.1×");
            Assert.That(Closeness.Added(before, c, Stored(before, c, 1.0, true, dtype), dtype).Passed, Is.False, "overwrote");
            Assert.That(Closeness.Added(null, c, Stored(new float[c.Length], c, 1.0, false, dtype), dtype).Passed, Is.True, "written from zero");
            Assert.That(Closeness.Added(null, c, Stored(new float[c.Length], c, 0.9, false, dtype), dtype).Passed, Is.False, "written 0.9×");
            var nan = Stored(before, c, 1.0, false, dtype);
            nan[7] = float.NaN;
            Assert.That(Closeness.Added(before, c, nan, dtype).Passed, Is.False, "one NaN");
        });
    }

    /// <summary>The old rule, 2e-2·(1 + max|after|), passed a backward adding nothing when the gradient was small; this one refuses the case.</summary>
    [Test]
    public void Starting_values_that_drown_the_contribution_make_the_case_insensitive()
    {
        var c = TestData.NormalSingle(5, 600, 1e-3);
        var before = TestData.Representable(TestData.NormalSingle(6, 600), DType.BF16);
        var nothing = Closeness.Added(before, c, before, DType.BF16);
        var right = Closeness.Added(before, c, Stored(before, c, 1.0, false, DType.BF16), DType.BF16);
        Assert.Multiple(() =>
        {
            Assert.That(nothing.Sensitive, Is.False);
            Assert.That(nothing.Passed, Is.False);
            Assert.That(right.Passed, Is.False, "even a right result proves nothing here");
            Assert.That(Closeness.Output([.. before.Zip(c, (b, x) => b + x)], before, DType.BF16).Passed, Is.True, "the old rule passed it");
        });
    }

    [Test]
    public void Outputs_follow_design_md()
    {
        float[] reference = [1f, -2f, 3f];
        Assert.Multiple(() =>
        {
            Assert.That(Closeness.Output(reference, [1f, -2f, 3.07f], DType.BF16).Passed, Is.True, "0.07 ≤ 2e-2·4");
            Assert.That(Closeness.Output(reference, [1f, -2f, 3.09f], DType.BF16).Passed, Is.False, "0.09 > 2e-2·4");
            Assert.That(Closeness.Output(reference, [1f, -2f, 3.0005f], DType.F32).Passed, Is.False, "5e-4 > 1e-4·4");
            Assert.That(Closeness.Output(reference, [1f, float.NaN, 3f], DType.F32).Passed, Is.False, "NaN");
        });
    }

    [Test]
    public void The_finite_difference_check_refuses_a_gradient_it_cannot_tell_from_zero()
    {
        // f(x) = 1e-9·x: every gradient is 1e-9, below the check's tolerance, so a backward adding nothing would pass.
        double[][] inputs = [[1.0, 2.0, 3.0]];
        double[] Forward(double[][] p) => [.. p[0].Select(v => 1e-9 * v)];
        double[] dy = [1.0, 1.0, 1.0];
        Assert.Throws<AssertionException>(() => GradientCheck.MaxError(inputs, Forward, dy, [[1e-9, 1e-9, 1e-9]]));
        double[] Steep(double[][] p) => [.. p[0].Select(v => 2 * v)];
        Assert.That(GradientCheck.MaxError(inputs, Steep, dy, [[2.0, 2.0, 2.0]]), Is.LessThan(GradientCheck.Tolerance));
    }
}

using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Ops;

/// <summary>
/// The CUDA Lightning launcher computes the whole backward with the forward recurrence over swapped inputs:
/// <c>dq = rec(dO, v, k)</c>, <c>dv = flip(rec(flip k, flip q, flip dO))</c>, <c>dk = flip(rec(flip v, flip dO, flip q))</c>.
/// These identities are checked here on the CPU reference, in F64, so the GPU path rests on verified math.
/// </summary>
public class LightningSweepTests
{
    private static Tensor Random(int seed, Shape shape) => Backend.Cpu.FromArray(TestData.Normal(seed, shape.ElementCount), shape, DType.F64);

    // Reverses the token axis of [B, T, H, w].
    private static Tensor Flip(Tensor x)
    {
        var s = x.Shape;
        var values = x.ToDoubleArray();
        var flipped = new double[values.Length];
        long row = (long)s[2] * s[3];
        for (int b = 0; b < s[0]; b++)
        {
            for (int t = 0; t < s[1]; t++)
            {
                Array.Copy(values, ((long)b * s[1] + t) * row, flipped, ((long)b * s[1] + (s[1] - 1 - t)) * row, row);
            }
        }
        return Backend.Cpu.FromArray(flipped, s, DType.F64);
    }

    [TestCase(1, 8, 8)]
    [TestCase(37, 8, 12)]
    [TestCase(100, 16, 8)]
    public void Backward_equals_the_forward_recurrence_over_swapped_inputs(int seq, int dk, int dv)
    {
        double[] decay = [0.9, 1.0, 0.75];
        var keys = new Shape(2, seq, 3, dk);
        var values = new Shape(2, seq, 3, dv);
        using var q = Random(1, keys);
        using var k = Random(2, keys);
        using var v = Random(3, values);
        using var dO = Random(4, values);
        using var dq = Backend.Cpu.Zeros(keys, DType.F64);
        using var dkGrad = Backend.Cpu.Zeros(keys, DType.F64);
        using var dvGrad = Backend.Cpu.Zeros(values, DType.F64);
        Lightning.Backward(q, k, v, decay, dO, dq, dkGrad, dvGrad, blockSize: 16);

        using var dqSweep = Lightning.Forward(dO, v, k, decay, blockSize: 16);
        using var fk = Flip(k);
        using var fq = Flip(q);
        using var fv = Flip(v);
        using var fdO = Flip(dO);
        using var dvReversed = Lightning.Forward(fk, fq, fdO, decay, blockSize: 16);
        using var dkReversed = Lightning.Forward(fv, fdO, fq, decay, blockSize: 16);
        using var dvSweep = Flip(dvReversed);
        using var dkSweep = Flip(dkReversed);
        Assert.Multiple(() =>
        {
            AssertClose("dq", dq, dqSweep);
            AssertClose("dk", dkGrad, dkSweep);
            AssertClose("dv", dvGrad, dvSweep);
        });
    }

    private static void AssertClose(string name, Tensor expected, Tensor actual)
    {
        var e = expected.ToDoubleArray();
        var a = actual.ToDoubleArray();
        double scale = 1 + e.Max(Math.Abs);
        double error = e.Zip(a, (x, y) => Math.Abs(x - y)).Max();
        Assert.That(error, Is.LessThanOrEqualTo(1e-12 * scale), $"{name}: max error {error:E3}");
    }
}

namespace Attention.Native.Tests.Core;

public class BFloat16Tests
{
    [TestCase(1.0f, (ushort)0x3F80)]
    [TestCase(-2.0f, (ushort)0xC000)]
    [TestCase(0.0f, (ushort)0x0000)]
    [TestCase(float.PositiveInfinity, (ushort)0x7F80)]
    public void Exact_values_round_trip(float value, ushort bits)
    {
        var b = BFloat16.FromSingle(value);
        Assert.That(b.Bits, Is.EqualTo(bits));
        Assert.That(b.ToSingle(), Is.EqualTo(value));
    }

    [Test]
    public void Rounds_to_nearest_with_ties_to_even()
    {
        // 1 + 2^-8 lies exactly between 1 (even mantissa) and 1 + 2^-7: ties go to the even one.
        Assert.That(BFloat16.FromSingle(1f + MathF.Pow(2, -8)).Bits, Is.EqualTo(0x3F80));
        // 1 + 3·2^-8 lies between 1 + 2^-7 (odd) and 1 + 2^-6 (even): rounds up to even.
        Assert.That(BFloat16.FromSingle(1f + (3 * MathF.Pow(2, -8))).Bits, Is.EqualTo(0x3F82));
        // Just above the midpoint rounds up.
        Assert.That(BFloat16.FromSingle(BitConverter.UInt32BitsToSingle(0x3F808001)).Bits, Is.EqualTo(0x3F81));
    }

    [Test]
    public void NaN_stays_NaN_and_overflow_goes_to_infinity()
    {
        Assert.That(float.IsNaN(BFloat16.FromSingle(float.NaN).ToSingle()), Is.True);
        Assert.That(BFloat16.FromSingle(float.MaxValue).ToSingle(), Is.EqualTo(float.PositiveInfinity));
    }

    [Test]
    public void Conversion_error_is_within_half_an_ulp()
    {
        var random = new Random(3);
        for (int i = 0; i < 10000; i++)
        {
            float v = (float)((random.NextDouble() - 0.5) * Math.Pow(2, random.Next(-20, 20)));
            float r = BFloat16.FromSingle(v).ToSingle();
            Assert.That(Math.Abs(r - v), Is.LessThanOrEqualTo(Math.Abs(v) * Math.Pow(2, -8) * 1.0000001));
        }
    }
}

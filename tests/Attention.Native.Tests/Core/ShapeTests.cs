namespace Attention.Native.Tests.Core;

public class ShapeTests
{
    [Test]
    public void Element_count_rows_and_formatting()
    {
        var s = new Shape(2, 3, 4);
        Assert.Multiple(() =>
        {
            Assert.That(s.Rank, Is.EqualTo(3));
            Assert.That(s.ElementCount, Is.EqualTo(24));
            Assert.That(s.Rows, Is.EqualTo(6));
            Assert.That(s[-1], Is.EqualTo(4));
            Assert.That(s.ToString(), Is.EqualTo("[2, 3, 4]"));
            Assert.That(s.WithLast(7), Is.EqualTo(new Shape(2, 3, 7)));
            Assert.That(new Shape(5).Rows, Is.EqualTo(1));
        });
    }

    [Test]
    public void Negative_dimension_is_rejected_with_the_shape()
    {
        var e = Assert.Throws<ArgumentException>(() => _ = new Shape(2, -1));
        Assert.That(e!.Message, Does.Contain("[2, -1]"));
    }

    [Test]
    public void Axis_out_of_range_throws()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = new Shape(2, 3)[2]);
    }
}

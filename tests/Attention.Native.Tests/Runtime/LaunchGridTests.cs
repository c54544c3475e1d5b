using Attention.Native.Runtime;

namespace Attention.Native.Tests.Runtime;

/// <summary>Dim3.Grid, the one check of every CUDA launcher's grid against the hardware's limits (no device needed).</summary>
public class LaunchGridTests
{
    [Test]
    public void A_grid_at_the_limits_is_accepted()
    {
        var grid = Dim3.Grid(int.MaxValue, 65535, 65535, "q", "query tiles", "heads", "batch");
        Assert.That(grid, Is.EqualTo(new Dim3(int.MaxValue, 65535, 65535)));
    }

    [Test]
    public void An_empty_grid_is_accepted()
    {
        Assert.That(Dim3.Grid(0, 0, 0, "q", "query tiles", "heads", "batch"), Is.EqualTo(new Dim3(0, 0, 0)));
    }

    [TestCase(1L, 65536L, 1L, "heads", "y", 65535L, 65536L)]
    [TestCase(1L, 1L, 70000L, "batch", "z", 65535L, 70000L)]
    [TestCase(2147483648L, 1L, 1L, "query tiles", "x", 2147483647L, 2147483648L)]
    [TestCase(-1L, 1L, 1L, "query tiles", "x", 2147483647L, -1L)]
    public void A_grid_past_a_limit_is_refused_with_the_argument_named(long x, long y, long z, string counts, string axis, long limit, long actual)
    {
        var e = Assert.Throws<ArgumentException>(() => Dim3.Grid(x, y, z, "q", "query tiles", "heads", "batch"))!;
        Assert.Multiple(() =>
        {
            Assert.That(e.ParamName, Is.EqualTo("q"));
            Assert.That(e.Message, Does.StartWith($"q: expected {counts} in [0, {limit}] (a CUDA grid's {axis} limit), actual {actual}"));
        });
    }
}

namespace Attention.Native.Tests.Serving;

/// <summary><see cref="SequenceLayout"/>: offsets, positions and the errors of every malformed layout.</summary>
[TestFixture]
public sealed class SequenceLayoutTests
{
    [Test]
    public void Lengths_give_offsets_and_positions()
    {
        var layout = SequenceLayout.FromLengths(3, 1, 4);
        Assert.That(layout.Offsets.ToArray(), Is.EqualTo(new[] { 0, 3, 4, 8 }));
        Assert.That((layout.Count, layout.TokenCount, layout.MaxLength), Is.EqualTo((3, 8, 4)));
        Assert.That(layout.TokenPositions(), Is.EqualTo(new[] { 0, 1, 2, 0, 0, 1, 2, 3 }));
        var shifted = layout.WithStartPositions([10, 0, 7]);
        Assert.That(shifted.TokenPositions(), Is.EqualTo(new[] { 10, 11, 12, 0, 7, 8, 9, 10 }));
        Assert.That(shifted.ToString(), Is.EqualTo("[3, 1, 4] from [10, 0, 7]"));
        Assert.That(SequenceLayout.FromOffsets([0, 3, 4, 8], 8), Is.EqualTo(layout));
        Assert.That(shifted, Is.Not.EqualTo(layout));
    }

    [TestCase(new[] { 1, 3, 8 }, 8, "offsets[0]: expected 0, actual 1")]
    [TestCase(new[] { 0, 5, 3, 8 }, 8, "offsets[2]: expected a value > offsets[1] = 5")]
    [TestCase(new[] { 0, -2, 8 }, 8, "offsets[1]: expected a value > offsets[0] = 0")]
    [TestCase(new[] { 0, 3, 3, 8 }, 8, "offsets[2]: expected a value > offsets[1] = 3")]
    [TestCase(new[] { 0, 3, 7 }, 8, "offsets[2]: expected the token count 8")]
    [TestCase(new[] { 0 }, 0, "offsets: expected at least 2 values")]
    public void Malformed_offsets_are_refused_with_expected_and_actual(int[] offsets, int tokens, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => SequenceLayout.FromOffsets(offsets, tokens));
        Assert.That(e!.ParamName, Is.EqualTo("offsets"));
        Assert.That(e.Message, Does.StartWith(message));
    }

    [Test]
    public void Malformed_lengths_and_start_positions_are_refused()
    {
        Assert.That(Assert.Throws<ArgumentException>(() => SequenceLayout.FromLengths(2, 0))!.Message, Does.StartWith("lengths[1]: expected a length ≥ 1, actual 0"));
        Assert.That(Assert.Throws<ArgumentException>(() => SequenceLayout.FromLengths())!.ParamName, Is.EqualTo("lengths"));
        Assert.That(Assert.Throws<ArgumentException>(() => SequenceLayout.FromLengths(int.MaxValue, 1))!.ParamName, Is.EqualTo("lengths"));
        var layout = SequenceLayout.FromLengths(2, 2);
        Assert.That(Assert.Throws<ArgumentException>(() => layout.WithStartPositions([1]))!.Message, Does.StartWith("startPositions: expected 2 values"));
        Assert.That(Assert.Throws<ArgumentException>(() => layout.WithStartPositions([0, -1]))!.Message, Does.StartWith("startPositions[1]: expected a value in [0, "));
        Assert.Throws<ArgumentOutOfRangeException>(() => layout.Length(2));
    }
}

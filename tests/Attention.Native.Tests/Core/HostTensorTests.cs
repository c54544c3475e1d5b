namespace Attention.Native.Tests.Core;

public class HostTensorTests
{
    [TestCase(DType.F32)]
    [TestCase(DType.F64)]
    [TestCase(DType.BF16)]
    [TestCase(DType.F16)]
    public void Values_round_trip_through_every_dtype(DType dtype)
    {
        float[] values = [0f, 1f, -2.5f, 0.125f, 1024f];
        using var t = Backend.Cpu.FromArray(values, new Shape(5), dtype);
        Assert.Multiple(() =>
        {
            Assert.That(t.ToArray(), Is.EqualTo(values));
            Assert.That(t.ByteCount, Is.EqualTo(5 * dtype.SizeInBytes()));
        });
    }

    [Test]
    public void Bf16_storage_rounds_like_BFloat16()
    {
        float v = 1f + (3 * MathF.Pow(2, -8));
        using var t = Backend.Cpu.FromArray([v], new Shape(1), DType.BF16);
        Assert.That(((HostTensor)t).AsSpan<BFloat16>()[0], Is.EqualTo(BFloat16.FromSingle(v)));
    }

    [Test]
    public void Reshape_shares_storage_and_dies_with_its_owner()
    {
        var t = Backend.Cpu.Zeros(new Shape(2, 3));
        var view = t.Reshape(new Shape(6));
        view.CopyFrom([1f, 2, 3, 4, 5, 6]);
        Assert.That(t.ToArray(), Is.EqualTo(new[] { 1f, 2, 3, 4, 5, 6 }));
        t.Dispose();
        Assert.Multiple(() =>
        {
            Assert.That(view.IsDisposed, Is.True);
            Assert.Throws<ObjectDisposedException>(() => view.ToArray());
        });
        t.Dispose(); // harmless
    }

    [Test]
    public void Disposing_a_view_leaves_the_owner_usable()
    {
        using var t = Backend.Cpu.Zeros(new Shape(4));
        t.Reshape(new Shape(2, 2)).Dispose();
        Assert.That(t.ToArray(), Is.EqualTo(new float[4]));
    }

    [Test]
    public void Wrong_lengths_and_element_types_are_rejected()
    {
        using var t = Backend.Cpu.Zeros(new Shape(2, 2));
        var e = Assert.Throws<ArgumentException>(() => t.CopyFrom(new float[3]));
        Assert.That(e!.Message, Does.Contain("expected 4 elements").And.Contain("actual 3"));
        Assert.Throws<ArgumentException>(() => t.Reshape(new Shape(3)));
        Assert.Throws<InvalidOperationException>(() => ((HostTensor)t).AsSpan<double>());
    }

    [Test]
    public void Tensors_copy_across_backends_keep_shape_and_dtype()
    {
        using var t = Backend.Cpu.FromArray([1f, 2f], new Shape(1, 2), DType.F16);
        using var copy = t.To(Backend.Cpu);
        Assert.Multiple(() =>
        {
            Assert.That(copy.Shape, Is.EqualTo(t.Shape));
            Assert.That(copy.DType, Is.EqualTo(DType.F16));
            Assert.That(copy.ToArray(), Is.EqualTo(new[] { 1f, 2f }));
        });
    }
}

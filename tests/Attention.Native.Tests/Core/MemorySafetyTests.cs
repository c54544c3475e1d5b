using Attention.Native.Ops;

namespace Attention.Native.Tests.Core;

/// <summary>
/// Issue 13 item 1: element-count × element-size products never wrap. Before the fix, 2^62 + 1 F32 elements wrapped to
/// 4 bytes, the backend allocated 4 bytes, and the next op wrote past them (a process abort).
/// </summary>
public class MemorySafetyTests
{
    // 2147418113 · 429509837 · 5 = 2^62 + 1 elements: fits a long, but ×4 bytes wraps to 4.
    private static readonly Shape Wrapping = new(2147418113, 429509837, 5);

    [TestCase(DType.F32)]
    [TestCase(DType.F16)]
    [TestCase(DType.BF16)]
    [TestCase(DType.F64)]
    public void Zeros_and_Empty_of_a_shape_whose_bytes_wrap_throw_naming_the_shape(DType dtype)
    {
        Assert.That(Wrapping.ElementCount, Is.EqualTo((1L << 62) + 1));
        foreach (Func<Tensor> make in new Func<Tensor>[] { () => Backend.Cpu.Zeros(Wrapping, dtype), () => Backend.Cpu.Empty(Wrapping, dtype) })
        {
            var e = Assert.Throws<ArgumentException>(() => make().Dispose());
            Assert.That(e!.ParamName, Is.EqualTo("shape"));
            Assert.That(e.Message, Does.Contain(Wrapping.ToString()));
        }
    }

    [Test]
    public void The_issue_case_throws_before_any_op_can_run()
    {
        // The reported sequence: Zeros of 2^62+1 elements, then Pointwise.Forward on it.
        Assert.Throws<ArgumentException>(() =>
        {
            using var x = Backend.Cpu.Zeros(Wrapping);
            using var y = Backend.Cpu.Zeros(Wrapping);
            Pointwise.Forward(PointwiseOp.Relu, x, null, y);
        });
    }

    [Test]
    public void FromArray_of_a_wrapping_shape_throws_naming_the_shape()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Assert.Throws<ArgumentException>(() => Backend.Cpu.FromArray(new float[1], Wrapping))!.ParamName, Is.EqualTo("shape"));
            Assert.That(Assert.Throws<ArgumentException>(() => Backend.Cpu.FromArray(new double[1], Wrapping, DType.F64))!.ParamName, Is.EqualTo("shape"));
        });
    }

    [Test]
    public void A_shape_whose_element_count_passes_64_bits_is_refused_and_zero_sized_ones_are_not()
    {
        var e = Assert.Throws<ArgumentException>(() => _ = new Shape(int.MaxValue, int.MaxValue, int.MaxValue));
        Assert.That(e!.ParamName, Is.EqualTo("dims"));
        Assert.That(e.Message, Does.Contain("[2147483647, 2147483647, 2147483647]"));
        // A zero anywhere makes the product 0, even after factors that alone would overflow.
        Assert.That(new Shape(int.MaxValue, int.MaxValue, int.MaxValue, 0).ElementCount, Is.EqualTo(0));
        Assert.That(new Shape(0, int.MaxValue, int.MaxValue, int.MaxValue).ElementCount, Is.EqualTo(0));
    }

    [Test]
    public void Bytes_just_past_64_bits_are_caught_for_every_element_size()
    {
        // (2^31 − 1)² · 2 < 2^63 elements, so the shape exists; its bytes (≥ 2 per element) do not fit.
        var shape = new Shape(int.MaxValue, int.MaxValue, 2);
        foreach (var dtype in new[] { DType.F16, DType.F32, DType.F64 })
        {
            var e = Assert.Throws<ArgumentException>(() => shape.BytesOf(dtype, "shape"));
            Assert.That(e!.Message, Does.Contain(shape.ToString()).And.Contain(dtype.ToString()));
        }
        Assert.That(new Shape(1 << 20, 1 << 20).BytesOf(DType.F64, "shape"), Is.EqualTo(8L << 40));
    }

    [Test]
    public void Device_byte_counts_are_checked_before_any_driver_call()
    {
        // DeviceBuffer's constructor (CudaContext.Allocate) and DeviceTensor use this product; no device is needed to see it refuse.
        var e = Assert.Throws<ArgumentException>(() => ByteCounts.Of(long.MaxValue / 4 + 1, 4, "length", "test"));
        Assert.That(e!.ParamName, Is.EqualTo("length"));
        Assert.Throws<ArgumentException>(() => ByteCounts.Of(-1, 4, "length", "test"));
        Assert.That(ByteCounts.Of(long.MaxValue / 4, 4, "length", "test"), Is.EqualTo(long.MaxValue / 4 * 4));
    }

    [Test]
    public void Host_tensors_past_the_array_limit_are_refused_with_the_limit()
    {
        var e = Assert.Throws<ArgumentException>(() => Backend.Cpu.Zeros(new Shape(1 << 30, 3), DType.F32));
        Assert.That(e!.ParamName, Is.EqualTo("shape"));
        Assert.That(e.Message, Does.Contain(Array.MaxLength.ToString(System.Globalization.CultureInfo.InvariantCulture)));
    }

    [Test]
    public void To_on_its_own_backend_shares_the_storage_instead_of_copying()
    {
        using var x = Backend.Cpu.FromArray([1f, 2, 3, 4], new Shape(2, 2));
        var same = x.To(Backend.Cpu);
        Assert.That(same, Is.Not.SameAs(x));
        ((HostTensor)x).AsSpan<float>()[0] = 7;
        Assert.That(same.ToArray()[0], Is.EqualTo(7), "a copy would still read 1");
        same.Dispose();
        Assert.That(x.ToArray(), Is.EqualTo(new[] { 7f, 2, 3, 4 }), "disposing the view leaves the tensor usable");
    }
}

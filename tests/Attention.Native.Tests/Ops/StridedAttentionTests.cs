using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Ops;

/// <summary>
/// Strided views (<see cref="Tensor.Transpose"/>) and softmax attention on them without a copy: q, k, v, o and every gradient
/// held head-major (<c>[B, H, T, d]</c>, TorchSharp's and PyTorch's layout) and seen as <c>[B, T, H, d]</c> give what
/// contiguous copies give, on the CPU backend; other ops refuse a view.
/// </summary>
public class StridedAttentionTests
{
    private const int B = 2, Tq = 7, Tk = 9, H = 4, G = 2, Dqk = 8, Dv = 6;

    [Test]
    public void A_transposed_view_shares_storage_and_reads_and_writes_in_its_own_order()
    {
        var values = Enumerable.Range(0, 2 * 3 * 4).Select(i => (float)i).ToArray();
        using var t = Backend.Cpu.FromArray(values, new Shape(2, 3, 4));
        using var view = t.Transpose(0, 1);
        Assert.Multiple(() =>
        {
            Assert.That(view.Shape, Is.EqualTo(new Shape(3, 2, 4)));
            Assert.That(view.Strides, Is.EqualTo(new long[] { 4, 12, 1 }));
            Assert.That(view.IsContiguous, Is.False);
            Assert.That(view.ToArray()[4..8], Is.EqualTo(values[12..16]), "view row (0, 1) is storage row (1, 0)");
        });
        var written = new float[24];
        written[5] = 99f; // view (0, 1, 1)
        view.CopyFrom(written);
        Assert.Multiple(() =>
        {
            Assert.That(t.ToArray()[13], Is.EqualTo(99f), "storage (1, 0, 1)");
            Assert.That(view.Transpose(0, 1).IsContiguous, Is.True, "transposing back is row-major again");
            Assert.Throws<InvalidOperationException>(() => view.Reshape(new Shape(24)));
            Assert.Throws<InvalidOperationException>(() => ((HostTensor)view).AsSpan<float>());
            Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => t.Transpose(0, 3))!.ParamName, Is.EqualTo("axis1"));
        });
    }

    [TestCase(DType.F64, false)]
    [TestCase(DType.F64, true)]
    [TestCase(DType.F32, true)]
    [TestCase(DType.BF16, true)]
    public void Attention_on_head_major_views_equals_attention_on_contiguous_copies(DType dtype, bool causal)
    {
        var options = new AttentionOptions(1.0 / Math.Sqrt(Dqk), Causal: causal);
        // Head-major storage [B, H, T, d], seen as [B, T, H, d].
        using var qStore = Random(1, new Shape(B, H, Tq, Dqk), dtype);
        using var kStore = Random(2, new Shape(B, G, Tk, Dqk), dtype);
        using var vStore = Random(3, new Shape(B, G, Tk, Dv), dtype);
        using var dOStore = Random(4, new Shape(B, H, Tq, Dv), dtype);
        using var q = qStore.Transpose(1, 2);
        using var k = kStore.Transpose(1, 2);
        using var v = vStore.Transpose(1, 2);
        using var dO = dOStore.Transpose(1, 2);
        using var qc = Copy(q);
        using var kc = Copy(k);
        using var vc = Copy(v);
        using var dOc = Copy(dO);

        using var oStore = Backend.Cpu.Zeros(new Shape(B, H, Tq, Dv), dtype);
        using var o = oStore.Transpose(1, 2);
        using var lse = Backend.Cpu.Zeros(new Shape(B, H, Tq), SoftmaxAttention.LseType(dtype));
        SoftmaxAttention.Forward(q, k, v, options, null, o, lse);
        using var oc = SoftmaxAttention.Forward(qc, kc, vc, options, null, out var lsec);
        using (lsec)
        {
            Assert.That(o.ToDoubleArray(), Is.EqualTo(oc.ToDoubleArray()), "o written through the head-major view");
            Assert.That(lse.ToDoubleArray(), Is.EqualTo(lsec.ToDoubleArray()), "lse");
        }

        // Gradients into head-major views, starting from the same nonzero values (the backward adds).
        using var dqStore = Random(5, new Shape(B, H, Tq, Dqk), dtype);
        using var dkStore = Random(6, new Shape(B, G, Tk, Dqk), dtype);
        using var dvStore = Random(7, new Shape(B, G, Tk, Dv), dtype);
        using var dq = dqStore.Transpose(1, 2);
        using var dk = dkStore.Transpose(1, 2);
        using var dv = dvStore.Transpose(1, 2);
        using var dqc = Copy(dq);
        using var dkc = Copy(dk);
        using var dvc = Copy(dv);
        var dqStart = dq.ToDoubleArray();
        SoftmaxAttention.Backward(q, k, v, options, null, o, lse, dO, dq, dk, dv);
        SoftmaxAttention.Backward(qc, kc, vc, options, null, oc, lse, dOc, dqc, dkc, dvc);
        Assert.Multiple(() =>
        {
            Assert.That(dq.ToDoubleArray(), Is.EqualTo(dqc.ToDoubleArray()), "dq");
            Assert.That(dk.ToDoubleArray(), Is.EqualTo(dkc.ToDoubleArray()), "dk");
            Assert.That(dv.ToDoubleArray(), Is.EqualTo(dvc.ToDoubleArray()), "dv");
            Assert.That(dq.ToDoubleArray(), Is.Not.EqualTo(dqStart), "the backward added something");
        });
    }

    [Test]
    public void Views_are_refused_where_the_layout_must_be_row_major()
    {
        using var store = Random(8, new Shape(1, H, Tq, Dqk), DType.F32);
        using var view = store.Transpose(1, 2);
        using var w = Random(9, new Shape(5, Dqk), DType.F32);
        var linear = Assert.Throws<ArgumentException>(() => Linear.Forward(view, w))!;
        Assert.That(linear.ParamName, Is.EqualTo("x"));
        Assert.That(linear.Message, Does.Contain("expected a contiguous tensor"));

        // A ragged batch packs its tokens: its tensors must be contiguous.
        var layout = SequenceLayout.FromLengths(3, 4);
        var ragged = new AttentionOptions(0.5, Causal: true) { Sequences = layout };
        using var contiguous = Random(10, new Shape(1, Tq, H, Dqk), DType.F32);
        var error = Assert.Throws<ArgumentException>(() => SoftmaxAttention.Forward(view, contiguous, contiguous, ragged))!;
        Assert.That(error.ParamName, Is.EqualTo("q"));

        // The last axis must stay contiguous.
        using var columns = store.Transpose(2, 3);
        Assert.That(Assert.Throws<ArgumentException>(() => SoftmaxAttention.Forward(columns, columns, columns, new AttentionOptions(0.5, Causal: false)))!.Message,
            Does.Contain("expected its last axis contiguous"));
    }

    [TestCase(DType.F32)]
    [TestCase(DType.F64)]
    public unsafe void Fused_qkv_memory_is_attended_in_place_through_strided_wraps(DType dtype)
    {
        // One [B, T, 3, H, d] projection output (as a fused w_qkv gives it), never split: q, k and v are views with a token
        // stride of 3·H·d, each starting d·H elements after the last. The same numbers as contiguous copies give the same bits.
        const int b = 2, t = 6, h = 3, d = 8;
        var options = new AttentionOptions(1.0 / Math.Sqrt(d), Causal: true);
        using var fused = Random(11, new Shape(b, t, 3, h, d), dtype);
        long[] strides = [(long)t * 3 * h * d, 3 * h * d, d, 1];
        var shape = new Shape(b, t, h, d);
        fixed (byte* start = ((HostTensor)fused).Bytes)
        {
            int part = h * d * dtype.SizeInBytes();
            using var q = Backend.Cpu.Wrap((nint)start, shape, strides, dtype, owner: fused);
            using var k = Backend.Cpu.Wrap((nint)(start + part), shape, strides, dtype, owner: fused);
            using var v = Backend.Cpu.Wrap((nint)(start + (2 * part)), shape, strides, dtype, owner: fused);
            Assert.That(q.IsContiguous, Is.False);
            Assert.That(q.Strides, Is.EqualTo(strides));
            using var qc = Copy(q);
            using var kc = Copy(k);
            using var vc = Copy(v);
            using var o = SoftmaxAttention.Forward(q, k, v, options, null, out var lse);
            using var oc = SoftmaxAttention.Forward(qc, kc, vc, options, null, out var lsec);
            using (lse)
            using (lsec)
            {
                Assert.That(o.ToDoubleArray(), Is.EqualTo(oc.ToDoubleArray()), "o from the fused memory");
                // Gradients written into a fused gradient buffer through the same kind of views; the gaps stay as they were.
                using var dfused = Backend.Cpu.Zeros(fused.Shape, dtype);
                using var dO = Random(12, shape, dtype);
                fixed (byte* dstart = ((HostTensor)dfused).Bytes)
                {
                    using var dq = Backend.Cpu.Wrap((nint)dstart, shape, strides, dtype);
                    using var dv = Backend.Cpu.Wrap((nint)(dstart + (2 * part)), shape, strides, dtype);
                    SoftmaxAttention.Backward(q, k, v, options, null, o, lse, dO, dq, null, dv);
                    using var dqc = Backend.Cpu.Zeros(shape, dtype);
                    using var dvc = Backend.Cpu.Zeros(shape, dtype);
                    SoftmaxAttention.Backward(qc, kc, vc, options, null, oc, lsec, dO, dqc, null, dvc);
                    Assert.That(dq.ToDoubleArray(), Is.EqualTo(dqc.ToDoubleArray()), "dq through the view");
                    Assert.That(dv.ToDoubleArray(), Is.EqualTo(dvc.ToDoubleArray()), "dv through the view");
                    using var dk = Backend.Cpu.Wrap((nint)(dstart + part), shape, strides, dtype);
                    Assert.That(dk.ToDoubleArray(), Is.All.EqualTo(0), "the k slots, never passed, are untouched");
                }
            }
        }
    }

    [Test]
    public void A_view_with_gaps_copies_in_and_out_without_touching_the_gaps()
    {
        var storage = Enumerable.Range(0, 2 * 3 * 4).Select(i => (float)i).ToArray();
        // Rows of 2 out of every 4 elements: a [2, 3, 2] view with strides [12, 4, 1] over 24 floats (extent 22).
        var handle = storage.AsMemory().Pin();
        unsafe
        {
            using var gapped = Backend.Cpu.Wrap((nint)handle.Pointer, new Shape(2, 3, 2), [12, 4, 1], DType.F32);
            Assert.That(gapped.ToArray(), Is.EqualTo(new float[] { 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21 }));
            gapped.CopyFrom(new float[12]);
            Assert.That(storage, Is.EqualTo(Enumerable.Range(0, 24).Select(i => i % 4 < 2 ? 0f : i)), "only the view's elements were written");
            var e = Assert.Throws<ArgumentException>(() => Backend.Cpu.Wrap((nint)handle.Pointer, new Shape(2, 3, 2), [12, 4, 2], DType.F32))!;
            Assert.That(e.ParamName, Is.EqualTo("strides"));
            Assert.That(e.Message, Does.Contain("contiguous last axis"));
            e = Assert.Throws<ArgumentException>(() => Backend.Cpu.Wrap((nint)handle.Pointer, new Shape(2, 3, 2), [12, 4], DType.F32))!;
            Assert.That(e.Message, Does.Contain("expected 3 strides"));
        }
        handle.Dispose();
    }

    private static Tensor Random(int seed, Shape shape, DType dtype) =>
        Backend.Cpu.FromArray(TestData.Representable(TestData.NormalSingle(seed, shape.ElementCount), dtype), shape, dtype);

    // A contiguous copy of a view (its elements in the view's row-major order).
    private static Tensor Copy(Tensor view) => Backend.Cpu.FromArray(view.ToDoubleArray(), view.Shape, view.DType);
}

using System.Buffers;
using System.Runtime.InteropServices;
using Attention.Native.Ops;
using Attention.Native.Tests.Support;
using NumericsTensor = System.Numerics.Tensors.Tensor;

namespace Attention.Native.Tests.Core;

/// <summary>
/// Host tensors over memory the caller owns (<see cref="CpuBackend.Wrap{T}(Memory{T}, Shape)"/>, a System.Numerics.Tensors
/// tensor, a native pointer): ops read the caller's values where they lie (a change the caller makes is seen by the next op)
/// and write their results into the caller's memory; nothing is copied and disposing frees nothing of the caller's.
/// </summary>
public class ZeroCopyHostTests
{
    private const int B = 1, T = 5, H = 2, D = 8;

    private static readonly Shape QkvShape = new(B, T, H, D);

    private static readonly AttentionOptions Causal = new(1.0 / Math.Sqrt(D), Causal: true);

    [Test]
    public void Ops_read_wrapped_memory_in_place_and_see_the_callers_later_writes()
    {
        float[] q = TestData.NormalSingle(1, QkvShape.ElementCount), k = TestData.NormalSingle(2, QkvShape.ElementCount), v = TestData.NormalSingle(3, QkvShape.ElementCount);
        using var qt = Backend.Cpu.Wrap(q.AsMemory(), QkvShape);
        using var kt = Backend.Cpu.Wrap(k.AsMemory(), QkvShape);
        using var vt = Backend.Cpu.Wrap(v.AsMemory(), QkvShape);
        using var first = SoftmaxAttention.Forward(qt, kt, vt, Causal);
        Assert.That(first.ToArray(), Is.EqualTo(Reference(q, k, v)), "the wrapped inputs as copies give");

        // The caller changes its arrays; the same tensors now hold the new values.
        for (int i = 0; i < v.Length; i++)
        {
            v[i] = -2 * v[i];
        }
        q[3] += 1.5f;
        using var second = SoftmaxAttention.Forward(qt, kt, vt, Causal);
        Assert.Multiple(() =>
        {
            Assert.That(second.ToArray(), Is.EqualTo(Reference(q, k, v)), "after the caller's writes");
            Assert.That(second.ToArray(), Is.Not.EqualTo(first.ToArray()));
        });
    }

    [Test]
    public void An_op_writes_its_output_into_the_callers_memory()
    {
        float[] q = TestData.NormalSingle(4, QkvShape.ElementCount), k = TestData.NormalSingle(5, QkvShape.ElementCount), v = TestData.NormalSingle(6, QkvShape.ElementCount);
        var o = new float[QkvShape.ElementCount];
        var lse = new float[B * H * T];
        using var qt = Backend.Cpu.FromArray(q, QkvShape);
        using var kt = Backend.Cpu.FromArray(k, QkvShape);
        using var vt = Backend.Cpu.FromArray(v, QkvShape);
        using (var ot = Backend.Cpu.Wrap(o.AsMemory(), QkvShape))
        using (var lt = Backend.Cpu.Wrap(lse.AsMemory(), new Shape(B, H, T)))
        {
            SoftmaxAttention.Forward(qt, kt, vt, Causal, null, ot, lt);
        }
        Assert.That(o, Is.EqualTo(Reference(q, k, v)), "o written into the caller's array");
        Assert.That(lse, Has.All.Not.EqualTo(0f), "every row's log-sum-exp written");

        // A pool of pages in the caller's memory: the paged cache's writes land there.
        var pool = new float[3 * 4 * 2];
        var table = new PageTable(4, 2, [2, 0], [5]);
        var values = TestData.NormalSingle(7, 5 * 2);
        using (var pages = Backend.Cpu.Wrap(pool.AsMemory(), new Shape(3, 4, 2)))
        using (var rows = Backend.Cpu.FromArray(values, new Shape(1, 5, 2)))
        {
            PagedAttention.Write(rows, pages, SequenceLayout.FromLengths(5), table);
        }
        for (int t = 0; t < 5; t++)
        {
            int slot = table.Slot(0, t);
            Assert.That(pool.AsSpan(slot * 2, 2).ToArray(), Is.EqualTo(values.AsSpan(t * 2, 2).ToArray()), $"token {t} in slot {slot}");
        }
    }

    [Test]
    public void A_numerics_tensor_is_wrapped_and_a_tensor_is_seen_as_a_tensor_span_without_copies()
    {
        var data = TestData.NormalSingle(8, QkvShape.ElementCount);
        var numerics = NumericsTensor.Create(data, [B, T, H, D]);
        using var q = Backend.Cpu.Wrap(numerics);
        Assert.That(q.Shape, Is.EqualTo(QkvShape));
        numerics[0, 1, 1, 2] = 42f; // through the numerics tensor …
        Assert.That(q.ToArray()[(((1 * H) + 1) * D) + 2], Is.EqualTo(42f), "… seen by ours");

        using var o = Backend.Cpu.Zeros(QkvShape);
        var span = ((HostTensor)o).AsTensorSpan<float>();
        Assert.That(span.Lengths.ToArray(), Is.EqualTo(new nint[] { B, T, H, D }));
        span[0, 4, 1, 7] = -3f; // through the tensor span …
        Assert.That(o.ToArray()[^1], Is.EqualTo(-3f), "… seen by the tensor");
    }

    [Test]
    public void A_tensor_span_is_used_in_place_for_the_length_of_a_call()
    {
        float[] q = TestData.NormalSingle(10, QkvShape.ElementCount), k = TestData.NormalSingle(11, QkvShape.ElementCount), v = TestData.NormalSingle(12, QkvShape.ElementCount);
        var o = new float[QkvShape.ElementCount];
        using var kt = Backend.Cpu.FromArray(k, QkvShape);
        using var vt = Backend.Cpu.FromArray(v, QkvShape);
        using var lt = Backend.Cpu.Zeros(new Shape(B, H, T));
        var qSpan = new System.Numerics.Tensors.TensorSpan<float>(q, [B, T, H, D]);
        HostTensor? seen = Backend.Cpu.Wrap(qSpan, qt =>
        {
            using var ot = Backend.Cpu.Wrap(o.AsMemory(), QkvShape);
            SoftmaxAttention.Forward(qt, kt, vt, Causal, null, ot, lt);
            return qt;
        });
        Assert.Multiple(() =>
        {
            Assert.That(o, Is.EqualTo(Reference(q, k, v)));
            Assert.That(seen!.IsDisposed, Is.True, "the span's tensor ends with the call");
        });
    }

    [Test]
    public unsafe void Native_memory_is_wrapped_with_its_owner_and_never_freed_by_the_tensor()
    {
        var owner = new NativeBlock(QkvShape.ElementCount * sizeof(double));
        try
        {
            var values = TestData.NormalSingle(9, QkvShape.ElementCount).Select(x => (double)x).ToArray();
            values.CopyTo(new Span<double>((void*)owner.Pointer, values.Length));
            using (var t = Backend.Cpu.Wrap(owner.Pointer, QkvShape, DType.F64, owner))
            {
                Assert.That(((HostTensor)t).IsExternal, Is.True);
                Assert.That(t.ToDoubleArray(), Is.EqualTo(values));
                ((HostTensor)t).AsSpan<double>()[0] = 7.0; // a write through the tensor …
            }
            Assert.That(*(double*)owner.Pointer, Is.EqualTo(7.0), "… is in the native memory, still allocated after Dispose");
        }
        finally
        {
            owner.Dispose();
        }
    }

    [Test]
    public void Disposing_unpins_the_callers_memory_and_ends_every_view()
    {
        using var manager = new CountingMemory((int)QkvShape.ElementCount);
        var t = Backend.Cpu.Wrap(manager.Memory, QkvShape);
        var view = t.Reshape(new Shape((int)QkvShape.ElementCount));
        Assert.That(manager.Pinned, Is.EqualTo(1), "pinned while wrapped");
        t.Dispose();
        Assert.Multiple(() =>
        {
            Assert.That(manager.Pinned, Is.Zero, "unpinned by Dispose");
            Assert.That(view.IsDisposed, Is.True);
            Assert.Throws<ObjectDisposedException>(() => view.ToArray());
        });
    }

    [Test]
    public unsafe void Wrong_memory_is_refused_naming_the_argument_with_expected_and_actual()
    {
        var small = new float[(int)QkvShape.ElementCount - 1];
        var memory = Assert.Throws<ArgumentException>(() => Backend.Cpu.Wrap(small.AsMemory(), QkvShape))!;
        Assert.That(memory.ParamName, Is.EqualTo("memory"));
        Assert.That(memory.Message, Does.Contain($"expected {QkvShape.ElementCount * 4} bytes").And.Contain($"actual {small.Length * 4}"));

        var element = Assert.Throws<ArgumentException>(() => Backend.Cpu.Wrap(new int[4].AsMemory(), new Shape(4)))!;
        Assert.That(element.Message, Does.Contain("expected float, double, Half or BFloat16, actual Int32"));

        var block = new NativeBlock(64);
        try
        {
            var aligned = Assert.Throws<ArgumentException>(() => Backend.Cpu.Wrap(block.Pointer + 2, new Shape(4), DType.F32))!;
            Assert.That(aligned.ParamName, Is.EqualTo("pointer"));
            Assert.That(aligned.Message, Does.Contain("aligned to the 4-byte elements"));
            Assert.That(Assert.Throws<ArgumentException>(() => Backend.Cpu.Wrap(0, new Shape(4), DType.F32))!.Message, Does.Contain("actual null"));
        }
        finally
        {
            block.Dispose();
        }

        var strided = NumericsTensor.Create(new float[12], [3, 2], [1, 3]); // column-major: not dense row-major
        Assert.That(Assert.Throws<ArgumentException>(() => Backend.Cpu.Wrap(strided))!.ParamName, Is.EqualTo("tensor"));
    }

    // The same attention over copies of the arrays.
    private static float[] Reference(float[] q, float[] k, float[] v)
    {
        using var qc = Backend.Cpu.FromArray(q, QkvShape);
        using var kc = Backend.Cpu.FromArray(k, QkvShape);
        using var vc = Backend.Cpu.FromArray(v, QkvShape);
        using var o = SoftmaxAttention.Forward(qc, kc, vc, Causal);
        return o.ToArray();
    }

    /// <summary>Zeroed native memory, freed by Dispose.</summary>
    private sealed unsafe class NativeBlock(long bytes) : IDisposable
    {
        public nint Pointer { get; private set; } = (nint)NativeMemory.AlignedAlloc((nuint)bytes, 64);

        public void Dispose()
        {
            NativeMemory.AlignedFree((void*)Pointer);
            Pointer = 0;
        }
    }

    /// <summary>Native memory behind a Memory&lt;float&gt; that counts its pins.</summary>
    private sealed unsafe class CountingMemory(int length) : MemoryManager<float>
    {
        private readonly float* _data = (float*)NativeMemory.AllocZeroed((nuint)length, sizeof(float));

        public int Pinned { get; private set; }

        public override Span<float> GetSpan() => new(_data, length);

        public override MemoryHandle Pin(int elementIndex = 0)
        {
            Pinned++;
            return new MemoryHandle(_data + elementIndex, default, this);
        }

        public override void Unpin() => Pinned--;

        protected override void Dispose(bool disposing) => NativeMemory.Free(_data);
    }

    [Test]
    public void A_layer_parameter_bound_to_caller_memory_is_read_where_it_lies()
    {
        var config = new Attention.Native.Variants.GqaConfig { Kind = "gqa", DModel = 8, Heads = 2, KvHeads = 1, HeadDim = 4, Causal = true, Rope = true };
        using var layer = Attention.Native.Variants.AttentionLayer.Create(config);
        layer.InitializeParameters(3);
        using var copy = Attention.Native.Variants.AttentionLayer.Create(config);
        copy.InitializeParameters(3);
        float[] x = TestData.NormalSingle(4, 2 * 3 * 8);
        using var tx = Backend.Cpu.FromArray(x, new Shape(2, 3, 8));

        // w_o bound to the caller's array (its values the layer's own): the same output, then the caller's edits are seen.
        float[] wO = layer.Parameters["w_o"].ToArray();
        var bound = Backend.Cpu.Wrap(wO.AsMemory(), new Shape(8, 8));
        layer.BindParameter("w_o", bound);
        Assert.That(layer.Parameters["w_o"], Is.SameAs(bound), "the caller's tensor itself");
        using (var y = layer.Forward(tx))
        using (var expected = copy.Forward(tx))
        {
            Assert.That(y.ToArray(), Is.EqualTo(expected.ToArray()), "bound to the same values");
        }
        wO[5] += 0.75f;
        copy.Parameters["w_o"].CopyFrom(wO);
        using (var y = layer.Forward(tx))
        using (var expected = copy.Forward(tx))
        {
            Assert.That(y.ToArray(), Is.EqualTo(expected.ToArray()), "the caller's write is seen by the next call");
        }

        // A pass whose parameter is bound anew before its backward refuses it; bad tensors name the argument.
        using var pass = layer.ForwardForTraining(tx);
        using var rebound = Backend.Cpu.Wrap(wO.AsMemory(), new Shape(8, 8));
        layer.BindParameter("w_o", rebound);
        using var dy = Backend.Cpu.FromArray(x, new Shape(2, 3, 8));
        Assert.That(() => pass.Backward(dy), Throws.InvalidOperationException.With.Message.Contains("w_o"));
        var e = Assert.Throws<ArgumentException>(() => layer.BindParameter("w_o", Backend.Cpu.Zeros(new Shape(8, 4))))!;
        Assert.That(e.ParamName, Is.EqualTo("tensor"));
        Assert.That(e.Message, Does.Contain("[8, 8]").And.Contain("[8, 4]"));
        e = Assert.Throws<ArgumentException>(() => layer.BindParameter("w_x", bound))!;
        Assert.That(e.ParamName, Is.EqualTo("name"));
        Assert.That(() => layer.BindParameter("w_o", Backend.Cpu.Zeros(new Shape(8, 8), DType.F64)), Throws.ArgumentException.With.Message.Contains("F64"));

        // Disposing the layer leaves bound tensors to their owner.
        layer.Dispose();
        Assert.That(bound.ToArray(), Is.EqualTo(wO), "the bound tensor is still usable");
        bound.Dispose();
    }
}

using Attention.Native.Ops;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Serving;

/// <summary>
/// <see cref="SoftmaxAttention"/> on a ragged batch with separate query and key layouts (a chunk of new queries per
/// sequence against all its keys): o, lse and the gradients equal the dense op run on each sequence alone.
/// </summary>
[TestFixture]
public sealed class RaggedAttentionOpTests
{
    private const int H = 4, G = 2, Dqk = 6, Dv = 5;

    [TestCase(true)]
    [TestCase(false)]
    public void Queries_and_keys_of_different_layouts_equal_each_sequence_alone(bool causal)
    {
        var queries = SequenceLayout.FromLengths(2, 1, 3, 4);
        var keys = SequenceLayout.FromLengths(5, 1, 7, 4);
        var cpu = Backend.Cpu;
        var q = TestData.Normal(1, (long)queries.TokenCount * H * Dqk);
        var k = TestData.Normal(2, (long)keys.TokenCount * G * Dqk);
        var v = TestData.Normal(3, (long)keys.TokenCount * G * Dv);
        var dO = TestData.Normal(4, (long)queries.TokenCount * H * Dv);
        using var tq = cpu.FromArray(q, new Shape(1, queries.TokenCount, H, Dqk), DType.F64);
        using var tk = cpu.FromArray(k, new Shape(1, keys.TokenCount, G, Dqk), DType.F64);
        using var tv = cpu.FromArray(v, new Shape(1, keys.TokenCount, G, Dv), DType.F64);
        using var tdO = cpu.FromArray(dO, new Shape(1, queries.TokenCount, H, Dv), DType.F64);
        var options = new AttentionOptions(0.4, causal, Sequences: queries, KeySequences: keys);
        using var o = SoftmaxAttention.Forward(tq, tk, tv, options, null, out var lse);
        using var _ = lse;
        using var dq = cpu.Zeros(tq.Shape, DType.F64);
        using var dk = cpu.Zeros(tk.Shape, DType.F64);
        using var dv = cpu.Zeros(tv.Shape, DType.F64);
        SoftmaxAttention.Backward(tq, tk, tv, options, null, o, lse, tdO, dq, dk, dv);

        var (oAll, lseAll, dqAll, dkAll, dvAll) = (o.ToDoubleArray(), lse.ToDoubleArray(), dq.ToDoubleArray(), dk.ToDoubleArray(), dv.ToDoubleArray());
        for (int s = 0; s < queries.Count; s++)
        {
            int q0 = queries.Start(s), lq = queries.Length(s), k0 = keys.Start(s), lk = keys.Length(s);
            using var sq = cpu.FromArray(q.AsSpan(q0 * H * Dqk, lq * H * Dqk).ToArray(), new Shape(1, lq, H, Dqk), DType.F64);
            using var sk = cpu.FromArray(k.AsSpan(k0 * G * Dqk, lk * G * Dqk).ToArray(), new Shape(1, lk, G, Dqk), DType.F64);
            using var sv = cpu.FromArray(v.AsSpan(k0 * G * Dv, lk * G * Dv).ToArray(), new Shape(1, lk, G, Dv), DType.F64);
            using var sdO = cpu.FromArray(dO.AsSpan(q0 * H * Dv, lq * H * Dv).ToArray(), new Shape(1, lq, H, Dv), DType.F64);
            var dense = new AttentionOptions(0.4, causal);
            using var so = SoftmaxAttention.Forward(sq, sk, sv, dense, null, out var slse);
            using var __ = slse;
            using var sdq = cpu.Zeros(sq.Shape, DType.F64);
            using var sdk = cpu.Zeros(sk.Shape, DType.F64);
            using var sdv = cpu.Zeros(sv.Shape, DType.F64);
            SoftmaxAttention.Backward(sq, sk, sv, dense, null, so, slse, sdO, sdq, sdk, sdv);
            Near(so.ToDoubleArray(), oAll.AsSpan(q0 * H * Dv, lq * H * Dv), $"o of sequence {s}");
            Near(sdq.ToDoubleArray(), dqAll.AsSpan(q0 * H * Dqk, lq * H * Dqk), $"dq of sequence {s}");
            Near(sdk.ToDoubleArray(), dkAll.AsSpan(k0 * G * Dqk, lk * G * Dqk), $"dk of sequence {s}");
            Near(sdv.ToDoubleArray(), dvAll.AsSpan(k0 * G * Dv, lk * G * Dv), $"dv of sequence {s}");
            var expectedLse = slse.ToDoubleArray();
            for (int h = 0; h < H; h++)
            {
                Near(expectedLse.AsSpan(h * lq, lq).ToArray(), lseAll.AsSpan((h * queries.TokenCount) + q0, lq), $"lse of sequence {s}, head {h}");
            }
        }
    }

    [Test]
    public void Malformed_ragged_calls_name_the_argument()
    {
        var cpu = Backend.Cpu;
        var layout = SequenceLayout.FromLengths(2, 3);
        using var q = cpu.Zeros(new Shape(1, 5, H, Dqk), DType.F32);
        using var k = cpu.Zeros(new Shape(1, 5, G, Dqk), DType.F32);
        using var v = cpu.Zeros(new Shape(1, 5, G, Dv), DType.F32);
        void Refused(AttentionOptions options, string name, string text, Tensor? bias = null, Tensor? query = null)
        {
            var e = Assert.Throws<ArgumentException>(() => SoftmaxAttention.Forward(query ?? q, k, v, options, bias))!;
            Assert.That(e.ParamName, Is.EqualTo(name));
            Assert.That(e.Message, Does.Contain(text));
        }
        Refused(new AttentionOptions(1, true, Sequences: SequenceLayout.FromLengths(2, 2)), "q", "expected shape [1, 4, 4, 6] (the packed tokens of options.Sequences), actual [1, 5, 4, 6]");
        Refused(new AttentionOptions(1, true, Sequences: layout, KeySequences: SequenceLayout.FromLengths(5)), "options", "expected KeySequences of 2 sequences (as Sequences), actual 1");
        Refused(new AttentionOptions(1, true, Sequences: layout, KeySequences: SequenceLayout.FromLengths(1, 3)), "k", "expected 4 packed key tokens (options.KeySequences), actual 5");
        Refused(new AttentionOptions(1, true, Sequences: layout, KeySequences: SequenceLayout.FromLengths(1, 4)), "options", "expected at most 1 causal queries in sequence 0 (one per key), actual 2");
        Refused(new AttentionOptions(1, true, KeyLength: 5, Sequences: layout), "options", "expected KeyLength null with a ragged batch");
        Refused(new AttentionOptions(1, true, KeySequences: layout), "options", "expected KeySequences only with Sequences");
        using var bias = cpu.Zeros(new Shape(H, 5, 5), DType.F32);
        Refused(new AttentionOptions(1, false, Sequences: layout), "bias", "expected null with a ragged batch", bias);
        using var batch2 = cpu.Zeros(new Shape(2, 5, H, Dqk), DType.F32);
        using var k2 = cpu.Zeros(new Shape(2, 5, G, Dqk), DType.F32);
        Assert.That(Assert.Throws<ArgumentException>(() => SoftmaxAttention.Forward(batch2, k2, k2, new AttentionOptions(1, true, Sequences: layout)))!.ParamName, Is.EqualTo("q"));
    }

    private static void Near(double[] expected, ReadOnlySpan<double> actual, string what)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length), what);
        double scale = 1 + expected.Max(Math.Abs), worst = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
        }
        Assert.That(worst / scale, Is.LessThanOrEqualTo(1e-12), what);
    }
}

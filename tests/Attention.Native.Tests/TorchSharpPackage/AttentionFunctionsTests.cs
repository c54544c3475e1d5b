using Attention.Native.Tests.Support;
using Attention.Native.Tests.TorchReference;
using Attention.Native.Torch;
using TorchSharp;

namespace Attention.Native.Tests.TorchSharpPackage;

using static Attention.Native.Tests.TorchSharpPackage.AttentionModuleTests;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;
using TorchTensor = TorchSharp.torch.Tensor;

/// <summary>
/// <see cref="AttentionFunctions"/> inside TorchSharp's autograd: outputs and input gradients against torch's own
/// scaled_dot_product_attention and against torch compositions of variants.md (Lightning's recurrence, TPA's and MLA's
/// decode written out), and the zero-copy views: torch memory is read and written where it lies.
/// </summary>
public class AttentionFunctionsTests : TorchReferenceFixture
{
    private static IEnumerable<TestCaseData> SdpaCases() =>
        from dtype in new[] { ScalarType.Float64, ScalarType.Float32 }
        from causal in new[] { true, false }
        from heads in new[] { (4, 4), (4, 2), (4, 1) }
        select new TestCaseData(dtype, causal, heads.Item1, heads.Item2).SetArgDisplayNames($"{dtype}", causal ? "causal" : "full", $"H{heads.Item1}", $"G{heads.Item2}");

    [TestCaseSource(nameof(SdpaCases))]
    public void Scaled_dot_product_attention_matches_torch_forward_and_backward(ScalarType dtype, bool causal, int heads, int kvHeads)
    {
        using var scope = torch.NewDisposeScope();
        const int b = 2, t = 9, d = 8;
        // Token-major leaves transposed to [B, H, T, d], as projections give them: read in place by the op (a contiguous view).
        var (q1, k1, v1) = (Leaf(1, [b, t, heads, d], dtype), Leaf(2, [b, t, kvHeads, d], dtype), Leaf(3, [b, t, kvHeads, d], dtype));
        var (q2, k2, v2) = (Leaf(1, [b, t, heads, d], dtype), Leaf(2, [b, t, kvHeads, d], dtype), Leaf(3, [b, t, kvHeads, d], dtype));
        var dO = Normal(4, [b, heads, t, d], dtype);

        var ours = AttentionFunctions.ScaledDotProductAttention(q1.transpose(1, 2), k1.transpose(1, 2), v1.transpose(1, 2), causal);
        (ours * dO).sum().backward();
        var reference = F.scaled_dot_product_attention(q2.transpose(1, 2), k2.transpose(1, 2).repeat_interleave(heads / kvHeads, 1),
            v2.transpose(1, 2).repeat_interleave(heads / kvHeads, 1), is_casual: causal);
        (reference * dO).sum().backward();

        double tolerance = dtype == ScalarType.Float64 ? 1e-12 : 1e-5;
        Near(Values(ours), Values(reference), tolerance, "o");
        Near(Values(q1.grad!), Values(q2.grad!), tolerance, "dq");
        Near(Values(k1.grad!), Values(k2.grad!), tolerance, "dk");
        Near(Values(v1.grad!), Values(v2.grad!), tolerance, "dv");
    }

    [TestCase(ScalarType.BFloat16)]
    [TestCase(ScalarType.Float16)]
    public void Sixteen_bit_tensors_match_torch_computed_in_float64(ScalarType dtype)
    {
        using var scope = torch.NewDisposeScope();
        const int b = 2, h = 4, g = 2, t = 12, d = 16;
        // The same 16-bit values on both sides; torch's reference in float64, ours in 16 bits with fp32 accumulation.
        var (q, k, v) = (Leaf(50, [b, h, t, d], dtype), Leaf(51, [b, g, t, d], dtype), Leaf(52, [b, g, t, d], dtype));
        var (q64, k64, v64) = (Wide(q), Wide(k), Wide(v));
        var dO = Normal(53, [b, h, t, d], dtype);
        var ours = AttentionFunctions.ScaledDotProductAttention(q, k, v, isCausal: true);
        (ours.to_type(ScalarType.Float64) * dO.to_type(ScalarType.Float64)).sum().backward();
        var reference = F.scaled_dot_product_attention(q64, k64.repeat_interleave(h / g, 1), v64.repeat_interleave(h / g, 1), is_casual: true);
        (reference * dO.to_type(ScalarType.Float64)).sum().backward();
        Assert.That(ours.dtype, Is.EqualTo(dtype));
        // design.md's 16-bit tolerance (2e-2 of 1 + max): the output and each gradient are rounded to 16 bits once.
        Near(Values(ours), Values(reference), 2e-2, "o");
        Near(Values(q.grad!), Values(q64.grad!), 2e-2, "dq");
        Near(Values(k.grad!), Values(k64.grad!), 2e-2, "dk");
        Near(Values(v.grad!), Values(v64.grad!), 2e-2, "dv");
    }

    private static TorchTensor Wide(TorchTensor t) => t.detach().to_type(ScalarType.Float64).requires_grad_(true);

    [Test]
    public void Head_major_and_odd_layouts_give_the_same_result()
    {
        using var scope = torch.NewDisposeScope();
        const int b = 2, h = 3, t = 7, d = 4;
        var q = Normal(5, [b, h, t, d], ScalarType.Float64);
        var k = Normal(6, [b, h, t, d], ScalarType.Float64);
        var v = Normal(7, [b, h, t, d], ScalarType.Float64);
        var reference = F.scaled_dot_product_attention(q, k, v, is_casual: true);
        // Contiguous [B, H, T, d] (a strided token-major view), and a layout whose last axis is not contiguous (copied once).
        var headMajor = AttentionFunctions.ScaledDotProductAttention(q, k, v, isCausal: true);
        var oddQ = q.transpose(2, 3).contiguous().transpose(2, 3);
        Assert.That(oddQ.stride(3), Is.Not.EqualTo(1L), "the odd layout's last axis is strided");
        var odd = AttentionFunctions.ScaledDotProductAttention(oddQ, k, v, isCausal: true);
        Near(Values(headMajor), Values(reference), 1e-12, "head-major");
        Near(Values(odd), Values(reference), 1e-12, "odd layout");

        // q, k, v as slices of one fused [B, T, 3, H, d] projection: views with gaps, read in place.
        var fused = torch.stack([q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)], 2);
        var (fq, fk, fv) = (fused[.., .., 0].transpose(1, 2), fused[.., .., 1].transpose(1, 2), fused[.., .., 2].transpose(1, 2));
        using (var view = TorchMemory.TokenMajor(fq, Backend.Cpu, "q", out var copy))
        {
            Assert.That(copy, Is.Null, "a slice of the fused projection is not copied");
            Assert.That(view.Strides, Is.EqualTo(new long[] { t * 3 * h * d, 3 * h * d, d, 1 }));
        }
        Near(Values(AttentionFunctions.ScaledDotProductAttention(fq, fk, fv, isCausal: true)), Values(reference), 1e-12, "fused projection slices");
    }

    [Test]
    public void Causal_with_fewer_queries_than_keys_aligns_at_the_bottom_right()
    {
        using var scope = torch.NewDisposeScope();
        const int b = 1, h = 2, tq = 3, tk = 8, d = 4;
        var q = Normal(8, [b, h, tq, d], ScalarType.Float64);
        var k = Normal(9, [b, h, tk, d], ScalarType.Float64);
        var v = Normal(10, [b, h, tk, d], ScalarType.Float64);
        // Query i sits at position tk − tq + i and sees keys up to it (a cache's new tokens).
        var visible = torch.ones(tq, tk, ScalarType.Bool).tril(tk - tq);
        var scores = q.matmul(k.transpose(2, 3)) / Math.Sqrt(d);
        var reference = scores.masked_fill(visible.logical_not(), double.NegativeInfinity).softmax(-1).matmul(v);
        Near(Values(AttentionFunctions.ScaledDotProductAttention(q, k, v, isCausal: true)), Values(reference), 1e-12, "bottom-right causal");
    }

    [Test]
    public void Torch_memory_is_read_and_written_where_it_lies()
    {
        using var scope = torch.NewDisposeScope();
        // [B, H, T, d] memory as the op's [B, T, H, d]: a strided view of the same storage, no copy.
        var headMajor = Normal(11, [2, 3, 5, 4], ScalarType.Float32);
        using var view = TorchMemory.TokenMajor(headMajor, Backend.Cpu, "q", out var copy);
        Assert.That(copy, Is.Null, "no copy of contiguous [B, H, T, d]");
        Assert.That(view.IsContiguous, Is.False, "a strided view");
        Assert.That(view.Shape, Is.EqualTo(new Shape(2, 5, 3, 4)));
        Assert.That(view.ToDoubleArray(), Is.EqualTo(Values(headMajor.transpose(1, 2))), "the view reads the tensor's values");
        headMajor.mul_(2);
        Assert.That(view.ToDoubleArray(), Is.EqualTo(Values(headMajor.transpose(1, 2))), "a write through torch is seen by the view");

        // A transposed token-major tensor is contiguous memory for the op.
        var tokenMajor = Normal(12, [2, 5, 3, 4], ScalarType.Float32);
        using var direct = TorchMemory.TokenMajor(tokenMajor.transpose(1, 2), Backend.Cpu, "q", out copy);
        Assert.That(copy, Is.Null);
        Assert.That(direct.IsContiguous, Is.True, "token-major memory stays contiguous");
        // And the other way: what an op writes into the view lands in the torch tensor.
        var values = Enumerable.Range(0, 120).Select(i => (float)i).ToArray();
        direct.CopyFrom(values);
        Assert.That(Values(tokenMajor), Is.EqualTo(values.Select(v => (double)v)), "a write through the view is seen by torch");
    }

    [Test]
    public void Lightning_matches_the_recurrence_with_states_and_gradients()
    {
        using var scope = torch.NewDisposeScope();
        const int b = 2, t = 11, h = 2, dk = 4, dv = 3;
        double[] decay = [0.9, 0.6];
        var dtype = ScalarType.Float64;
        TorchTensor[] Inputs() => [Leaf(20, [b, t, h, dk], dtype), Leaf(21, [b, t, h, dk], dtype), Leaf(22, [b, t, h, dv], dtype), Leaf(23, [b, h, dk, dv], dtype)];
        var ours = Inputs();
        var theirs = Inputs();
        var dO = Normal(24, [b, t, h, dv], dtype);
        var dS = Normal(25, [b, h, dk, dv], dtype);

        var (o, final) = AttentionFunctions.LightningAttention(ours[0], ours[1], ours[2], decay, ours[3], outputFinalState: true, blockSize: 4);
        ((o * dO).sum() + (final! * dS).sum()).backward();

        // variants.md §7: o_t = Σ_{s≤t} λ^(t−s) (q_t·k_s) v_s + λ^(t+1) q_t S0;  S_T−1 = λ^T S0 + Σ_s λ^(T−1−s) k_sᵀ v_s.
        var (q, k, v, s0) = (theirs[0].transpose(1, 2), theirs[1].transpose(1, 2), theirs[2].transpose(1, 2), theirs[3]);
        var steps = torch.arange(t, dtype: dtype);
        var lambda = torch.tensor(decay, [h, 1L, 1L], dtype);
        var gap = steps.reshape(t, 1) - steps.reshape(1, t);
        var mask = gap.ge(0).to_type(dtype);
        var weights = lambda.pow(gap.clamp_min(0)) * mask;
        var reference = (q.matmul(k.transpose(2, 3)) * weights).matmul(v) + lambda.pow(steps.reshape(t, 1) + 1) * q.matmul(s0);
        var tail = lambda.pow(steps.neg() + (t - 1)).reshape(h, t, 1);
        var finalReference = lambda.pow(t) * s0 + (k * tail).transpose(2, 3).matmul(v);
        ((reference.transpose(1, 2) * dO).sum() + (finalReference * dS).sum()).backward();

        Near(Values(o), Values(reference.transpose(1, 2)), 1e-12, "o");
        Near(Values(final!), Values(finalReference), 1e-12, "final state");
        string[] names = ["dq", "dk", "dv", "dS0"];
        for (int i = 0; i < 4; i++)
        {
            Near(Values(ours[i].grad!), Values(theirs[i].grad!), 1e-12, names[i]);
        }
    }

    [Test]
    public void Tpa_decode_matches_the_factored_scores()
    {
        using var scope = torch.NewDisposeScope();
        const int b = 2, tq = 2, h = 3, rq = 2, rk = 3, rv = 2, d = 4, cap = 9, length = 7;
        var dtype = ScalarType.Float64;
        var (aq, bq) = (Normal(30, [b, tq, h, rq], dtype), Normal(31, [b, tq, rq, d], dtype));
        var (ak, bk) = (Normal(32, [b, cap, h, rk], dtype), Normal(33, [b, cap, rk, d], dtype));
        var (av, bv) = (Normal(34, [b, cap, h, rv], dtype), Normal(35, [b, cap, rv, d], dtype));
        var ours = AttentionFunctions.TpaDecode(aq, bq, ak, bk, av, bv, length);

        // q_h = (1/R_q) Σ_r aq[h,r] bq[r], k_s,h = (1/R_k) Σ_u ak[s,h,u] bk[s,u], v likewise; score = q·k / sqrt(d).
        var q = aq.matmul(bq) / rq;                                  // [B, Tq, H, d]
        var k = ak.matmul(bk) / rk;                                  // [B, Cap, H, d]
        var v = av.matmul(bv) / rv;
        var scores = q.transpose(1, 2).matmul(k.transpose(1, 2).transpose(2, 3)) / Math.Sqrt(d);  // [B, H, Tq, Cap]
        var positions = torch.arange(cap, dtype: ScalarType.Int64).reshape(1, cap);
        var queryAt = torch.arange(tq, dtype: ScalarType.Int64).reshape(tq, 1) + (length - tq);
        var hidden = positions.gt(queryAt);
        var reference = scores.masked_fill(hidden, double.NegativeInfinity).softmax(-1).matmul(v.transpose(1, 2)).transpose(1, 2);
        Near(Values(ours), Values(reference), 1e-12, "TPA decode");
        Assert.That(ours.requires_grad, Is.False, "inference only");
    }

    [Test]
    public void Mla_decode_matches_attention_with_the_keys_and_values_built()
    {
        using var scope = torch.NewDisposeScope();
        const int b = 2, tq = 2, h = 3, dn = 4, dr = 2, dv = 3, dc = 5, cap = 8, length = 6;
        double scale = 1 / Math.Sqrt(dn + dr);
        var dtype = ScalarType.Float64;
        var query = Normal(40, [b, tq, h, dn + dr], dtype);
        var cache = Normal(41, [b, cap, dc + dr], dtype);
        var kvUp = Normal(42, [h * (dn + dv), dc], dtype);
        var ours = AttentionFunctions.MlaDecode(query, cache, kvUp, dn, length, scale);

        // The plain form: k_h,s = [c_s W_kb_hᵀ | k_pe_s], v_h,s = c_s W_vb_hᵀ, W_kb_h and W_vb_h the head's rows of w_kv_b.
        var up = kvUp.reshape(h, dn + dv, dc);
        var (wk, wv) = (up[.., ..dn, ..], up[.., dn.., ..]);
        var (c, kpe) = (cache[.., .., ..dc], cache[.., .., dc..]);
        var kNope = c.unsqueeze(1).matmul(wk.transpose(1, 2).unsqueeze(0));              // [B, H, Cap, dn]
        var keys = torch.cat([kNope, kpe.unsqueeze(1).expand(b, h, cap, dr)], -1);         // [B, H, Cap, dn+dr]
        var values = c.unsqueeze(1).matmul(wv.transpose(1, 2).unsqueeze(0));               // [B, H, Cap, dv]
        var scores = query.transpose(1, 2).matmul(keys.transpose(2, 3)) * scale;           // [B, H, Tq, Cap]
        var hidden = torch.arange(cap, dtype: ScalarType.Int64).reshape(1, cap).gt(torch.arange(tq, dtype: ScalarType.Int64).reshape(tq, 1) + (length - tq));
        var reference = scores.masked_fill(hidden, double.NegativeInfinity).softmax(-1).matmul(values).transpose(1, 2);
        Near(Values(ours), Values(reference), 1e-12, "MLA decode");
    }

    [Test]
    public void Bad_arguments_name_what_was_expected()
    {
        using var scope = torch.NewDisposeScope();
        var q = torch.zeros(1, 4, 5, 8);
        var e = Assert.Throws<ArgumentException>(() => AttentionFunctions.ScaledDotProductAttention(q, torch.zeros(1, 3, 5, 8), torch.zeros(1, 3, 5, 8)))!;
        Assert.That(e.ParamName, Is.EqualTo("key"));
        Assert.That(e.Message, Does.Contain("G dividing 4").And.Contain("[1, 3, 5, 8]"));
        e = Assert.Throws<ArgumentException>(() => AttentionFunctions.ScaledDotProductAttention(q, torch.zeros(1, 4, 5, 8, ScalarType.Float64), torch.zeros(1, 4, 5, 8)))!;
        Assert.That(e.ParamName, Is.EqualTo("key"));
        Assert.That(e.Message, Does.Contain("Float32").And.Contain("Float64"));
        e = Assert.Throws<ArgumentException>(() => AttentionFunctions.ScaledDotProductAttention(torch.zeros(1, 4, 5, 8, ScalarType.Int32), torch.zeros(1, 4, 5, 8, ScalarType.Int32), torch.zeros(1, 4, 5, 8, ScalarType.Int32)))!;
        Assert.That(e.Message, Does.Contain("float32, float64, bfloat16 or float16"));
        e = Assert.Throws<ArgumentException>(() => AttentionFunctions.ScaledDotProductAttention(torch.zeros(1, 4, 6, 8), torch.zeros(1, 4, 5, 8), torch.zeros(1, 4, 5, 8), isCausal: true))!;
        Assert.That(e.ParamName, Is.EqualTo("query"));
    }

    private static TorchTensor Normal(int seed, long[] dims, ScalarType dtype) =>
        torch.tensor(TestData.Normal(seed, (int)dims.Aggregate(1L, (a, x) => a * x)), dims, ScalarType.Float64).to_type(dtype);

    private static TorchTensor Leaf(int seed, long[] dims, ScalarType dtype) => Normal(seed, dims, dtype).requires_grad_(true);
}

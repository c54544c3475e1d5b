using Attention.Native.Tests.Support;
using Attention.Native.Tests.Variants;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Serving;

/// <summary>
/// A ragged batch (<see cref="SequenceLayout"/>) through every causal variant: the packed forward and its gradients equal
/// each sequence run alone (F64 to 1e-12), and the variants with a fixed seq_len refuse it.
/// </summary>
[TestFixture]
public sealed class RaggedLayerTests
{
    /// <summary>Small configs of every variant that takes a ragged batch, with RoPE, YaRN, LRPE and non-causal forms.</summary>
    public static IEnumerable<TestCaseData> Cases()
    {
        yield return Case("mha", """{"d_model": 32, "n_heads": 4, "n_kv_heads": 4, "head_dim": 8, "rope": true}""");
        yield return Case("gqa", """{"d_model": 32, "n_heads": 4, "n_kv_heads": 2, "head_dim": 8, "rope": true, "rope_style": "interleaved"}""", "gqa interleaved");
        yield return Case("mqa", """{"d_model": 32, "n_heads": 4, "n_kv_heads": 1, "head_dim": 8, "rope": false}""");
        yield return Case("gqa", """{"d_model": 32, "n_heads": 4, "n_kv_heads": 2, "head_dim": 8, "rope": true, "causal": false}""", "gqa non-causal");
        yield return Case("gqa", """{"d_model": 32, "n_heads": 4, "n_kv_heads": 2, "head_dim": 8, "rope": true, "rope_scaling": {"type": "yarn", "factor": 4, "original_max_position_embeddings": 4, "mscale": 1, "mscale_all_dim": 0.5}}""", "gqa yarn");
        yield return Case("mla", """{"d_model": 32, "n_heads": 2, "q_lora_rank": 16, "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8}""");
        yield return Case("tpa", """{"d_model": 32, "n_heads": 2, "head_dim": 8, "q_rank": 3, "k_rank": 2, "v_rank": 2, "rope": true}""");
        yield return Case("sas", """{"d_model": 32, "n_heads": 2, "head_dim": 8, "sim_heads": 4, "sim_head_dim": 12, "kernel_size": 3, "rope": true}""");
        yield return Case("transnormer", """{"d_model": 32, "n_heads": 2, "head_dim": 8, "layer_idx": 0, "num_layers": 2}""");
        yield return Case("transnormer", """{"d_model": 32, "n_heads": 2, "head_dim": 8, "layer_idx": 1, "num_layers": 3, "lrpe": true}""", "transnormer lrpe");
        yield return Case("mfa", """{"d_model": 32, "n_heads": 4, "head_dim": 8, "q_lora_dim": 16, "rope": true}""");
    }

    private static TestCaseData Case(string variant, string json, string? name = null) =>
        new TestCaseData(variant, json).SetName(name ?? variant);

    private static readonly int[] Lengths = [5, 1, 9, 3];

    [TestCaseSource(nameof(Cases))]
    public void Packed_forward_equals_each_sequence_alone(string variant, string json)
    {
        using var layer = VariantTestKit.Layer(LayerConfig.Parse(variant, json), seed: 21);
        var sequences = SequenceLayout.FromLengths(Lengths);
        int d = layer.Config.DModel;
        var x = TestData.Normal(4, (long)sequences.TokenCount * d);
        using var packed = Backend.Cpu.FromArray(x, new Shape(1, sequences.TokenCount, d), DType.F64);
        using var y = layer.Forward(packed, sequences);
        var actual = y.ToDoubleArray();
        var expected = new double[actual.Length];
        for (int s = 0; s < sequences.Count; s++)
        {
            using var alone = Backend.Cpu.FromArray(x.AsSpan(sequences.Start(s) * d, sequences.Length(s) * d).ToArray(), new Shape(1, sequences.Length(s), d), DType.F64);
            using var ys = layer.Forward(alone);
            ys.ToDoubleArray().CopyTo(expected, sequences.Start(s) * d);
        }
        Assert.That(MaxRelative(expected, actual), Is.LessThanOrEqualTo(1e-12));
    }

    [TestCaseSource(nameof(Cases))]
    public void Packed_gradients_equal_the_sums_over_the_sequences(string variant, string json)
    {
        using var layer = VariantTestKit.Layer(LayerConfig.Parse(variant, json), seed: 22);
        var sequences = SequenceLayout.FromLengths(Lengths);
        int d = layer.Config.DModel;
        var x = TestData.Normal(6, (long)sequences.TokenCount * d);
        var dy = TestData.Normal(7, (long)sequences.TokenCount * d);
        using var packed = Backend.Cpu.FromArray(x, new Shape(1, sequences.TokenCount, d), DType.F64);
        using var pass = layer.ForwardForTraining(packed, sequences);
        using var dyTensor = Backend.Cpu.FromArray(dy, pass.Output.Shape, DType.F64);
        using var grads = pass.Backward(dyTensor);

        var dx = new double[x.Length];
        var parameters = grads.Parameters.Keys.ToDictionary(n => n, n => new double[grads.Parameters[n].ElementCount]);
        for (int s = 0; s < sequences.Count; s++)
        {
            int start = sequences.Start(s) * d, count = sequences.Length(s) * d;
            var shape = new Shape(1, sequences.Length(s), d);
            using var alone = Backend.Cpu.FromArray(x.AsSpan(start, count).ToArray(), shape, DType.F64);
            using var passAlone = layer.ForwardForTraining(alone);
            using var dyAlone = Backend.Cpu.FromArray(dy.AsSpan(start, count).ToArray(), shape, DType.F64);
            using var gradsAlone = passAlone.Backward(dyAlone);
            gradsAlone.Input.ToDoubleArray().CopyTo(dx, start);
            foreach (var (name, sum) in parameters.Select(p => (p.Key, p.Value)))
            {
                var g = gradsAlone.Parameters[name].ToDoubleArray();
                for (int i = 0; i < g.Length; i++)
                {
                    sum[i] += g[i];
                }
            }
        }
        Assert.That(MaxRelative(dx, grads.Input.ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), "dx");
        foreach (var (name, sum) in parameters.Select(p => (p.Key, p.Value)))
        {
            Assert.That(MaxRelative(sum, grads.Parameters[name].ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), name);
        }
    }

    [Test]
    public void A_ragged_batch_of_one_sequence_equals_the_dense_forward_in_F32()
    {
        using var layer = VariantTestKit.Layer(LayerConfig.Parse("gqa", """{"d_model": 32, "n_heads": 4, "n_kv_heads": 2, "head_dim": 8, "rope": true}"""), dtype: DType.F32);
        var x = TestData.Normal(8, 11 * 32);
        using var t = Backend.Cpu.FromArray(x, new Shape(1, 11, 32), DType.F32);
        using var dense = layer.Forward(t);
        using var ragged = layer.Forward(t, SequenceLayout.FromLengths(11));
        Assert.That(ragged.ToArray(), Is.EqualTo(dense.ToArray()), "one sequence is the dense batch of one, bit for bit");
    }

    [TestCase("agent", """{"d_model": 16, "n_heads": 2, "n_agents": 4, "seq_len": 8}""")]
    [TestCase("flatten", """{"d_model": 16, "n_heads": 2, "seq_len": 8}""")]
    public void Variants_with_a_fixed_seq_len_refuse_a_ragged_batch(string variant, string json)
    {
        using var layer = VariantTestKit.Layer(LayerConfig.Parse(variant, json));
        Assert.That(layer.AcceptsSequences, Is.False);
        using var x = Backend.Cpu.Zeros(new Shape(1, 16, 16), DType.F64);
        var e = Assert.Throws<ArgumentException>(() => layer.Forward(x, SequenceLayout.FromLengths(8, 8)));
        Assert.That(e!.ParamName, Is.EqualTo("sequences"));
        Assert.That(e.Message, Does.Contain("fixed seq_len"));
        Assert.Throws<ArgumentException>(() => layer.ForwardForTraining(x, SequenceLayout.FromLengths(8, 8)));
    }

    [Test]
    public void Bad_packed_inputs_name_the_argument()
    {
        using var layer = VariantTestKit.Layer(LayerConfig.Parse("mqa", """{"d_model": 16, "n_heads": 2, "n_kv_heads": 1, "head_dim": 8}"""));
        using var x = Backend.Cpu.Zeros(new Shape(1, 10, 16), DType.F64);
        var e = Assert.Throws<ArgumentException>(() => layer.Forward(x, SequenceLayout.FromLengths(4, 5)));
        Assert.That(e!.ParamName, Is.EqualTo("x"));
        Assert.That(e.Message, Does.Contain("expected [1, 9, 16]").And.Contain("actual [1, 10, 16]"));
        using var batch2 = Backend.Cpu.Zeros(new Shape(2, 5, 16), DType.F64);
        Assert.That(Assert.Throws<ArgumentException>(() => layer.Forward(batch2, SequenceLayout.FromLengths(5, 5)))!.ParamName, Is.EqualTo("x"));
        var shifted = SequenceLayout.FromLengths(4, 6).WithStartPositions([0, 3]);
        var s = Assert.Throws<ArgumentException>(() => layer.Forward(x, shifted));
        Assert.That(s!.ParamName, Is.EqualTo("sequences"));
        Assert.That(s.Message, Does.Contain("start at position 0"));
    }

    internal static double MaxRelative(double[] expected, double[] actual)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length));
        double scale = 1 + expected.Max(Math.Abs);
        return expected.Zip(actual, (e, a) => Math.Abs(e - a)).Max() / scale;
    }
}

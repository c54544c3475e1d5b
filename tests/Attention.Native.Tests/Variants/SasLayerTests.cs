using Attention.Native.Ops;
using Attention.Native.Variants;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Variants;

public class SasLayerTests
{
    private static SasConfig Config(int heads = 2, int simHeads = 4, int kernel = 3, bool rope = true, bool causal = true, RopeStyle style = RopeStyle.Half) => new()
    {
        DModel = 8, Heads = heads, HeadDim = 4, SimHeads = simHeads, SimHeadDim = 6, KernelSize = kernel, Rope = rope, Causal = causal, RopeStyle = style,
    };

    [TestCase(2, 2, 3, true, true, 2, 3)]
    [TestCase(2, 4, 3, true, true, 1, 4)]
    [TestCase(2, 6, 1, false, true, 2, 3)]
    [TestCase(1, 3, 3, true, false, 1, 3)]
    [TestCase(2, 4, 1, true, true, 2, 1)]
    [TestCase(2, 4, 5, false, true, 2, 2)]
    public void Gradients_match_finite_differences(int heads, int simHeads, int kernel, bool rope, bool causal, int batch, int tokens)
    {
        using var layer = VariantTestKit.Layer(Config(heads, simHeads, kernel, rope, causal, RopeStyle.Interleaved));
        double error = VariantTestKit.GradientError(layer, batch, tokens);
        GradientCheck.AssertClose($"sas H={heads} H'={simHeads} k={kernel} rope={rope} causal={causal} B={batch} T={tokens}", error);
    }

    [Test]
    public void Parameters_are_named_and_ordered_as_in_the_spec()
    {
        using var layer = new SasLayer(Config());
        string[] expected =
        [
            "w_q", "w_k", "w_v",
            "sas_q_conv1_w", "sas_q_conv1_b", "sas_q_conv2_w", "sas_q_conv2_b",
            "sas_k_conv1_w", "sas_k_conv1_b", "sas_k_conv2_w", "sas_k_conv2_b",
            "sas_v_conv1_w", "sas_v_conv1_b", "sas_v_conv2_w", "sas_v_conv2_b",
            "sas_q_fc1_w", "sas_q_fc1_b", "sas_q_fc2_w", "sas_q_fc2_b",
            "sas_k_fc1_w", "sas_k_fc1_b", "sas_k_fc2_w", "sas_k_fc2_b",
            "w_o", "b_o",
        ];
        Assert.That(layer.ParameterSpecs.Select(s => s.Name), Is.EqualTo(expected));
        var shapes = layer.ParameterSpecs.ToDictionary(s => s.Name, s => s.Shape);
        Assert.That(shapes["sas_k_conv1_w"], Is.EqualTo(new Shape(4, 2, 3)));
        Assert.That(shapes["sas_v_conv2_w"], Is.EqualTo(new Shape(4, 4, 3)));
        Assert.That(shapes["sas_q_fc1_w"], Is.EqualTo(new Shape(6, 4)));
        Assert.That(shapes["sas_q_fc2_w"], Is.EqualTo(new Shape(6, 6)));
        Assert.That(shapes["w_o"], Is.EqualTo(new Shape(8, 8)));
        using var created = AttentionLayer.Create(Config());
        Assert.That(created, Is.TypeOf<SasLayer>());
    }

    [Test]
    public void Forward_equals_the_formula_written_out()
    {
        // Without RoPE: per token, conv across heads (zero padding), the fc expansion of q and k, causal softmax attention over
        // the H' heads, PEAA (mean of the r groups of H heads), then w_o and b_o — all computed plainly here.
        const int b = 2, t = 4, dm = 8, h = 2, d = 4, hs = 4, ds = 6, kernel = 3, groups = hs / h;
        var config = Config(h, hs, kernel, rope: false);
        using var layer = VariantTestKit.Layer(config);
        var x = TestData.Normal(9, b * t * dm);
        double[] W(string name) => layer.Parameters[name].ToDoubleArray();

        double[] Stream(string s) => SasFormula.Stream(config, W, x, b * t, s).Simulated;
        var q = Stream("q");
        var k = Stream("k");
        var v = Stream("v");

        var aggregated = new double[b * t * h * d];
        for (int bi = 0; bi < b; bi++)
        {
            for (int head = 0; head < hs; head++)
            {
                for (int i = 0; i < t; i++)
                {
                    var scores = new double[i + 1];
                    for (int j = 0; j <= i; j++)
                    {
                        for (int c = 0; c < ds; c++)
                        {
                            scores[j] += q[(((((bi * t) + i) * hs) + head) * ds) + c] * k[(((((bi * t) + j) * hs) + head) * ds) + c];
                        }
                        scores[j] /= Math.Sqrt(ds);
                    }
                    double max = scores.Max();
                    var weights = scores.Select(s => Math.Exp(s - max)).ToArray();
                    double total = weights.Sum();
                    // Head g·H + m of the simulated heads lands on head m of the aggregate, averaged over the groups g.
                    int target = head % h;
                    for (int c = 0; c < d; c++)
                    {
                        double o = 0;
                        for (int j = 0; j <= i; j++)
                        {
                            o += weights[j] / total * v[(((((bi * t) + j) * hs) + head) * d) + c];
                        }
                        aggregated[(((((bi * t) + i) * h) + target) * d) + c] += o / groups;
                    }
                }
            }
        }
        var expected = SasFormula.Dense(aggregated, b * t, h * d, W("w_o"), W("b_o"), dm);

        using var tx = Backend.Cpu.FromArray(x, new Shape(b, t, dm), DType.F64);
        using var y = layer.Forward(tx);
        Assert.That(y.ToDoubleArray(), Is.EqualTo(expected).Within(1e-12));
    }

    [TestCase(2, 4, 3, 1, 7, 0)]
    [TestCase(2, 4, 3, 2, 8, 3)]
    [TestCase(2, 2, 1, 2, 6, 1)]
    [TestCase(1, 3, 5, 1, 5, 5)]
    public void Decoding_token_by_token_reproduces_the_full_forward(int heads, int simHeads, int kernel, int batch, int tokens, int prompt)
    {
        using var layer = (CausalAttentionLayer)VariantTestKit.Layer(Config(heads, simHeads, kernel));
        double growing = VariantTestKit.DecodeError(layer, batch, tokens, prompt, new CacheOptions(InitialCapacity: 1));
        double reserved = VariantTestKit.DecodeError(layer, batch, tokens, prompt, new CacheOptions(MaxLength: tokens));
        Assert.That(growing, Is.LessThan(1e-12));
        Assert.That(reserved, Is.LessThan(1e-12));
    }

    [Test]
    public void Cache_holds_the_expanded_rotated_keys_and_values()
    {
        // Benchmark config: H 16, D 128, H' 32, D' 256 → H'·(D' + D) = 32 · 384 = 12288 elements per token.
        var bench = new SasConfig { DModel = 2048, Heads = 16, HeadDim = 128, SimHeads = 32, SimHeadDim = 256, KernelSize = 3 };
        // The layer itself would allocate 2048-wide projections: a small-d_model twin has the same cache.
        using var layer = new SasLayer(bench with { DModel = 8 });
        using var cache = layer.CreateCache(2);
        Assert.That(layer.CacheElementsPerToken, Is.EqualTo(12288));
        Assert.That(cache.ElementsPerToken, Is.EqualTo(12288));
    }

    [Test]
    public void Configs_are_validated_with_clear_errors()
    {
        static string Message(string json) => Assert.Throws<ArgumentException>(() => LayerConfig.Parse("sas", json))!.Message;
        const string Good = "\"d_model\": 64, \"n_heads\": 4, \"head_dim\": 16";
        Assert.That(Message("{" + Good + ", \"sim_heads\": 6, \"sim_head_dim\": 32}"), Does.Contain("sim_heads").And.Contain("multiple of n_heads 4"));
        Assert.That(Message("{" + Good + ", \"sim_heads\": 8, \"sim_head_dim\": 32, \"kernel_size\": 2}"), Does.Contain("kernel_size").And.Contain("odd"));
        Assert.That(Message("{" + Good + ", \"sim_heads\": 8, \"sim_head_dim\": 31}"), Does.Contain("sim_head_dim").And.Contain("even"));
        Assert.That(Message("{" + Good + ", \"sim_head_dim\": 32, \"heads_sim\": 8}"), Does.Contain("missing keys: sim_heads").And.Contain("unknown keys: heads_sim"));
        Assert.That(Message("{" + Good + ", \"sim_heads\": 8, \"sim_head_dim\": 32, \"kernel_size\": 0}"), Does.Contain("kernel_size"));
        var parsed = (SasConfig)LayerConfig.Parse("sas", "{" + Good + ", \"sim_heads\": 8, \"sim_head_dim\": 31, \"rope\": false}");
        Assert.That((parsed.KernelSize, parsed.Causal, parsed.Rope, parsed.SimHeadDim), Is.EqualTo((3, true, false, 31)));
        Assert.That(LayerConfig.Parse("sas", parsed.ToJson()), Is.EqualTo(parsed));
    }

    [Test]
    public void A_non_causal_layer_refuses_a_cache()
    {
        using var layer = new SasLayer(Config(causal: false));
        Assert.That(layer.IsCausal, Is.False);
        Assert.Throws<InvalidOperationException>(() => layer.CreateCache(1));
    }
}

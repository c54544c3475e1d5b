using Attention.Native.Ops;
using Attention.Native.Variants;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Variants;

public class GqaLayerTests
{
    private static GqaConfig Config(string kind, int heads = 4, int kvHeads = 2, int headDim = 4, bool causal = true, bool rope = true, RopeStyle style = RopeStyle.Half) => new()
    {
        Kind = kind, DModel = 12, Heads = heads, KvHeads = kvHeads, HeadDim = headDim, Causal = causal, Rope = rope, RopeStyle = style,
    };

    [TestCase("mha", 4, 4, true, true, 2, 5)]
    [TestCase("gqa", 4, 2, true, true, 1, 7)]
    [TestCase("mqa", 3, 1, true, false, 2, 4)]
    [TestCase("gqa", 4, 2, false, true, 2, 3)]
    [TestCase("mha", 2, 2, true, true, 1, 1)]
    public void Gradients_match_finite_differences(string kind, int heads, int kvHeads, bool causal, bool rope, int batch, int tokens)
    {
        using var layer = VariantTestKit.Layer(Config(kind, heads, kvHeads, causal: causal, rope: rope));
        double error = VariantTestKit.GradientError(layer, batch, tokens);
        GradientCheck.AssertClose($"{kind} H={heads} G={kvHeads} causal={causal} rope={rope} B={batch} T={tokens}", error);
    }

    [Test]
    public void Forward_equals_the_formula_written_out()
    {
        // y = concat_i softmax(q_i k_g(i)ᵀ/sqrt(d) + mask) v_g(i) · w_oᵀ, without RoPE, computed plainly here.
        var config = Config("gqa", rope: false);
        using var layer = VariantTestKit.Layer(config);
        const int b = 2, t = 5, dm = 12, h = 4, g = 2, d = 4;
        var x = TestData.Normal(9, b * t * dm);
        double[] W(string name) => layer.Parameters[name].ToDoubleArray();
        double[] Project(double[] w, int outWidth)
        {
            var y = new double[b * t * outWidth];
            for (int r = 0; r < b * t; r++)
            {
                for (int o = 0; o < outWidth; o++)
                {
                    for (int i = 0; i < dm; i++)
                    {
                        y[(r * outWidth) + o] += x[(r * dm) + i] * w[(o * dm) + i];
                    }
                }
            }
            return y;
        }
        var q = Project(W("w_q"), h * d);
        var k = Project(W("w_k"), g * d);
        var v = Project(W("w_v"), g * d);
        var attn = Ops.SoftmaxAttentionTests.Naive(q, k, v, null, b, t, h, d, t, g, d, 1 / Math.Sqrt(d), true, t);
        var wo = W("w_o");
        var expected = new double[b * t * dm];
        for (int r = 0; r < b * t; r++)
        {
            for (int o = 0; o < dm; o++)
            {
                for (int i = 0; i < h * d; i++)
                {
                    expected[(r * dm) + o] += attn[(r * h * d) + i] * wo[(o * h * d) + i];
                }
            }
        }
        using var tx = Backend.Cpu.FromArray(x, new Shape(b, t, dm), DType.F64);
        using var y = layer.Forward(tx);
        Assert.That(y.ToDoubleArray(), Is.EqualTo(expected).Within(1e-12));
    }

    [TestCase("mha", 4, 4, 1, 9, 0)]
    [TestCase("gqa", 4, 2, 2, 9, 4)]
    [TestCase("mqa", 4, 1, 2, 12, 1)]
    [TestCase("gqa", 4, 2, 1, 6, 6)]
    public void Decoding_token_by_token_reproduces_the_full_forward(string kind, int heads, int kvHeads, int batch, int tokens, int prompt)
    {
        using var layer = (CausalAttentionLayer)VariantTestKit.Layer(Config(kind, heads, kvHeads, style: RopeStyle.Interleaved));
        double growing = VariantTestKit.DecodeError(layer, batch, tokens, prompt, new CacheOptions(InitialCapacity: 2));
        double reserved = VariantTestKit.DecodeError(layer, batch, tokens, prompt, new CacheOptions(MaxLength: tokens));
        Assert.That(growing, Is.LessThan(1e-12));
        Assert.That(reserved, Is.LessThan(1e-12));
    }

    [TestCase("mha", 16, 16, 128)]
    [TestCase("gqa", 16, 4, 128)]
    [TestCase("mqa", 16, 1, 128)]
    public void Cache_elements_per_token_equal_the_formula(string kind, int heads, int kvHeads, int headDim)
    {
        var config = new GqaConfig { Kind = kind, DModel = 2048, Heads = heads, KvHeads = kvHeads, HeadDim = headDim };
        // The layer itself would allocate 2048² weights per projection: compute from a small twin with the same G and d.
        using var layer = new GqaLayer(config with { DModel = 8 });
        using var cache = layer.CreateCache(1);
        Assert.That(layer.CacheElementsPerToken, Is.EqualTo(2 * kvHeads * headDim));
        Assert.That(cache.ElementsPerToken, Is.EqualTo(2 * kvHeads * headDim));
    }

    [Test]
    public void Configs_are_validated_with_clear_errors()
    {
        static string Message(string variant, string json) => Assert.Throws<ArgumentException>(() => LayerConfig.Parse(variant, json))!.Message;
        Assert.That(Message("gqa", """{"d_model": 64, "n_heads": 4, "n_kv_heads": 3, "head_dim": 16}"""), Does.Contain("n_kv_heads").And.Contain("divisor of n_heads 4"));
        Assert.That(Message("gqa", """{"d_model": 64, "n_heads": 4, "head_dim": 16, "colour": 1}"""), Does.Contain("missing keys: n_kv_heads").And.Contain("unknown keys: colour"));
        Assert.That(Message("mha", """{"d_model": 64, "n_heads": 4, "n_kv_heads": 2, "head_dim": 16}"""), Does.Contain("mha has n_kv_heads = n_heads"));
        Assert.That(Message("mqa", """{"d_model": 64, "n_heads": 4, "head_dim": 15}"""), Does.Contain("head_dim").And.Contain("even"));
        Assert.That(Message("gqa", """{"d_model": "64", "n_heads": 4, "n_kv_heads": 2, "head_dim": 16}"""), Does.Contain("d_model: expected an integer"));
        Assert.That(Message("gqa", """{"d_model": 64, "n_heads": 4, "n_kv_heads": 2, "head_dim": 16, "rope_style": "spiral"}"""), Does.Contain("rope_style"));
        Assert.That(Message("nope", "{}"), Does.Contain("variant"));
        var parsed = (GqaConfig)LayerConfig.Parse("mqa", """{"d_model": 64, "n_heads": 4, "head_dim": 16, "rope_style": "interleaved"}""");
        Assert.That((parsed.KvHeads, parsed.Causal, parsed.Rope, parsed.RopeStyle), Is.EqualTo((1, true, true, RopeStyle.Interleaved)));
        Assert.That(LayerConfig.Parse("mqa", parsed.ToJson()), Is.EqualTo(parsed));
    }

    [Test]
    public void Weights_bind_by_name_with_one_error_listing_every_problem()
    {
        using var layer = new GqaLayer(Config("gqa"));
        using var wq = Backend.Cpu.Zeros(new Shape(16, 12));
        using var wk = Backend.Cpu.Zeros(new Shape(8, 11));
        using var extra = Backend.Cpu.Zeros(new Shape(3));
        var tensors = new Dictionary<string, Tensor> { ["w_q"] = wq, ["w_k"] = wk, ["bias"] = extra };
        var message = Assert.Throws<ArgumentException>(() => layer.LoadParameters(tensors))!.Message;
        Assert.That(message, Does.Contain("missing: w_v, w_o").And.Contain("unexpected: bias").And.Contain("w_k expected [8, 12] actual [8, 11]"));
    }

    [Test]
    public void Bad_inputs_and_cache_misuse_are_rejected()
    {
        using var layer = new GqaLayer(Config("gqa"));
        using var x = Backend.Cpu.Zeros(new Shape(1, 3, 11));
        Ops.LinearTests.AssertArgument(() => layer.Forward(x), "x", "[B, T, 12]", "[1, 3, 11]");
        using var cache = layer.CreateCache(2, new CacheOptions(MaxLength: 2));
        using var three = Backend.Cpu.Zeros(new Shape(2, 3, 12));
        Assert.Throws<InvalidOperationException>(() => cache.Prefill(three));
        Ops.LinearTests.AssertArgument(() => cache.DecodeStep(three), "x", "one token", "[2, 3, 12]");
        using var nonCausal = new GqaLayer(Config("gqa", causal: false));
        Assert.Throws<InvalidOperationException>(() => nonCausal.CreateCache(1));
    }
}

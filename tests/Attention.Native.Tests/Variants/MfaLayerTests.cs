using Attention.Native.Ops;
using Attention.Native.Variants;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Variants;

public class MfaLayerTests
{
    private static MfaConfig Config(int heads = 4, int headDim = 4, bool causal = true, bool rope = true, RopeStyle style = RopeStyle.Half) => new()
    {
        DModel = 10, Heads = heads, HeadDim = headDim, QLoraDim = 6, Causal = causal, Rope = rope, RopeStyle = style,
    };

    [TestCase(4, true, true, 2, 5)]
    [TestCase(3, false, true, 1, 4)]
    [TestCase(2, true, false, 2, 3)]
    [TestCase(1, true, true, 1, 1)]
    public void Gradients_match_finite_differences(int heads, bool causal, bool rope, int batch, int tokens)
    {
        using var layer = VariantTestKit.Layer(Config(heads, causal: causal, rope: rope, style: RopeStyle.Interleaved));
        double error = VariantTestKit.GradientError(layer, batch, tokens);
        GradientCheck.AssertClose($"mfa H={heads} causal={causal} rope={rope} B={batch} T={tokens}", error);
    }

    [Test]
    public void Parameters_are_named_and_shaped_as_in_the_spec()
    {
        using var layer = VariantTestKit.Layer(Config());
        Assert.That(layer.ParameterSpecs.Select(s => $"{s.Name} {s.Shape}"),
            Is.EqualTo(new[] { "w_q_a [6, 10]", "q_norm [6]", "w_q_b [16, 6]", "w_k [4, 10]", "w_v [4, 10]", "w_o [10, 16]" }));
        Assert.That(layer.ParameterSpecs.All(s => s.Learnable), "the norm gain is learnable like the weights");
        Assert.That(layer.Parameters["q_norm"].ToDoubleArray(), Is.All.EqualTo(1.0), "the norm gain starts at 1");
    }

    [TestCase(1, 9, 0)]
    [TestCase(2, 9, 4)]
    [TestCase(2, 6, 6)]
    public void Decoding_token_by_token_reproduces_the_full_forward(int batch, int tokens, int prompt)
    {
        using var layer = (CausalAttentionLayer)VariantTestKit.Layer(Config(style: RopeStyle.Interleaved));
        double growing = VariantTestKit.DecodeError(layer, batch, tokens, prompt, new CacheOptions(InitialCapacity: 2));
        double reserved = VariantTestKit.DecodeError(layer, batch, tokens, prompt, new CacheOptions(MaxLength: tokens));
        Assert.That(growing, Is.LessThan(1e-12));
        Assert.That(reserved, Is.LessThan(1e-12));
    }

    [Test]
    public void F32_forward_and_backward_follow_f64_within_the_fp32_tolerance()
    {
        // The same parameters and input in both precisions; design.md's fp32 rule, 1e-4·(1 + max|F64|), for y, dx and every
        // parameter gradient.
        const int b = 2, t = 6;
        var config = Config(heads: 4, headDim: 8);
        using var wide = VariantTestKit.Layer(config);
        using var narrow = VariantTestKit.Layer(config, dtype: DType.F32);
        var shape = new Shape(b, t, config.DModel);
        var x = TestData.Normal(41, shape.ElementCount);
        var dyValues = TestData.Normal(42, shape.ElementCount);
        Dictionary<string, double[]> Run(AttentionLayer layer, DType dtype)
        {
            using var input = Backend.Cpu.FromArray(x, shape, dtype);
            using var pass = layer.ForwardForTraining(input);
            using var dy = Backend.Cpu.FromArray(dyValues, shape, dtype);
            using var grads = pass.Backward(dy);
            var result = grads.Parameters.ToDictionary(p => p.Key, p => p.Value.ToDoubleArray());
            result["y"] = pass.Output.ToDoubleArray();
            result["dx"] = grads.Input.ToDoubleArray();
            return result;
        }
        var reference = Run(wide, DType.F64);
        var actual = Run(narrow, DType.F32);
        Assert.That(actual.Keys, Is.EquivalentTo(reference.Keys));
        Assert.Multiple(() =>
        {
            foreach (var (name, expected) in reference)
            {
                double scale = 1 + expected.Max(Math.Abs);
                double error = expected.Zip(actual[name], (e, a) => Math.Abs(e - a)).Max();
                Assert.That(error, Is.LessThanOrEqualTo(1e-4 * scale), $"{name}: max |F32 − F64| against 1e-4·(1 + max|F64|) = {1e-4 * scale}");
                Assert.That(error, Is.GreaterThan(0), $"{name}: F32 rounds somewhere, or the F32 layer did not run in F32");
            }
        });
    }

    [Test]
    public void Cache_holds_one_rotated_key_and_one_value_head()
    {
        // Benchmark config (Step-3): H 64, d 256 → 2·256 = 512 elements per token, whatever the number of query heads.
        var bench = new MfaConfig { DModel = 4096, Heads = 64, HeadDim = 256, QLoraDim = 2048 };
        using var layer = new MfaLayer(bench with { DModel = 8, Heads = 2, QLoraDim = 4 });
        using var cache = layer.CreateCache(1);
        Assert.That(bench.CacheElementsPerToken, Is.EqualTo(512));
        Assert.That(layer.CacheElementsPerToken, Is.EqualTo(512));
        Assert.That(cache.ElementsPerToken, Is.EqualTo(512));
    }

    [Test]
    public void Configs_are_validated_with_clear_errors()
    {
        static string Message(string json) => Assert.Throws<ArgumentException>(() => LayerConfig.Parse("mfa", json))!.Message;
        const string Good = "\"d_model\": 64, \"n_heads\": 8, \"q_lora_dim\": 32";
        Assert.That(Message("{" + Good + ", \"head_dim\": 15}"), Does.Contain("head_dim").And.Contain("even"));
        Assert.That(Message("{" + Good + "}"), Does.Contain("missing keys: head_dim"));
        Assert.That(Message("{" + Good + ", \"head_dim\": 16, \"n_kv_heads\": 1}"), Does.Contain("unknown keys: n_kv_heads"));
        Assert.That(Message("{" + Good + ", \"head_dim\": 16, \"norm_eps\": 0}"), Does.Contain("norm_eps").And.Contain("actual 0"));
        Assert.That(Message("{\"d_model\": 64, \"n_heads\": 8, \"head_dim\": 16, \"q_lora_dim\": 0}"), Does.Contain("q_lora_dim"));
        var parsed = (MfaConfig)LayerConfig.Parse("mfa", "{" + Good + ", \"head_dim\": 16}");
        Assert.That((parsed.Causal, parsed.Rope, parsed.RopeBase, parsed.RopeStyle, parsed.NormEpsilon), Is.EqualTo((true, true, 10000.0, RopeStyle.Half, 1e-5)));
        Assert.That(LayerConfig.Parse("mfa", parsed.ToJson()), Is.EqualTo(parsed));
        var rotated = (MfaConfig)LayerConfig.Parse("mfa", "{" + Good + ", \"head_dim\": 16, \"rope_style\": \"interleaved\", \"norm_eps\": 1e-6, \"causal\": false}");
        Assert.That((rotated.RopeStyle, rotated.NormEpsilon, rotated.Causal), Is.EqualTo((RopeStyle.Interleaved, 1e-6, false)));
    }

    [Test]
    public void Bad_inputs_and_cache_misuse_are_rejected()
    {
        using var layer = new MfaLayer(Config());
        using var x = Backend.Cpu.Zeros(new Shape(1, 3, 9));
        Ops.LinearTests.AssertArgument(() => layer.Forward(x), "x", "[B, T, 10]", "[1, 3, 9]");
        using var nonCausal = new MfaLayer(Config(causal: false));
        Assert.Throws<InvalidOperationException>(() => nonCausal.CreateCache(1));
    }
}

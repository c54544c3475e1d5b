using Attention.Native.Ops;
using Attention.Native.Variants;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Variants;

public class MlaLayerTests
{
    private static MlaConfig Config(int qLora = 6, int heads = 3, bool causal = true, RopeStyle style = RopeStyle.Half) => new()
    {
        DModel = 10, Heads = heads, QLoraRank = qLora, KvLoraRank = 5, QkNopeHeadDim = 3, QkRopeHeadDim = 4, VHeadDim = 2, Causal = causal, RopeStyle = style,
    };

    [TestCase(6, 3, true, 2, 5)]
    [TestCase(0, 3, true, 1, 6)]
    [TestCase(6, 1, false, 2, 3)]
    [TestCase(0, 2, true, 1, 1)]
    public void Gradients_match_finite_differences(int qLora, int heads, bool causal, int batch, int tokens)
    {
        using var layer = VariantTestKit.Layer(Config(qLora, heads, causal, RopeStyle.Interleaved));
        double error = VariantTestKit.GradientError(layer, batch, tokens);
        GradientCheck.AssertClose($"mla q_lora={qLora} H={heads} causal={causal} B={batch} T={tokens}", error);
    }

    [Test]
    public void Norm_gains_are_learnable_and_get_gradients()
    {
        using var layer = VariantTestKit.Layer(Config());
        Assert.That(layer.ParameterSpecs.Select(s => s.Name), Is.EqualTo(new[] { "w_q_a", "q_norm", "w_q_b", "w_kv_a", "kv_norm", "w_kv_b", "w_o" }));
        using var noCompression = VariantTestKit.Layer(Config(qLora: 0));
        Assert.That(noCompression.ParameterSpecs.Select(s => s.Name), Is.EqualTo(new[] { "w_q", "w_kv_a", "kv_norm", "w_kv_b", "w_o" }));
    }

    [TestCase(6, 1, 8, 0)]
    [TestCase(6, 2, 9, 3)]
    [TestCase(0, 2, 7, 1)]
    [TestCase(0, 1, 5, 5)]
    public void Absorbed_decoding_reproduces_the_full_forward(int qLora, int batch, int tokens, int prompt)
    {
        using var layer = (CausalAttentionLayer)VariantTestKit.Layer(Config(qLora));
        Assert.That(VariantTestKit.DecodeError(layer, batch, tokens, prompt, new CacheOptions(InitialCapacity: 1)), Is.LessThan(1e-12));
    }

    [Test]
    public void Cache_holds_the_latent_and_the_rotated_shared_key()
    {
        // Benchmark config: d_c 512, d_r 64 → 576 elements per token.
        var bench = new MlaConfig { DModel = 8, Heads = 16, QLoraRank = 0, KvLoraRank = 512, QkNopeHeadDim = 128, QkRopeHeadDim = 64, VHeadDim = 128 };
        using var layer = new MlaLayer(bench);
        using var cache = layer.CreateCache(2);
        Assert.That(layer.CacheElementsPerToken, Is.EqualTo(512 + 64));
        Assert.That(cache.ElementsPerToken, Is.EqualTo(512 + 64));
    }

    [Test]
    public void Configs_are_validated_with_clear_errors()
    {
        static string Message(string json) => Assert.Throws<ArgumentException>(() => LayerConfig.Parse("mla", json))!.Message;
        const string Good = "\"d_model\": 64, \"n_heads\": 4, \"q_lora_rank\": 32, \"kv_lora_rank\": 32, \"qk_nope_head_dim\": 16, \"v_head_dim\": 16";
        Assert.That(Message("{" + Good + ", \"qk_rope_head_dim\": 7}"), Does.Contain("qk_rope_head_dim").And.Contain("even"));
        Assert.That(Message("{" + Good + "}"), Does.Contain("missing keys: qk_rope_head_dim"));
        Assert.That(Message("{" + Good + ", \"qk_rope_head_dim\": 8, \"rope\": true}"), Does.Contain("unknown keys: rope"));
        Assert.That(Message("{" + Good.Replace("\"q_lora_rank\": 32", "\"q_lora_rank\": -1", StringComparison.Ordinal) + ", \"qk_rope_head_dim\": 8}"), Does.Contain("q_lora_rank"));
        Assert.That(LayerConfig.Parse("mla", "{" + Good + ", \"qk_rope_head_dim\": 8}"), Is.TypeOf<MlaConfig>());
    }
}

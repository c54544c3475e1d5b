using Attention.Native.Ops;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>The <c>rope_scaling</c> config key (variants.md "RoPE scaling") on every variant with RoPE: reading, defaults, round trip, refusals.</summary>
public class RopeScalingConfigTests
{
    private const string Mla = "\"d_model\": 64, \"n_heads\": 4, \"q_lora_rank\": 32, \"kv_lora_rank\": 32, \"qk_nope_head_dim\": 16, \"qk_rope_head_dim\": 64, \"v_head_dim\": 16";

    // DeepSeek-V3's config.json, its rope_scaling object as published (keys in its order).
    private const string DeepSeekV3 =
        "{\"beta_fast\": 32, \"beta_slow\": 1, \"factor\": 40, \"mscale\": 1.0, \"mscale_all_dim\": 1.0, \"original_max_position_embeddings\": 4096, \"type\": \"yarn\"}";

    private static string Message(string variant, string json) => Assert.Throws<ArgumentException>(() => LayerConfig.Parse(variant, json))!.Message;

    [Test]
    public void DeepSeek_V3_rope_scaling_reads_and_round_trips()
    {
        var config = (MlaConfig)LayerConfig.Parse("mla", "{" + Mla + ", \"rope_style\": \"interleaved\", \"rope_scaling\": " + DeepSeekV3 + "}");
        Assert.That(config.RopeScaling, Is.EqualTo(new RopeScaling(40, 4096, BetaFast: 32, BetaSlow: 1, MScale: 1, MScaleAllDim: 1)));
        string json = config.ToJson();
        Assert.That(json, Does.Contain("\"rope_scaling\": {").And.Contain("\"type\": \"yarn\"").And.Contain("\"original_max_position_embeddings\": 4096"));
        Assert.That(LayerConfig.Parse("mla", json), Is.EqualTo(config));
    }

    [Test]
    public void DeepSeek_V3_config_json_through_the_deepseek_layout_keeps_its_yarn()
    {
        var config = (MlaConfig)CheckpointLayout.DeepSeek.ReadConfig("""
            {"architectures": ["DeepseekV3ForCausalLM"], "hidden_size": 7168, "num_attention_heads": 128, "num_key_value_heads": 128,
             "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
             "rope_theta": 10000, "rms_norm_eps": 1e-06, "attention_bias": false, "max_position_embeddings": 163840,
             "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096, "type": "yarn"}}
            """);
        Assert.That(config.RopeScaling, Is.EqualTo(new RopeScaling(40, 4096, BetaFast: 32, BetaSlow: 1, MScale: 1, MScaleAllDim: 1)));
        Assert.That(config.RopeStyle, Is.EqualTo(RopeStyle.Interleaved));
    }

    [TestCase("mha", "\"d_model\": 16, \"n_heads\": 2, \"head_dim\": 8")]
    [TestCase("gqa", "\"d_model\": 16, \"n_heads\": 4, \"n_kv_heads\": 2, \"head_dim\": 8")]
    [TestCase("mqa", "\"d_model\": 16, \"n_heads\": 4, \"head_dim\": 8")]
    [TestCase("mla", Mla)]
    [TestCase("tpa", "\"d_model\": 16, \"n_heads\": 2, \"head_dim\": 8, \"q_rank\": 2, \"k_rank\": 2, \"v_rank\": 2")]
    [TestCase("mfa", "\"d_model\": 16, \"n_heads\": 2, \"head_dim\": 8, \"q_lora_dim\": 4")]
    [TestCase("sas", "\"d_model\": 16, \"n_heads\": 2, \"head_dim\": 4, \"sim_heads\": 4, \"sim_head_dim\": 8")]
    public void Every_rope_variant_reads_defaults_and_writes_it_back(string variant, string keys)
    {
        // Only the required keys, the type spelled as Hugging Face's rope_type: β 32/1, mscale 1, mscale_all_dim 0 by default.
        var scaled = LayerConfig.Parse(variant, "{" + keys + ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 2048}}");
        var expected = new RopeScaling(4, 2048, BetaFast: 32, BetaSlow: 1, MScale: 1, MScaleAllDim: 0);
        Assert.That(Scaling(scaled), Is.EqualTo(expected));
        Assert.That(LayerConfig.Parse(variant, scaled.ToJson()), Is.EqualTo(scaled));
        // Both spellings at once, agreeing, are accepted too.
        var both = LayerConfig.Parse(variant, "{" + keys + ", \"rope_scaling\": {\"type\": \"yarn\", \"rope_type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 2048}}");
        Assert.That(Scaling(both), Is.EqualTo(expected));
        // Absent and null are the same: no scaling, written out as null and read back.
        var plain = LayerConfig.Parse(variant, "{" + keys + "}");
        Assert.That(Scaling(plain), Is.Null);
        Assert.That(LayerConfig.Parse(variant, "{" + keys + ", \"rope_scaling\": null}"), Is.EqualTo(plain));
        Assert.That(plain.ToJson(), Does.Contain("\"rope_scaling\": null"));
        Assert.That(LayerConfig.Parse(variant, plain.ToJson()), Is.EqualTo(plain));
    }

    private static RopeScaling? Scaling(LayerConfig config) => config switch
    {
        GqaConfig c => c.RopeScaling,
        MlaConfig c => c.RopeScaling,
        TpaConfig c => c.RopeScaling,
        SasConfig c => c.RopeScaling,
        MfaConfig c => c.RopeScaling,
        _ => throw new ArgumentException($"{config.Variant} has no RoPE", nameof(config)),
    };

    [TestCase("{\"type\": \"linear\", \"factor\": 4, \"original_max_position_embeddings\": 2048}", "rope_scaling.type: expected \"yarn\"", "\"linear\"")]
    [TestCase("{\"rope_type\": \"dynamic\", \"factor\": 4, \"original_max_position_embeddings\": 2048}", "rope_scaling.rope_type: expected \"yarn\"", "\"dynamic\"")]
    [TestCase("{\"type\": \"yarn\", \"rope_type\": \"llama3\", \"factor\": 4, \"original_max_position_embeddings\": 2048}", "rope_scaling.rope_type", "\"llama3\"")]
    [TestCase("{\"factor\": 4, \"original_max_position_embeddings\": 2048}", "missing keys: rope_scaling.type", "")]
    [TestCase("{\"type\": \"yarn\"}", "missing keys: rope_scaling.factor, rope_scaling.original_max_position_embeddings", "")]
    [TestCase("{\"type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 2048, \"attention_factor\": 1}", "unknown keys: rope_scaling.attention_factor", "")]
    [TestCase("{\"type\": \"yarn\", \"factor\": \"4\", \"original_max_position_embeddings\": 2048.5}", "rope_scaling.factor: expected a number", "rope_scaling.original_max_position_embeddings: expected an integer")]
    [TestCase("{\"type\": 1, \"factor\": 4, \"original_max_position_embeddings\": 2048}", "rope_scaling.type: expected a string", "1")]
    [TestCase("40", "rope_scaling: expected null or an object", "actual 40")]
    [TestCase("{\"type\": \"yarn\", \"factor\": 0.5, \"original_max_position_embeddings\": 2048}", "rope_scaling.factor: expected a finite value ≥ 1", "actual 0.5")]
    [TestCase("{\"type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 0}", "rope_scaling.original_max_position_embeddings: expected a positive integer", "actual 0")]
    [TestCase("{\"type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 2048, \"beta_slow\": 0}", "rope_scaling.beta_slow: expected a finite value > 0", "actual 0")]
    [TestCase("{\"type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 2048, \"beta_fast\": 0.5}", "rope_scaling.beta_fast: expected a finite value ≥ beta_slow 1", "actual 0.5")]
    [TestCase("{\"type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 2048, \"mscale\": -1}", "rope_scaling.mscale: expected a finite value ≥ 0", "actual -1")]
    [TestCase("{\"type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 2048, \"mscale_all_dim\": -0.5}", "rope_scaling.mscale_all_dim: expected a finite value ≥ 0", "actual -0.5")]
    [TestCase("{\"type\": \"yarn\", \"factor\": 4, \"original_max_position_embeddings\": 2048, \"mscale_all_dim\": 1e300}", "rope_scaling.mscale_all_dim: expected a value with (0.1·mscale_all_dim·ln(factor) + 1)² finite", "actual 1E+300")]
    [TestCase("{\"type\": \"yarn\", \"factor\": 1e300, \"original_max_position_embeddings\": 2048, \"mscale\": 1e307}", "rope_scaling.mscale: expected a value with 0.1·mscale·ln(factor) + 1 finite", "actual 1E+307")]
    public void Bad_rope_scaling_is_refused_naming_the_key(string scaling, string expected, string actual)
    {
        string message = Message("mla", "{" + Mla + ", \"rope_scaling\": " + scaling + "}");
        Assert.That(message, Does.Contain(expected).And.Contain(actual));
    }

    [Test]
    public void Problems_inside_rope_scaling_are_listed_with_the_others()
    {
        string message = Message("mla", "{" + Mla + ", \"unknown\": 1, \"rope_scaling\": {\"type\": \"ntk\", \"extra\": 2}}");
        Assert.That(message, Does.Contain("unknown keys: unknown").And.Contain("missing keys: rope_scaling.factor")
            .And.Contain("unknown keys: rope_scaling.extra").And.Contain("rope_scaling.type: expected \"yarn\""));
    }

    [Test]
    public void Rope_scaling_needs_rope()
    {
        string message = Message("gqa", "{\"d_model\": 16, \"n_heads\": 4, \"n_kv_heads\": 2, \"head_dim\": 8, \"rope\": false, \"rope_scaling\": " + DeepSeekV3 + "}");
        Assert.That(message, Does.Contain("rope_scaling: expected null when rope is false"));
        var e = Assert.Throws<ArgumentException>(() => new TpaConfig { DModel = 16, Heads = 2, HeadDim = 8, QRank = 2, KRank = 2, VRank = 2, Rope = false, RopeScaling = new(4, 2048) }.Validate());
        Assert.That(e!.ParamName, Is.EqualTo("rope_scaling"));
    }
}

using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>Widths derived from config values are tensor axes: a product or sum past int's range is refused naming the key and the limit.</summary>
public class LayerConfigLimitsTests
{
    [TestCase("mha", """{"d_model": 64, "n_heads": 65536, "head_dim": 65536}""", "head_dim", "n_heads·head_dim")]
    [TestCase("gqa", """{"d_model": 64, "n_heads": 65536, "n_kv_heads": 1, "head_dim": 65536, "rope": false}""", "head_dim", "n_heads·head_dim")]
    [TestCase("tpa", """{"d_model": 64, "n_heads": 4, "head_dim": 16, "q_rank": 6, "k_rank": 2147483647, "v_rank": 2}""", "k_rank", "n_heads·k_rank")]
    [TestCase("tpa", """{"d_model": 64, "n_heads": 1, "head_dim": 2, "q_rank": 6, "k_rank": 2, "v_rank": 1500000000}""", "v_rank", "v_rank·head_dim")]
    [TestCase("mla", """{"d_model": 64, "n_heads": 1, "q_lora_rank": 0, "kv_lora_rank": 2147483000, "qk_nope_head_dim": 16, "qk_rope_head_dim": 1000, "v_head_dim": 16}""", "kv_lora_rank", "kv_lora_rank + qk_rope_head_dim")]
    [TestCase("mla", """{"d_model": 64, "n_heads": 2, "q_lora_rank": 0, "kv_lora_rank": 32, "qk_nope_head_dim": 1073741824, "qk_rope_head_dim": 8, "v_head_dim": 16}""", "qk_rope_head_dim", "n_heads·(qk_nope_head_dim + qk_rope_head_dim)")]
    [TestCase("sas", """{"d_model": 64, "n_heads": 4, "head_dim": 16, "sim_heads": 8, "sim_head_dim": 1073741824}""", "sim_head_dim", "sim_heads·sim_head_dim")]
    [TestCase("sas", """{"d_model": 64, "n_heads": 4, "head_dim": 536870912, "sim_heads": 8, "sim_head_dim": 32}""", "sim_heads", "sim_heads·head_dim")]
    [TestCase("transnormer", """{"d_model": 64, "n_heads": 65536, "head_dim": 65536, "layer_idx": 0, "num_layers": 2}""", "head_dim", "n_heads·head_dim")]
    [TestCase("transnormer", """{"d_model": 64, "n_heads": 1, "head_dim": 1073741824, "layer_idx": 0, "num_layers": 2, "lrpe": true}""", "head_dim", "2·head_dim")]
    [TestCase("mfa", """{"d_model": 64, "n_heads": 65536, "head_dim": 65536, "q_lora_dim": 32}""", "head_dim", "n_heads·head_dim")]
    public void Overflowing_products_are_refused_naming_the_key_and_the_limit(string variant, string json, string key, string formula)
    {
        var e = Assert.Throws<ArgumentException>(() => LayerConfig.Parse(variant, json))!;
        Assert.Multiple(() =>
        {
            Assert.That(e.ParamName, Is.EqualTo(key));
            Assert.That(e.Message, Does.StartWith($"{key}: expected {formula}").And.Contain("≤ 2147483647"));
        });
    }

    [Test]
    public void Tpa_cache_size_does_not_wrap_when_the_ranks_sum_past_int()
    {
        // Each rank alone is a valid axis with one head of width 1, but their sum exceeds int.
        var config = (TpaConfig)LayerConfig.Parse("tpa", """{"d_model": 64, "n_heads": 1, "head_dim": 1, "q_rank": 1, "k_rank": 1073741824, "v_rank": 1073741824, "rope": false}""");
        Assert.That(config.CacheElementsPerToken, Is.EqualTo(2L * 1073741824 * 2));
    }
}

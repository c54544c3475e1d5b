using Attention.Native.Ops;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>
/// <see cref="CheckpointLayout.ReadConfig"/>: a layer config from the official config file as it is (a whole model's
/// <c>config.json</c>, with every key that is not the attention layer's ignored), and one error for what this library cannot
/// honour.
/// </summary>
public class OfficialConfigTests
{
    [Test]
    public void Llama_config_json_gives_gqa_with_its_defaults()
    {
        var config = (GqaConfig)CheckpointLayout.Llama.ReadConfig("""
            {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
             "num_hidden_layers": 32, "num_key_value_heads": 8, "rope_theta": 500000.0, "rms_norm_eps": 1e-05, "attention_bias": false,
             "max_position_embeddings": 8192, "torch_dtype": "bfloat16", "vocab_size": 128256, "rope_scaling": null}
            """);
        Assert.That((config.Variant, config.DModel, config.Heads, config.KvHeads, config.HeadDim), Is.EqualTo(("gqa", 4096, 32, 8, 128)));
        Assert.That((config.Rope, config.RopeStyle, config.RopeBase, config.Causal), Is.EqualTo((true, RopeStyle.Half, 500000.0, true)));
    }

    [Test]
    public void DeepSeek_V2_Lite_config_json_gives_mla_without_query_compression()
    {
        var config = (MlaConfig)CheckpointLayout.DeepSeek.ReadConfig("""
            {"architectures": ["DeepseekV2ForCausalLM"], "hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 16,
             "q_lora_rank": null, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
             "rope_theta": 10000, "rms_norm_eps": 1e-06, "attention_bias": false, "n_routed_experts": 64, "first_k_dense_replace": 1}
            """);
        Assert.That((config.DModel, config.Heads, config.QLoraRank, config.KvLoraRank, config.QkNopeHeadDim, config.QkRopeHeadDim, config.VHeadDim),
            Is.EqualTo((2048, 16, 0, 512, 128, 64, 128)));
        Assert.That(config.RopeStyle, Is.EqualTo(RopeStyle.Interleaved), "DeepSeek's RoPE pairs (2j, 2j+1)");
    }

    [Test]
    public void T6_and_TransNormer_and_SAS_configs_give_their_variants()
    {
        var t6 = (TpaConfig)CheckpointLayout.T6.ReadConfig("""{"n_layer": 24, "n_head": 47, "head_dim": 64, "n_embd": 1024, "rank": 2, "q_rank": 6, "using_groupnorm": true, "block_size": 1024}""");
        Assert.That((t6.DModel, t6.Heads, t6.HeadDim, t6.QRank, t6.KRank, t6.VRank, t6.Subln, t6.RopeBase), Is.EqualTo((1024, 47, 64, 6, 2, 2, true, 10000.0)));
        string transnormer = """{"decoder_embed_dim": 1024, "hidden_dim": 1024, "decoder_attention_heads": 8, "decoder_layers": 24, "linear_use_lrpe_list": [1, 0, 0], "norm_type": "simplermsnorm", "linear_act_fun": "silu", "bias": false, "vocab_size": 64000}""";
        var first = (TransNormerConfig)CheckpointLayout.TransNormer.ReadConfig(transnormer, layerIndex: 0);
        var second = (TransNormerConfig)CheckpointLayout.TransNormer.ReadConfig(transnormer, layerIndex: 1);
        Assert.That((first.DModel, first.Heads, first.HeadDim, first.LayerIndex, first.NumLayers, first.Lrpe), Is.EqualTo((1024, 8, 128, 0, 24, true)));
        Assert.That((second.LayerIndex, second.Lrpe), Is.EqualTo((1, false)), "LRPE per layer from linear_use_lrpe_list");
        var sas = (SasConfig)CheckpointLayout.Sas.ReadConfig("""{"ori_head": 4, "target_head": 8, "ori_feature": 16, "target_feature": 32, "kernel_size": 3}""");
        Assert.That((sas.DModel, sas.Heads, sas.HeadDim, sas.SimHeads, sas.SimHeadDim, sas.KernelSize, sas.Rope), Is.EqualTo((64, 4, 16, 8, 32, 3, false)));
    }

    [Test]
    public void Step3_vl_config_json_gives_mfa_from_its_text_config()
    {
        var config = (MfaConfig)CheckpointLayout.Step3.ReadConfig("""
            {"architectures": ["Step3VLForConditionalGeneration"], "model_type": "step3_vl",
             "vision_config": {"hidden_size": 1792, "num_attention_heads": 16},
             "text_config": {"hidden_size": 7168, "num_attention_heads": 64, "num_attention_groups": 1, "head_dim": 256, "share_q_dim": 2048,
                             "rope_theta": 500000, "rms_norm_eps": 1e-5, "max_position_embedding": 65536, "moe_num_experts": 48, "vocab_size": 128815}}
            """);
        Assert.That((config.DModel, config.Heads, config.HeadDim, config.QLoraDim, config.RopeBase, config.NormEpsilon, config.RopeStyle),
            Is.EqualTo((7168, 64, 256, 2048, 500000.0, 1e-5, RopeStyle.Half)));
        Assert.That(config.CacheElementsPerToken, Is.EqualTo(512), "one KV head of 256: 2·d");
    }

    [TestCase("step3", """{"hidden_size": 64, "num_attention_heads": 4, "head_dim": 16, "share_q_dim": 32, "num_attention_groups": 2}""",
        "num_attention_groups: expected 1", null)]
    [TestCase("llama", """{"hidden_size": 64, "num_attention_heads": 4, "attention_bias": true, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}""",
        "attention_bias: expected false", "rope_scaling: expected null or a {\"type\": \"yarn\"")]
    [TestCase("deepseek", """{"hidden_size": 64, "num_attention_heads": 4, "qk_nope_head_dim": 8, "v_head_dim": 8}""",
        "missing keys: kv_lora_rank, qk_rope_head_dim", null)]
    [TestCase("transnormer", """{"decoder_embed_dim": 64, "hidden_dim": 32, "decoder_attention_heads": 4, "decoder_layers": 2, "norm_type": "layernorm", "linear_act_fun": "relu", "linear_use_lrpe_list": [1]}""",
        "norm_type: expected \"simplermsnorm\"", "hidden_dim: expected decoder_embed_dim (64) in a layer with LRPE")]
    [TestCase("t6", """{"n_embd": 64, "n_head": "4", "head_dim": 16, "q_rank": 6}""", "missing keys: rank", "n_head: expected an integer, actual \"4\"")]
    public void What_cannot_be_honoured_is_refused_in_one_error(string layout, string json, string first, string? second)
    {
        var e = Assert.Throws<ArgumentException>(() => CheckpointLayout.Get(layout).ReadConfig(json))!;
        Assert.That(e.Message, Does.Contain(first));
        if (second is not null)
        {
            Assert.That(e.Message, Does.Contain(second));
        }
    }

    [Test]
    public void The_spec_layout_has_no_official_config()
    {
        var e = Assert.Throws<ArgumentException>(() => CheckpointLayout.Spec.ReadConfig("{}"))!;
        Assert.That(e.Message, Does.Contain("LayerConfig.Parse"));
    }
}

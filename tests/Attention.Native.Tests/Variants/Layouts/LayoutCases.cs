using Attention.Native.Tests.Support;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>
/// One checkpoint layout under test: its official config (the keys the official code reads), the layer index, the official
/// module's F64 forward (<see cref="OfficialModules"/>) and the documented transform from official to spec tensors, written
/// here independently of the library's maps.
/// </summary>
internal sealed record LayoutCase(
    string Name,
    CheckpointLayout Layout,
    string OfficialConfig,
    int LayerIndex,
    Func<IReadOnlyDictionary<string, double[]>, double[], int, int, double[]> Official,
    Func<LayerConfig, IReadOnlyDictionary<string, double[]>, Dictionary<string, double[]>> ToSpec)
{
    public const int Batch = 2, Tokens = 7;

    public override string ToString() => Name;

    public LayerConfig Config() => Layout.ReadConfig(OfficialConfig, LayerIndex);

    /// <summary>
    /// Official tensors for <paramref name="layer"/>, drawn from a normal distribution: weights with standard deviation
    /// 1/sqrt(fan_in), norm gains 1 ± 0.5, biases and LRPE angles ± 0.5, so that none is a no-op.
    /// </summary>
    public static Dictionary<string, double[]> Draw(CheckpointLayout layout, AttentionLayer layer, int seed = 5)
    {
        var result = new Dictionary<string, double[]>(StringComparer.Ordinal);
        int index = 0;
        foreach (var spec in layout.OfficialSpecs(layer))
        {
            long count = spec.Shape.ElementCount;
            bool vector = spec.Shape.Rank == 1 || spec.Name == "lrpe.theta";
            var values = TestData.Normal((seed * 1000) + index++, count, vector ? 0.5 : 1 / Math.Sqrt(count / spec.Shape[0]));
            if (spec.Name.Contains("norm", StringComparison.Ordinal) || spec.Name.StartsWith("subln", StringComparison.Ordinal))
            {
                values = [.. values.Select(v => 1 + v)];
            }
            result.Add(spec.Name, values);
        }
        return result;
    }

    public static Dictionary<string, Tensor> Tensors(CheckpointLayout layout, AttentionLayer layer, IReadOnlyDictionary<string, double[]> values, DType dtype = DType.F64) =>
        layout.OfficialSpecs(layer).ToDictionary(s => s.Name, s => Backend.Cpu.FromArray(values[s.Name], s.Shape, dtype), StringComparer.Ordinal);

    private static Dictionary<string, double[]> Renamed(IReadOnlyDictionary<string, double[]> w, params (string Official, string Spec)[] names)
    {
        var result = new Dictionary<string, double[]>(StringComparer.Ordinal);
        foreach (var (official, spec) in names)
        {
            if (w.TryGetValue(official, out var values))
            {
                result.Add(spec, values);
            }
        }
        return result;
    }

    public static IEnumerable<LayoutCase> All()
    {
        yield return new("llama gqa θ 500000", CheckpointLayout.Llama,
            """{"hidden_size": 12, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 6, "rope_theta": 500000.0, "attention_bias": false, "vocab_size": 32000, "rms_norm_eps": 1e-5}""",
            0, (w, x, b, t) => OfficialModules.Llama(w, x, b, t, 12, 4, 2, 6, 500000),
            (_, w) => Renamed(w, ("q_proj.weight", "w_q"), ("k_proj.weight", "w_k"), ("v_proj.weight", "w_v"), ("o_proj.weight", "w_o")));
        yield return new("llama mha, head_dim from hidden_size", CheckpointLayout.Llama,
            """{"hidden_size": 12, "num_attention_heads": 3, "num_key_value_heads": null, "head_dim": null}""",
            0, (w, x, b, t) => OfficialModules.Llama(w, x, b, t, 12, 3, 3, 4, 10000),
            (_, w) => Renamed(w, ("q_proj.weight", "w_q"), ("k_proj.weight", "w_k"), ("v_proj.weight", "w_v"), ("o_proj.weight", "w_o")));
        foreach (var qLora in new[] { 8, 0 })
        {
            string q = qLora > 0 ? "8" : "null";
            yield return new($"deepseek q_lora_rank {q}", CheckpointLayout.DeepSeek,
                $$"""{"hidden_size": 16, "num_attention_heads": 3, "num_key_value_heads": 3, "q_lora_rank": {{q}}, "kv_lora_rank": 8, "qk_nope_head_dim": 6, "qk_rope_head_dim": 16, "v_head_dim": 5, "rope_theta": 10000, "rms_norm_eps": 1e-6, "attention_bias": false, "max_position_embeddings": 163840, "rope_scaling": null}""",
                0, (w, x, b, t) => OfficialModules.DeepSeek(w, x, b, t, 16, 3, qLora, 8, 6, 16, 5, 10000, null),
                (_, w) => Renamed(w, ("q_a_proj.weight", "w_q_a"), ("q_a_layernorm.weight", "q_norm"), ("q_b_proj.weight", "w_q_b"), ("q_proj.weight", "w_q"),
                    ("kv_a_proj_with_mqa.weight", "w_kv_a"), ("kv_a_layernorm.weight", "kv_norm"), ("kv_b_proj.weight", "w_kv_b"), ("o_proj.weight", "w_o")));
        }
        // YaRN (rope_scaling as the HF config writes it): DeepSeek-V3's values (factor 40, L0 4096, β 32/1, mscale 1/1), V2-Lite's
        // mscale 0.707/0.707, and mscale 1 with mscale_all_dim 0.5 (cos and sin times 1.16). On d_r 16 the ramp runs over pairs 2 … 6.
        foreach (var (label, yarn, mscales) in new[]
        {
            ("DeepSeek-V3", new OfficialModules.Yarn(40, 4096, 32, 1, 1, 1), "1.0, \"mscale_all_dim\": 1.0"),
            ("DeepSeek-V2-Lite", new OfficialModules.Yarn(40, 4096, 32, 1, 0.707, 0.707), "0.707, \"mscale_all_dim\": 0.707"),
            ("mscale 1/0.5", new OfficialModules.Yarn(40, 4096, 32, 1, 1, 0.5), "1.0, \"mscale_all_dim\": 0.5"),
        })
        {
            string scaling = $$"""{"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": {{mscales}}, "original_max_position_embeddings": 4096, "type": "yarn"}""";
            yield return new($"deepseek yarn {label}", CheckpointLayout.DeepSeek,
                $$"""{"hidden_size": 16, "num_attention_heads": 3, "num_key_value_heads": 3, "q_lora_rank": 8, "kv_lora_rank": 8, "qk_nope_head_dim": 6, "qk_rope_head_dim": 16, "v_head_dim": 5, "rope_theta": 10000, "rms_norm_eps": 1e-6, "attention_bias": false, "max_position_embeddings": 163840, "rope_scaling": {{scaling}}}""",
                0, (w, x, b, t) => OfficialModules.DeepSeek(w, x, b, t, 16, 3, 8, 8, 6, 16, 5, 10000, yarn),
                (_, w) => Renamed(w, ("q_a_proj.weight", "w_q_a"), ("q_a_layernorm.weight", "q_norm"), ("q_b_proj.weight", "w_q_b"),
                    ("kv_a_proj_with_mqa.weight", "w_kv_a"), ("kv_a_layernorm.weight", "kv_norm"), ("kv_b_proj.weight", "w_kv_b"), ("o_proj.weight", "w_o")));
        }
        foreach (bool subln in new[] { false, true })
        {
            yield return new($"t6 using_groupnorm {subln}", CheckpointLayout.T6,
                $$"""{"n_embd": 12, "n_head": 3, "head_dim": 8, "q_rank": 3, "rank": 2, "using_groupnorm": {{(subln ? "true" : "false")}}, "block_size": 1024, "vocab_size": 50304}""",
                0, (w, x, b, t) => OfficialModules.T6(w, x, b, t, 12, 3, 8, 3, 2, subln),
                (_, w) =>
                {
                    var spec = Renamed(w, ("c_qkv.W_A_q.weight", "w_a_q"), ("c_qkv.W_A_k.weight", "w_a_k"), ("c_qkv.W_A_v.weight", "w_a_v"),
                        ("c_qkv.W_B_v.weight", "w_b_v"), ("c_proj.weight", "w_o"), ("subln.weight", "subln"));
                    // T6 turns by −θ: negating the second half of each d-vector of B_q and B_k makes the spec's +θ turn equivalent.
                    foreach (var (official, name) in new[] { ("c_qkv.W_B_q.weight", "w_b_q"), ("c_qkv.W_B_k.weight", "w_b_k") })
                    {
                        var values = (double[])w[official].Clone();
                        for (int row = 0; row < values.Length / 12; row++)
                        {
                            if (row % 8 >= 4)
                            {
                                for (int i = 0; i < 12; i++)
                                {
                                    values[(row * 12) + i] = -values[(row * 12) + i];
                                }
                            }
                        }
                        spec.Add(name, values);
                    }
                    return spec;
                });
        }
        yield return new("sas", CheckpointLayout.Sas,
            """{"ori_head": 2, "target_head": 4, "ori_feature": 4, "target_feature": 6, "kernel_size": 3}""",
            0, (w, x, b, t) => OfficialModules.Sas(w, x, b, t, 2, 4, 4, 6, 3),
            (_, w) =>
            {
                var spec = Renamed(w, ("w_q", "w_q"), ("w_k", "w_k"), ("w_v", "w_v"), ("output_dense.weight", "w_o"), ("output_dense.bias", "b_o"));
                foreach (var s in new[] { "q", "k", "v" })
                {
                    foreach (var (index, stage) in new[] { ("0", "conv1"), ("1.process", "conv2"), ("2", "fc1"), ("3.process", "fc2") })
                    {
                        foreach (var (suffix, kind) in new[] { ("weight", "w"), ("bias", "b") })
                        {
                            if (w.TryGetValue($"sas_{s}.{index}.{suffix}", out var values))
                            {
                                spec.Add($"sas_{s}_{stage}_{kind}", values);
                            }
                        }
                    }
                }
                return spec;
            });
        foreach (bool nested in new[] { false, true })
        {
            string text = """{"hidden_size": 12, "num_attention_heads": 4, "head_dim": 8, "share_q_dim": 6, "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "num_attention_groups": 1, "max_position_embedding": 65536, "moe_num_experts": 48}""";
            yield return new($"step3{(nested ? " (text_config of the VL config.json)" : "")}", CheckpointLayout.Step3,
                nested ? $$"""{"model_type": "step3_vl", "vision_config": {"hidden_size": 1792}, "text_config": {{text}}}""" : text,
                0, (w, x, b, t) => OfficialModules.Step3(w, x, b, t, 12, 4, 8, 6, 500000, 1e-5),
                (_, w) => Renamed(w, ("q_proj.weight", "w_q_a"), ("inter_norm.weight", "q_norm"), ("wq.weight", "w_q_b"), ("k_proj.weight", "w_k"),
                    ("v_proj.weight", "w_v"), ("o_proj.weight", "w_o")));
        }
        foreach (var (heads, lrpe, layer, layers) in new[] { (3, true, 1, 4), (4, false, 0, 2) })
        {
            string list = lrpe ? "[0, 1, 0, 0]" : "[0, 0]";
            yield return new($"transnormer H {heads} lrpe {lrpe} layer {layer}/{layers}", CheckpointLayout.TransNormer,
                $$"""{"decoder_embed_dim": 12, "hidden_dim": 12, "decoder_attention_heads": {{heads}}, "decoder_layers": {{layers}}, "linear_use_lrpe_list": {{list}}, "norm_type": "simplermsnorm", "linear_act_fun": "silu", "bias": false, "glu_dim": 32}""",
                layer, (w, x, b, t) => OfficialModules.TransNormer(w, x, b, t, 12, heads, layer, layers, lrpe),
                (_, w) =>
                {
                    var qkvu = w["qkvu_proj.weight"];
                    int chunk = qkvu.Length / 4;
                    var spec = Renamed(w, ("out_proj.weight", "w_o"), ("lrpe.theta", "lrpe_theta"));
                    foreach (var (name, i) in new[] { ("w_q", 0), ("w_k", 1), ("w_v", 2), ("w_u", 3) })
                    {
                        spec.Add(name, qkvu.AsSpan(i * chunk, chunk).ToArray());
                    }
                    return spec;
                });
        }
    }
}

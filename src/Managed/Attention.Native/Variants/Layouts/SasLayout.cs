namespace Attention.Native.Variants;

/// <summary>
/// The official <c>SAS</c> module (chuanyang-Zheng/SAS <c>SAS.py</c>): <c>sas_q</c>/<c>sas_k</c> are
/// <c>Sequential(Conv1d, ResidualCNN, Linear, ResidualMLP)</c> (indices 0, 1.process, 2, 3.process), <c>sas_v</c> the two
/// convolution stages, and <c>output_dense [H·D, H·D]</c> with its bias, so <c>d_model = H·D</c>. The module takes q, k, v
/// already projected and applies no RoPE and is always causal: the projections <c>w_q, w_k, w_v</c> keep their spec
/// names, and the config must have <c>rope: false</c>, <c>causal: true</c>. Its output applies <c>output_dense</c> to each
/// group of H heads and then averages, which equals the spec's average-then-project exactly up to rounding (it is linear).
/// Weights are stored as PyTorch's Conv1d <c>[out, in, k]</c> and Linear <c>[out, in]</c>, as the spec.
/// </summary>
internal sealed class SasLayout : CheckpointLayout
{
    public override string Name => "sas";

    public override IReadOnlyList<string> Variants { get; } = ["sas"];

    public override LayerConfig WithConventions(LayerConfig config) =>
        config is SasConfig c ? c with { Rope = false, Causal = true } : base.WithConventions(config);

    private protected override IEnumerable<string> ConventionMisfits(LayerConfig config)
    {
        var c = (SasConfig)config;
        if (c.Rope)
        {
            yield return "the SAS module applies no RoPE: the config needs rope false";
        }
        if (!c.Causal)
        {
            yield return "the SAS module is causal: the config needs causal true";
        }
        if ((long)c.Heads * c.HeadDim != c.DModel)
        {
            yield return $"output_dense is [H·D, H·D]: the config needs d_model = n_heads·head_dim = {(long)c.Heads * c.HeadDim}, actual {c.DModel}";
        }
    }

    internal override IReadOnlyList<OfficialTensor> Map(AttentionLayer layer)
    {
        var map = new List<OfficialTensor>
        {
            LlamaLayout.Renamed("w_q", "w_q", layer), LlamaLayout.Renamed("w_k", "w_k", layer), LlamaLayout.Renamed("w_v", "w_v", layer),
        };
        foreach (var stream in new[] { "q", "k", "v" })
        {
            var stages = stream == "v" ? new[] { ("0", "conv1"), ("1.process", "conv2") } : [("0", "conv1"), ("1.process", "conv2"), ("2", "fc1"), ("3.process", "fc2")];
            foreach (var (index, stage) in stages)
            {
                map.Add(LlamaLayout.Renamed($"sas_{stream}.{index}.weight", $"sas_{stream}_{stage}_w", layer));
                map.Add(LlamaLayout.Renamed($"sas_{stream}.{index}.bias", $"sas_{stream}_{stage}_b", layer));
            }
        }
        map.Add(LlamaLayout.Renamed("output_dense.weight", "w_o", layer));
        map.Add(LlamaLayout.Renamed("output_dense.bias", "b_o", layer));
        return map;
    }

    /// <summary>The SAS module's constructor arguments: <c>ori_head, target_head, ori_feature, target_feature, kernel_size</c>.</summary>
    private protected override (string Variant, string Json) TranslateConfig(OfficialConfig official, int layerIndex)
    {
        int? heads = official.Int("ori_head"), dim = official.Int("ori_feature");
        return ("sas", Json(
            ("d_model", heads * dim), ("n_heads", heads), ("head_dim", dim), ("sim_heads", official.Int("target_head")),
            ("sim_head_dim", official.Int("target_feature")), ("kernel_size", official.Int("kernel_size")), ("causal", true), ("rope", false)));
    }
}

namespace Attention.Native.Variants;

/// <summary>
/// Agent Attention's PVT module (LeapLabTHU Agent-Attention, <c>agent_pvt.py</c>, <c>AgentAttention</c>): its state_dict names
/// are the 2-D agent form's own (variants.md §5b), so loading renames nothing. Config: the module's arguments <c>dim,
/// num_heads, num_patches</c> (a square grid), <c>agent_num, sr_ratio, qkv_bias</c> and the downstream file's
/// <c>kernel_size</c>; <c>qk_scale</c> other than null is refused.
/// </summary>
internal sealed class AgentPvtLayout : CheckpointLayout
{
    public override string Name => "agent-pvt";

    public override IReadOnlyList<string> Variants { get; } = ["agent"];

    private protected override IEnumerable<string> ConventionMisfits(LayerConfig config)
    {
        if (config is not AgentVisionConfig)
        {
            yield return "agent-pvt holds the 2-D form: the config needs grid_size (or grid_h and grid_w) instead of seq_len";
        }
    }

    internal override IReadOnlyList<OfficialTensor> Map(AttentionLayer layer) =>
        layer.ParameterSpecs.Select(s => OfficialTensor.Renamed(s.Name, s.Name, s.Shape, s.Learnable)).ToList();

    private protected override (string Variant, string Json) TranslateConfig(OfficialConfig official, int layerIndex)
    {
        PvtConfig.RefuseScale(official);
        return ("agent", Json(
            ("d_model", official.Int("dim")), ("n_heads", official.Int("num_heads")), ("grid_size", PvtConfig.Side(official)),
            ("n_agents", official.Int("agent_num", required: false) ?? 49), ("sr_ratio", official.Int("sr_ratio", required: false) ?? 1),
            ("qkv_bias", official.Bool("qkv_bias") ?? false), ("dwc_kernel", official.Int("kernel_size", required: false) ?? 3)));
    }
}

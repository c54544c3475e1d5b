namespace Attention.Native.Variants;

/// <summary>
/// Agent Attention's PVT module (LeapLabTHU Agent-Attention, <c>agent_pvt.py</c>, <c>AgentAttention</c>). Config: the module's
/// arguments <c>dim, num_heads, num_patches</c> (a square grid), <c>agent_num</c> (49), <c>sr_ratio, qkv_bias</c> (false) and
/// the downstream file's <c>kernel_size</c> (3) and <c>downstream_agent_shape</c> (the agent grid; absent: √n×√n); <c>qk_scale</c>
/// other than null is refused.
/// </summary>
internal sealed class AgentPvtLayout : VisionModuleLayout
{
    public override string Name => "agent-pvt";

    public override IReadOnlyList<string> Variants { get; } = ["agent"];

    private protected override string Form => VisionForms.Pvt;

    private protected override (string Variant, string Json) TranslateConfig(OfficialConfig official, int layerIndex)
    {
        RefuseScale(official);
        // The detection/segmentation module's agent grid (its argument downstream_agent_shape), when given.
        var agentGrid = official.Has("downstream_agent_shape") ? official.IntOrPair("downstream_agent_shape") : null;
        return ("agent", Json(
            ("d_model", official.Int("dim")), ("n_heads", official.Int("num_heads")), ("grid_size", PatchSide(official)),
            ("n_agents", official.Int("agent_num", required: false) ?? 49), ("sr_ratio", official.Int("sr_ratio", required: false) ?? 1),
            ("qkv_bias", official.Bool("qkv_bias") ?? false), ("dwc_kernel", official.Int("kernel_size", required: false) ?? 3), ("form", Form),
            ("agent_grid_h", agentGrid?.Height), ("agent_grid_w", agentGrid?.Width)));
    }
}

namespace Attention.Native.Variants;

/// <summary>
/// Agent Attention's Swin module (<c>agent_swin.py</c>, <c>AgentAttention</c>): one window of <c>window_size</c> per batch entry
/// (the module ignores its <c>mask</c>: shifted windows get none). Config: <c>dim, window_size</c> (an integer or a pair),
/// <c>num_heads, qkv_bias</c> (true), <c>agent_num</c> (49); <c>shift_size</c> is the block's business and is ignored, as the
/// module ignores it; <c>qk_scale</c> other than null is refused.
/// </summary>
internal sealed class AgentSwinLayout : VisionModuleLayout
{
    public override string Name => "agent-swin";

    public override IReadOnlyList<string> Variants { get; } = ["agent"];

    private protected override string Form => VisionForms.Swin;

    private protected override (string Variant, string Json) TranslateConfig(OfficialConfig official, int layerIndex)
    {
        RefuseScale(official);
        var window = WindowSize(official);
        return ("agent", Json(
            ("d_model", official.Int("dim")), ("n_heads", official.Int("num_heads")), ("grid_h", window?.Height), ("grid_w", window?.Width),
            ("n_agents", official.Int("agent_num", required: false) ?? 49), ("qkv_bias", official.Bool("qkv_bias") ?? true), ("form", Form)));
    }
}

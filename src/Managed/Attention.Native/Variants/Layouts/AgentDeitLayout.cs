namespace Attention.Native.Variants;

/// <summary>
/// Agent Attention's DeiT module (<c>agent_deit.py</c>, <c>AgentAttention</c>): a class token, then the <c>window</c>×<c>window</c>
/// grid of patches. Config: <c>dim, num_heads, qkv_bias</c> (false; the DeiT models pass true), <c>agent_num</c> (49),
/// <c>window</c> (14, <c>img_size // patch_size</c>).
/// </summary>
internal sealed class AgentDeitLayout : VisionModuleLayout
{
    public override string Name => "agent-deit";

    public override IReadOnlyList<string> Variants { get; } = ["agent"];

    private protected override string Form => VisionForms.Deit;

    private protected override (string Variant, string Json) TranslateConfig(OfficialConfig official, int layerIndex) =>
        ("agent", Json(
            ("d_model", official.Int("dim")), ("n_heads", official.Int("num_heads")), ("grid_size", official.Int("window", required: false) ?? 14),
            ("n_agents", official.Int("agent_num", required: false) ?? 49), ("qkv_bias", official.Bool("qkv_bias") ?? false), ("form", Form)));
}

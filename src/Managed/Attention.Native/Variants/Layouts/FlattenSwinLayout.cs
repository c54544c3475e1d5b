namespace Attention.Native.Variants;

/// <summary>
/// FLatten's Swin module (<c>flatten_swin.py</c>, <c>FocusedLinearAttention</c>): one window per batch entry (the mask is
/// ignored). Config: <c>dim, window_size</c> (an integer or a pair), <c>num_heads, qkv_bias</c> (true), <c>focusing_factor</c>
/// (3), <c>kernel_size</c> (5); <c>qk_scale</c> other than null is refused.
/// </summary>
internal sealed class FlattenSwinLayout : VisionModuleLayout
{
    public override string Name => "flatten-swin";

    public override IReadOnlyList<string> Variants { get; } = ["flatten"];

    private protected override string Form => VisionForms.Swin;

    private protected override (string Variant, string Json) TranslateConfig(OfficialConfig official, int layerIndex)
    {
        RefuseScale(official);
        var window = WindowSize(official);
        return ("flatten", Json(
            ("d_model", official.Int("dim")), ("n_heads", official.Int("num_heads")), ("grid_h", window?.Height), ("grid_w", window?.Width),
            ("qkv_bias", official.Bool("qkv_bias") ?? true), ("focusing_factor", official.Double("focusing_factor") ?? 3),
            ("dwc_kernel", official.Int("kernel_size", required: false) ?? 5), ("form", Form)));
    }
}

namespace Attention.Native.Variants;

/// <summary>
/// FLatten's PVT module (LeapLabTHU FLatten-Transformer, <c>flatten_pvt.py</c>, <c>FocusedLinearAttention</c>). Config:
/// <c>dim, num_heads, num_patches, sr_ratio, qkv_bias</c> (false), <c>focusing_factor</c> (3), <c>kernel_size</c> (5);
/// <c>qk_scale</c> other than null is refused.
/// </summary>
internal sealed class FlattenPvtLayout : VisionModuleLayout
{
    public override string Name => "flatten-pvt";

    public override IReadOnlyList<string> Variants { get; } = ["flatten"];

    private protected override string Form => VisionForms.Pvt;

    private protected override (string Variant, string Json) TranslateConfig(OfficialConfig official, int layerIndex)
    {
        RefuseScale(official);
        return ("flatten", Json(
            ("d_model", official.Int("dim")), ("n_heads", official.Int("num_heads")), ("grid_size", PatchSide(official)),
            ("sr_ratio", official.Int("sr_ratio", required: false) ?? 1), ("qkv_bias", official.Bool("qkv_bias") ?? false),
            ("focusing_factor", official.Double("focusing_factor") ?? 3), ("dwc_kernel", official.Int("kernel_size", required: false) ?? 5), ("form", Form)));
    }
}

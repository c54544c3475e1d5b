namespace Attention.Native.Variants;

/// <summary>
/// FLatten's PVT module (LeapLabTHU FLatten-Transformer, <c>flatten_pvt.py</c>, <c>FocusedLinearAttention</c>): its state_dict
/// names are the 2-D flatten form's own (variants.md §6b). Config: <c>dim, num_heads, num_patches, sr_ratio, qkv_bias,
/// focusing_factor</c> (3), <c>kernel_size</c> (5); <c>qk_scale</c> other than null is refused.
/// </summary>
internal sealed class FlattenPvtLayout : CheckpointLayout
{
    public override string Name => "flatten-pvt";

    public override IReadOnlyList<string> Variants { get; } = ["flatten"];

    private protected override IEnumerable<string> ConventionMisfits(LayerConfig config)
    {
        if (config is not FlattenVisionConfig)
        {
            yield return "flatten-pvt holds the 2-D form: the config needs grid_size (or grid_h and grid_w) instead of seq_len";
        }
    }

    internal override IReadOnlyList<OfficialTensor> Map(AttentionLayer layer) =>
        layer.ParameterSpecs.Select(s => OfficialTensor.Renamed(s.Name, s.Name, s.Shape, s.Learnable)).ToList();

    private protected override (string Variant, string Json) TranslateConfig(OfficialConfig official, int layerIndex)
    {
        PvtConfig.RefuseScale(official);
        return ("flatten", Json(
            ("d_model", official.Int("dim")), ("n_heads", official.Int("num_heads")), ("grid_size", PvtConfig.Side(official)),
            ("sr_ratio", official.Int("sr_ratio", required: false) ?? 1), ("qkv_bias", official.Bool("qkv_bias") ?? false),
            ("focusing_factor", official.Double("focusing_factor") ?? 3), ("dwc_kernel", official.Int("kernel_size", required: false) ?? 5)));
    }
}

namespace Attention.Native.Variants;

/// <summary>variants.md's own names: every official tensor is the spec tensor of the same name and shape.</summary>
internal sealed class SpecLayout : CheckpointLayout
{
    public override string Name => "spec";

    public override IReadOnlyList<string> Variants => LayerConfig.Variants;

    internal override IReadOnlyList<OfficialTensor> Map(AttentionLayer layer) =>
        layer.ParameterSpecs.Select(s => OfficialTensor.Renamed(s.Name, s.Name, s.Shape, s.Learnable)).ToList();

    private protected override (string Variant, string Json) TranslateConfig(OfficialConfig official, int layerIndex) =>
        throw new ArgumentException("layout: expected an official layout (the spec config is read by LayerConfig.Parse(variant, json)), actual spec");
}

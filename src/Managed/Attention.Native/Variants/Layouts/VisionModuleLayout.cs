namespace Attention.Native.Variants;

/// <summary>
/// A vision module of Agent Attention or FLatten: its state_dict names are the 2-D form's own (variants.md §5b/6b), so
/// loading renames nothing; the layout checks the config is that form and reads the module's own arguments.
/// </summary>
internal abstract class VisionModuleLayout : CheckpointLayout
{
    private protected abstract string Form { get; }

    private protected override IEnumerable<string> ConventionMisfits(LayerConfig config)
    {
        string? form = config switch
        {
            AgentVisionConfig a => a.Form,
            FlattenVisionConfig f => f.Form,
            _ => null,
        };
        if (form is null)
        {
            yield return $"{Name} holds a 2-D form: the config needs grid_size (or grid_h and grid_w) instead of seq_len, and form {Form}";
        }
        else if (form != Form)
        {
            yield return $"{Name} holds the {Form} form: the config needs form {Form}, not {form}";
        }
    }

    internal override IReadOnlyList<OfficialTensor> Map(AttentionLayer layer) =>
        layer.ParameterSpecs.Select(s => OfficialTensor.Renamed(s.Name, s.Name, s.Shape, s.Learnable)).ToList();

    /// <summary>The side of a PVT module's square grid: <c>int(sqrt(num_patches))</c>, refused unless num_patches is a square.</summary>
    private protected static int? PatchSide(OfficialConfig official)
    {
        if (official.Int("num_patches") is not { } patches)
        {
            return null;
        }
        int side = (int)Math.Round(Math.Sqrt(patches));
        if (side * side != patches)
        {
            official.Refuse("num_patches", "a perfect square (the modules build a √num_patches square grid)");
        }
        return side;
    }

    /// <summary>Swin's <c>window_size</c>: an integer (a square window) or a pair; reported missing when absent.</summary>
    private protected static (int Height, int Width)? WindowSize(OfficialConfig official)
    {
        if (!official.Has("window_size"))
        {
            official.Int("window_size");
            return null;
        }
        return official.IntOrPair("window_size");
    }

    /// <summary>The modules' score scale is head_dim^-0.5 unless <c>qk_scale</c> overrides it; an override is refused.</summary>
    private protected static void RefuseScale(OfficialConfig official)
    {
        if (official.Has("qk_scale"))
        {
            official.Refuse("qk_scale", "null (the score scale is head_dim^-0.5)");
        }
    }
}

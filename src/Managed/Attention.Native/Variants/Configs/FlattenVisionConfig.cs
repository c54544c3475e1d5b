namespace Attention.Native.Variants;

/// <summary>
/// Config of <c>flatten</c> in its 2-D (vision) form, the PVT module of FLatten (variants.md §6b; the exact maths in
/// docs/vision-forms.md §2): the tokens are a row-major grid, the positional encoding is per key of the (reduced) grid and the
/// depthwise convolution is a k×k <c>Conv2d</c> of each head's values, its d filters shared by the heads. Parsed when a config
/// of <c>flatten</c> has <c>grid_size</c> (or <c>grid_h</c>/<c>grid_w</c>) instead of <c>seq_len</c>. A layer runs on any other
/// grid divisible by <c>sr_ratio</c> given as <c>x [B, H, W, d_model]</c> (the positional encoding is then resized bilinearly:
/// our extension, the official module has no rule).
/// </summary>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed record FlattenVisionConfig : LayerConfig
{
    /// <inheritdoc/>
    public override string Variant => "flatten";

    /// <summary><c>grid_h</c>: rows of the token grid the positional encoding is made for.</summary>
    public required int GridHeight { get; init; }

    /// <summary><c>grid_w</c>: columns of that grid.</summary>
    public required int GridWidth { get; init; }

    /// <summary><c>sr_ratio</c> (r, default 1): keys and values come from the grid reduced by an r×r, stride-r convolution.</summary>
    public int SrRatio { get; init; } = 1;

    /// <summary><c>qkv_bias</c> (default false, as the module's default; every official PVT model sets it true).</summary>
    public bool QkvBias { get; init; }

    /// <summary><c>focusing_factor</c> (p, default 3).</summary>
    public double FocusingFactor { get; init; } = 3;

    /// <summary><c>dwc_kernel</c> (k, odd, default 5): the depthwise convolution is k×k.</summary>
    public int DwcKernel { get; init; } = 5;

    /// <summary>
    /// <c>form</c>: which official module (default <c>pvt</c>): <c>pvt</c> (flatten_pvt.py: <c>q</c>, <c>kv</c>, <c>sr_ratio</c>) or
    /// <c>swin</c> (flatten_swin.py: one <c>qkv</c>, the grid is a window and <c>[B, H, W, C]</c> inputs are cut into windows).
    /// </summary>
    public string Form { get; init; } = VisionForms.Pvt;

    /// <summary>The head width d = d_model / n_heads.</summary>
    public int HeadDim => DModel / Heads;

    /// <summary>The number of tokens of the built grid, <c>grid_h · grid_w</c>.</summary>
    public int Tokens => GridHeight * GridWidth;

    internal static FlattenVisionConfig Read(ConfigReader r)
    {
        var (height, width) = VisionGridKeys.Read(r);
        var config = new FlattenVisionConfig
        {
            DModel = r.Int("d_model"),
            Heads = r.Int("n_heads"),
            GridHeight = height,
            GridWidth = width,
            SrRatio = r.Int("sr_ratio", 1),
            QkvBias = r.Bool("qkv_bias", false),
            FocusingFactor = r.Double("focusing_factor", 3),
            DwcKernel = r.Int("dwc_kernel", 5),
            Form = VisionForms.Read(r),
        };
        Require(!r.Bool("causal", false), "causal", "false (focused linear attention is non-causal)", true);
        return config;
    }

    /// <inheritdoc/>
    public override long? CacheElementsPerToken => null;

    /// <inheritdoc/>
    public override void Validate()
    {
        Positive(DModel, "d_model");
        Positive(Heads, "n_heads");
        Require(DModel % Heads == 0, "n_heads", $"a divisor of d_model {DModel}", Heads);
        VisionGridKeys.Validate(GridHeight, GridWidth, SrRatio);
        Require(FocusingFactor > 0 && double.IsFinite(FocusingFactor), "focusing_factor", "a finite positive number", FocusingFactor);
        Require(DwcKernel > 0 && DwcKernel % 2 == 1, "dwc_kernel", "an odd positive integer", DwcKernel);
        VisionForms.Validate(Form, [VisionForms.Pvt, VisionForms.Swin], SrRatio);
    }

    /// <inheritdoc/>
    public override IEnumerable<KeyValuePair<string, object>> Keys() =>
    [
        new("d_model", DModel), new("n_heads", Heads), new("grid_h", GridHeight), new("grid_w", GridWidth), new("sr_ratio", SrRatio),
        new("qkv_bias", QkvBias), new("focusing_factor", FocusingFactor), new("dwc_kernel", DwcKernel), new("form", Form),
    ];
}

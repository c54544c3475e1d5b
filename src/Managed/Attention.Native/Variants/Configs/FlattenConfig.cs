namespace Attention.Native.Variants;

/// <summary>Config of <c>flatten</c>, focused linear attention (variants.md §6; non-causal).</summary>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed record FlattenConfig : LayerConfig
{
    /// <inheritdoc/>
    public override string Variant => "flatten";

    /// <summary><c>seq_len</c> (T, fixed: the positional encoding is per position).</summary>
    public required int SeqLen { get; init; }

    /// <summary><c>focusing_factor</c> (p, default 3).</summary>
    public double FocusingFactor { get; init; } = 3;

    /// <summary><c>dwc_kernel</c> (odd, default 5).</summary>
    public int DwcKernel { get; init; } = 5;

    /// <summary>The head width d = d_model / n_heads.</summary>
    public int HeadDim => DModel / Heads;

    internal static FlattenConfig Read(ConfigReader r)
    {
        var config = new FlattenConfig
        {
            DModel = r.Int("d_model"),
            Heads = r.Int("n_heads"),
            SeqLen = r.Int("seq_len"),
            FocusingFactor = r.Double("focusing_factor", 3),
            DwcKernel = r.Int("dwc_kernel", 5),
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
        Positive(SeqLen, "seq_len");
        Require(FocusingFactor > 0 && double.IsFinite(FocusingFactor), "focusing_factor", "a finite value > 0", FocusingFactor);
        Require(DwcKernel > 0 && DwcKernel % 2 == 1, "dwc_kernel", "an odd positive integer", DwcKernel);
    }

    /// <inheritdoc/>
    public override IEnumerable<KeyValuePair<string, object>> Keys() =>
    [
        new("d_model", DModel), new("n_heads", Heads), new("seq_len", SeqLen), new("focusing_factor", FocusingFactor), new("dwc_kernel", DwcKernel),
    ];
}

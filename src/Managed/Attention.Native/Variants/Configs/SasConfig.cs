using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>Config of <c>sas</c>, simulated attention score (variants.md §4).</summary>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed record SasConfig : LayerConfig
{
    /// <inheritdoc/>
    public override string Variant => "sas";

    /// <summary><c>head_dim</c> (D).</summary>
    public required int HeadDim { get; init; }

    /// <summary><c>sim_heads</c> (H', a multiple of H).</summary>
    public required int SimHeads { get; init; }

    /// <summary><c>sim_head_dim</c> (D').</summary>
    public required int SimHeadDim { get; init; }

    /// <summary><c>kernel_size</c> (k, odd, default 3; 1 is the MLP form).</summary>
    public int KernelSize { get; init; } = 3;

    /// <summary><c>causal</c> (default true).</summary>
    public bool Causal { get; init; } = true;

    /// <summary><c>rope</c> (default true).</summary>
    public bool Rope { get; init; } = true;

    /// <summary><c>rope_base</c> (default 10000).</summary>
    public double RopeBase { get; init; } = 10000;

    /// <summary><c>rope_style</c> (default half).</summary>
    public RopeStyle RopeStyle { get; init; } = RopeStyle.Half;

    /// <summary><c>rope_scaling</c>: YaRN scaling of the RoPE frequencies (variants.md "RoPE scaling"); null (default) for none.</summary>
    public RopeScaling? RopeScaling { get; init; }

    internal static SasConfig Read(ConfigReader r) => new()
    {
        DModel = r.Int("d_model"),
        Heads = r.Int("n_heads"),
        HeadDim = r.Int("head_dim"),
        SimHeads = r.Int("sim_heads"),
        SimHeadDim = r.Int("sim_head_dim"),
        KernelSize = r.Int("kernel_size", 3),
        Causal = r.Bool("causal", true),
        Rope = r.Bool("rope", true),
        RopeBase = r.Double("rope_base", 10000),
        RopeStyle = r.Style("rope_style"),
        RopeScaling = r.Scaling(),
    };

    /// <inheritdoc/>
    public override long? CacheElementsPerToken => Causal ? (long)SimHeads * (SimHeadDim + HeadDim) : null;

    /// <inheritdoc/>
    public override void Validate()
    {
        Positive(DModel, "d_model");
        Positive(Heads, "n_heads");
        Positive(HeadDim, "head_dim");
        Positive(SimHeads, "sim_heads");
        Positive(SimHeadDim, "sim_head_dim");
        Require(SimHeads % Heads == 0, "sim_heads", $"a multiple of n_heads {Heads} (sim_heads mod n_heads = 0)", SimHeads);
        Require(KernelSize > 0 && KernelSize % 2 == 1, "kernel_size", "an odd positive integer", KernelSize);
        Require(!Rope || SimHeadDim % 2 == 0, "sim_head_dim", "an even width for RoPE", SimHeadDim);
        Require(RopeBase > 0 && double.IsFinite(RopeBase), "rope_base", "a finite value > 0", RopeBase);
        ValidateScaling(RopeScaling, Rope);
        // sim_heads is a multiple of n_heads, so n_heads·head_dim is at most sim_heads·head_dim.
        Axis("sim_heads", "sim_heads·head_dim", (Int128)SimHeads * HeadDim);
        Axis("sim_head_dim", "sim_heads·sim_head_dim", (Int128)SimHeads * SimHeadDim);
    }

    /// <inheritdoc/>
    public override IEnumerable<KeyValuePair<string, object>> Keys() =>
    [
        new("d_model", DModel), new("n_heads", Heads), new("head_dim", HeadDim), new("sim_heads", SimHeads), new("sim_head_dim", SimHeadDim),
        new("kernel_size", KernelSize), new("causal", Causal), new("rope", Rope), new("rope_base", RopeBase), new("rope_style", StyleName(RopeStyle)), ScalingKey(RopeScaling),
    ];
}

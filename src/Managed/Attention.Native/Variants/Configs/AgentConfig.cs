namespace Attention.Native.Variants;

/// <summary>Config of <c>agent</c>, agent attention (variants.md §5; non-causal).</summary>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed record AgentConfig : LayerConfig
{
    /// <inheritdoc/>
    public override string Variant => "agent";

    /// <summary><c>n_agents</c> (n).</summary>
    public required int Agents { get; init; }

    /// <summary><c>seq_len</c> (T, fixed: the biases are per position).</summary>
    public required int SeqLen { get; init; }

    /// <summary><c>dwc_kernel</c> (odd, default 3).</summary>
    public int DwcKernel { get; init; } = 3;

    /// <summary>The head width d = d_model / n_heads.</summary>
    public int HeadDim => DModel / Heads;

    internal static AgentConfig Read(ConfigReader r)
    {
        var config = new AgentConfig
        {
            DModel = r.Int("d_model"),
            Heads = r.Int("n_heads"),
            Agents = r.Int("n_agents"),
            SeqLen = r.Int("seq_len"),
            DwcKernel = r.Int("dwc_kernel", 3),
        };
        Require(!r.Bool("causal", false), "causal", "false (agent attention is non-causal)", true);
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
        Positive(Agents, "n_agents");
        Positive(SeqLen, "seq_len");
        Require(DwcKernel > 0 && DwcKernel % 2 == 1, "dwc_kernel", "an odd positive integer", DwcKernel);
    }

    /// <inheritdoc/>
    public override IEnumerable<KeyValuePair<string, object>> Keys() =>
    [
        new("d_model", DModel), new("n_heads", Heads), new("n_agents", Agents), new("seq_len", SeqLen), new("dwc_kernel", DwcKernel),
    ];
}

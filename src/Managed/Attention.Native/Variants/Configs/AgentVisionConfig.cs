namespace Attention.Native.Variants;

/// <summary>
/// Config of <c>agent</c> in its 2-D (vision) form, the PVT module of Agent Attention (variants.md §5b; the exact maths in
/// docs/vision-forms.md §1): the tokens are a row-major grid, the agents are pooled in 2-D, the score biases are the official
/// factorised ones (7×7 maps bilinearly resized to the grid, plus row and column biases) and the depthwise convolution is a
/// k×k <c>Conv2d</c>. Parsed when a config of <c>agent</c> has <c>grid_size</c> (or <c>grid_h</c>/<c>grid_w</c>) instead of
/// <c>seq_len</c>. The grid is the one the position parameters are made for; a layer runs on any other grid divisible by
/// <c>sr_ratio</c> given as <c>x [B, H, W, d_model]</c>.
/// </summary>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed record AgentVisionConfig : LayerConfig
{
    /// <summary>The side of the official agent-bias maps <c>an_bias</c>/<c>na_bias</c> <c>[h, n, 7, 7]</c> (fixed in agent_pvt.py).</summary>
    public const int BiasGrid = 7;

    /// <inheritdoc/>
    public override string Variant => "agent";

    /// <summary><c>n_agents</c> (n, a perfect square: the agents are pooled to a √n×√n grid).</summary>
    public required int Agents { get; init; }

    /// <summary><c>grid_h</c>: rows of the token grid the position parameters are made for.</summary>
    public required int GridHeight { get; init; }

    /// <summary><c>grid_w</c>: columns of that grid.</summary>
    public required int GridWidth { get; init; }

    /// <summary><c>sr_ratio</c> (r, default 1): keys and values come from the grid reduced by an r×r, stride-r convolution.</summary>
    public int SrRatio { get; init; } = 1;

    /// <summary><c>qkv_bias</c> (default false, as the module's default; every official PVT model sets it true).</summary>
    public bool QkvBias { get; init; }

    /// <summary><c>dwc_kernel</c> (k, odd, default 3): the depthwise convolution is k×k.</summary>
    public int DwcKernel { get; init; } = 3;

    /// <summary>
    /// <c>form</c>: which official module (default <c>pvt</c>): <c>pvt</c> (agent_pvt.py: <c>q</c>, <c>kv</c>, <c>sr_ratio</c>),
    /// <c>swin</c> (agent_swin.py: one <c>qkv</c>, the grid is a window and <c>[B, H, W, C]</c> inputs are cut into windows) or
    /// <c>deit</c> (agent_deit.py: one <c>qkv</c>, a class token before the grid, <c>ac_bias</c>/<c>ca_bias</c>).
    /// </summary>
    public string Form { get; init; } = VisionForms.Pvt;

    /// <summary>
    /// <c>agent_grid_h</c>, <c>agent_grid_w</c> (pvt only; default 0: √n × √n): the grid the agents are pooled to at run time, as the
    /// official detection/segmentation module's <c>downstream_agent_shape</c>; the biases' agent axes (a √n×√n grid) are then
    /// resized bilinearly to it.
    /// </summary>
    public int AgentGridHeight { get; init; }

    /// <inheritdoc cref="AgentGridHeight"/>
    public int AgentGridWidth { get; init; }

    /// <summary>The rows of the agents' pooled grid: <see cref="AgentGridHeight"/>, or √n.</summary>
    public int PoolHeight => AgentGridHeight > 0 ? AgentGridHeight : AgentSide;

    /// <summary>The columns of the agents' pooled grid: <see cref="AgentGridWidth"/>, or √n.</summary>
    public int PoolWidth => AgentGridWidth > 0 ? AgentGridWidth : AgentSide;

    /// <summary>The head width d = d_model / n_heads.</summary>
    public int HeadDim => DModel / Heads;

    /// <summary>√n, the side of the agents' pooled grid.</summary>
    public int AgentSide => (int)Math.Round(Math.Sqrt(Agents));

    /// <summary>The number of tokens of the built grid, <c>grid_h · grid_w</c>.</summary>
    public int Tokens => GridHeight * GridWidth;

    internal static AgentVisionConfig Read(ConfigReader r)
    {
        var (height, width) = VisionGridKeys.Read(r);
        var config = new AgentVisionConfig
        {
            DModel = r.Int("d_model"),
            Heads = r.Int("n_heads"),
            Agents = r.Int("n_agents"),
            GridHeight = height,
            GridWidth = width,
            SrRatio = r.Int("sr_ratio", 1),
            QkvBias = r.Bool("qkv_bias", false),
            DwcKernel = r.Int("dwc_kernel", 3),
            Form = VisionForms.Read(r),
            AgentGridHeight = r.Int("agent_grid_h", 0),
            AgentGridWidth = r.Int("agent_grid_w", 0),
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
        Require(AgentSide * AgentSide == Agents, "n_agents", "a perfect square (the agents are pooled to a √n×√n grid)", Agents);
        VisionGridKeys.Validate(GridHeight, GridWidth, SrRatio);
        Require(DwcKernel > 0 && DwcKernel % 2 == 1, "dwc_kernel", "an odd positive integer", DwcKernel);
        VisionForms.Validate(Form, [VisionForms.Pvt, VisionForms.Swin, VisionForms.Deit], SrRatio);
        Require(Form != VisionForms.Deit || GridHeight == GridWidth, "grid_w", $"grid_h {GridHeight} (the deit form's grid is square)", GridWidth);
        Require(AgentGridHeight >= 0 && (AgentGridHeight > 0) == (AgentGridWidth > 0), "agent_grid_h", $"0 with agent_grid_w 0 (√n × √n), or both positive (agent_grid_w is {AgentGridWidth})", AgentGridHeight);
        Require(AgentGridWidth >= 0, "agent_grid_w", "0 or a positive integer", AgentGridWidth);
        Require(AgentGridHeight == 0 || Form == VisionForms.Pvt, "agent_grid_h", "0 for the swin and deit forms (only the PVT detection module pools to another agent grid)", AgentGridHeight);
    }

    /// <inheritdoc/>
    public override IEnumerable<KeyValuePair<string, object>> Keys()
    {
        List<KeyValuePair<string, object>> keys =
        [
            new("d_model", DModel), new("n_heads", Heads), new("n_agents", Agents), new("grid_h", GridHeight), new("grid_w", GridWidth),
            new("sr_ratio", SrRatio), new("qkv_bias", QkvBias), new("dwc_kernel", DwcKernel), new("form", Form),
        ];
        if (AgentGridHeight > 0)
        {
            keys.Add(new("agent_grid_h", AgentGridHeight));
            keys.Add(new("agent_grid_w", AgentGridWidth));
        }
        return keys;
    }
}

/// <summary>The <c>form</c> key of the 2-D configs: which official module's parameters and token layout.</summary>
internal static class VisionForms
{
    public const string Pvt = "pvt", Swin = "swin", Deit = "deit";

    public static string Read(ConfigReader r) => r.Has("form") ? r.Text("form") ?? Pvt : Pvt;

    public static void Validate(string form, string[] allowed, int srRatio)
    {
        if (!allowed.Contains(form))
        {
            throw VisionGridKeys.KeyError("form", $"one of {string.Join(", ", allowed)}", $"'{form}'");
        }
        if (form != Pvt && srRatio != 1)
        {
            throw VisionGridKeys.KeyError("sr_ratio", $"1 for the {form} form (only PVT reduces keys and values)", srRatio.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
    }
}

/// <summary>The grid keys the 2-D forms share: <c>grid_size</c> S (an S×S grid) or <c>grid_h</c> and <c>grid_w</c>, and an optional <c>seq_len</c> that must equal their product.</summary>
internal static class VisionGridKeys
{
    /// <summary>True when a config of agent or flatten selects the 2-D form.</summary>
    public static bool Selected(ConfigReader r) => r.Has("grid_size") || r.Has("grid_h") || r.Has("grid_w");

    public static (int Height, int Width) Read(ConfigReader r)
    {
        int height, width;
        if (r.Has("grid_size"))
        {
            if (r.Has("grid_h") || r.Has("grid_w"))
            {
                throw KeyError("grid_size", "either grid_size (a square grid) or grid_h and grid_w", "both");
            }
            height = width = r.Int("grid_size");
        }
        else
        {
            height = r.Int("grid_h");
            width = r.Int("grid_w");
        }
        // seq_len is redundant here; when given it must be the grid's token count.
        if (r.Has("seq_len"))
        {
            int tokens = r.Int("seq_len");
            if ((long)height * width != tokens)
            {
                throw KeyError("seq_len", $"grid_h·grid_w = {height}·{width} = {(long)height * width} (the tokens of the grid)", tokens.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }
        }
        return (height, width);
    }

    public static void Validate(int height, int width, int srRatio)
    {
        Check(height > 0, "grid_h", "a positive integer", height);
        Check(width > 0, "grid_w", "a positive integer", width);
        Check((long)height * width <= int.MaxValue, "grid_w", $"grid_h·grid_w ≤ {int.MaxValue}", (long)height * width);
        Check(srRatio > 0, "sr_ratio", "a positive integer", srRatio);
        Check(height % srRatio == 0 && width % srRatio == 0, "sr_ratio", $"a divisor of grid_h {height} and grid_w {width}", srRatio);
    }

    private static void Check(bool condition, string key, string expected, long actual)
    {
        if (!condition)
        {
            throw KeyError(key, expected, actual.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
    }

    internal static ArgumentException KeyError(string key, string expected, string actual) => new($"{key}: expected {expected}, actual {actual}", key);
}

using Attention.Native.Tests.Support;
using Attention.Native.Tests.TorchReference;
using Attention.Native.Variants;
using TorchSharp;

namespace Attention.Native.Tests.Variants.Vision;

using static TorchSharp.torch;
using TorchTensor = TorchSharp.torch.Tensor;

/// <summary>
/// The library's 2-D forms (<see cref="AgentVisionLayer"/>, <see cref="FlattenVisionLayer"/>) loaded through the official
/// layouts (agent-pvt, flatten-pvt) against the float64 torch reference of the official modules (<see cref="VisionTorchReference"/>,
/// itself held to loops, hand-worked numbers and finite differences by <see cref="VisionReferenceTests"/>): y, dx and every
/// parameter's gradient, on the grid the parameters were made for and on others, with and without spatial reduction.
/// </summary>
public class VisionLayerTests : TorchReferenceFixture
{
    private const int Batch = 2;

    private static readonly (AgentPvtConfig Config, int H, int W)[] AgentRuns =
    [
        (new(16, 2, 4, 6, 6, QkvBias: true), 6, 6),               // the built grid, no reduction
        (new(16, 2, 4, 6, 6, QkvBias: true), 5, 7),               // another grid: every bias resized
        (new(16, 2, 9, 8, 8, SrRatio: 2, QkvBias: true), 8, 8),   // keys on 4×4 through sr and norm, v bilinear back
        (new(16, 2, 9, 8, 8, SrRatio: 2, QkvBias: true), 6, 10),  // both at once: the key grid 3×5 against the biases' 4×4
        (new(16, 4, 9, 6, 6, DwcKernel: 5), 6, 6),                // no qkv bias, 5×5 depthwise filters
    ];

    private static readonly (FlattenPvtConfig Config, int H, int W)[] FlattenRuns =
    [
        (new(16, 2, 6, 6, QkvBias: true), 6, 6),
        (new(16, 2, 6, 6, QkvBias: true), 5, 7),                             // the positional encoding resized
        (new(16, 4, 8, 8, SrRatio: 2, QkvBias: true, DwcKernel: 3), 8, 8),   // 16 keys, v linear over the sequence to 64
        (new(16, 4, 8, 8, SrRatio: 2, QkvBias: true, DwcKernel: 3), 6, 10),
        (new(16, 2, 6, 6, FocusingFactor: 2.5), 6, 6),
    ];

    private static IEnumerable<TestCaseData> AgentCases() => Cases(AgentRuns.Select(r => (r.Config.ToString(), r.H, r.W)));

    private static IEnumerable<TestCaseData> FlattenCases() => Cases(FlattenRuns.Select(r => (r.Config.ToString(), r.H, r.W)));

    private static IEnumerable<TestCaseData> Cases(IEnumerable<(string Name, int H, int W)> runs)
    {
        int index = 0;
        foreach (var (_, h, w) in runs)
        {
            foreach (var dtype in new[] { DType.F64, DType.F32 })
            {
                yield return new TestCaseData(index, dtype).SetArgDisplayNames($"case{index}", $"{h}x{w}", dtype.ToString());
            }
            index++;
        }
    }

    [TestCaseSource(nameof(AgentCases))]
    public void Agent_pvt_layer_gives_the_official_modules_outputs_and_gradients(int index, DType dtype)
    {
        var (rc, h, w) = AgentRuns[index];
        var config = new AgentVisionConfig
        {
            DModel = rc.DModel, Heads = rc.Heads, Agents = rc.Agents, GridHeight = rc.GridH, GridWidth = rc.GridW, SrRatio = rc.SrRatio,
            QkvBias = rc.QkvBias, DwcKernel = rc.DwcKernel,
        };
        AssertMatchesReference(config, CheckpointLayout.AgentPvt, VisionTorchReference.Parameters(rc), dtype, GridShape(rc.GridH, rc.GridW, h, w, rc.DModel),
            (p, x) => VisionTorchReference.AgentPvt(rc, p, x, h, w), $"agent-pvt {rc} on {h}×{w} {dtype}");
    }

    [TestCaseSource(nameof(FlattenCases))]
    public void Flatten_pvt_layer_gives_the_official_modules_outputs_and_gradients(int index, DType dtype)
    {
        var (rc, h, w) = FlattenRuns[index];
        var config = new FlattenVisionConfig
        {
            DModel = rc.DModel, Heads = rc.Heads, GridHeight = rc.GridH, GridWidth = rc.GridW, SrRatio = rc.SrRatio, QkvBias = rc.QkvBias,
            FocusingFactor = rc.FocusingFactor, DwcKernel = rc.DwcKernel,
        };
        AssertMatchesReference(config, CheckpointLayout.FlattenPvt, VisionTorchReference.Parameters(rc), dtype, GridShape(rc.GridH, rc.GridW, h, w, rc.DModel),
            (p, x) => VisionTorchReference.FlattenPvt(rc, p, x, h, w), $"flatten-pvt {rc} on {h}×{w} {dtype}");
    }

    [TestCase(DType.F64, 1, 1)]   // windows as the official module takes them: [B·windows, w², C]
    [TestCase(DType.F64, 2, 3)]   // a [B, 2w, 3w, C] grid cut into six windows and put back
    [TestCase(DType.F32, 2, 3)]
    public void Agent_swin_layer_gives_the_official_modules_outputs_and_gradients(DType dtype, int rows, int columns)
    {
        var rc = new AgentSwinConfig(16, 2, 4, 5);
        var config = new AgentVisionConfig { DModel = 16, Heads = 2, Agents = 4, GridHeight = 5, GridWidth = 5, QkvBias = true, Form = "swin" };
        AssertMatchesReference(config, CheckpointLayout.AgentSwin, VisionTorchReferenceWindows.Parameters(rc), dtype, WindowShape(rows, columns, 5, 16),
            (p, x) => PerWindow(x, rows, columns, 5, z => VisionTorchReferenceWindows.AgentSwin(rc, p, z)), $"agent-swin {rc} {rows}×{columns} windows {dtype}");
    }

    [TestCase(DType.F64, 1, 1)]
    [TestCase(DType.F64, 2, 3)]
    [TestCase(DType.F32, 2, 3)]
    public void Flatten_swin_layer_gives_the_official_modules_outputs_and_gradients(DType dtype, int rows, int columns)
    {
        var rc = new FlattenSwinConfig(16, 4, 5, DwcKernel: 3);
        var config = new FlattenVisionConfig { DModel = 16, Heads = 4, GridHeight = 5, GridWidth = 5, QkvBias = true, DwcKernel = 3, Form = "swin" };
        AssertMatchesReference(config, CheckpointLayout.FlattenSwin, VisionTorchReferenceWindows.Parameters(rc), dtype, WindowShape(rows, columns, 5, 16),
            (p, x) => PerWindow(x, rows, columns, 5, z => VisionTorchReferenceWindows.FlattenSwin(rc, p, z)), $"flatten-swin {rc} {rows}×{columns} windows {dtype}");
    }

    [TestCase(DType.F64, false)]
    [TestCase(DType.F32, false)]
    [TestCase(DType.F64, true)]
    public void Agent_deit_layer_gives_the_official_modules_outputs_and_gradients(DType dtype, bool qkvBias)
    {
        var rc = new AgentDeitConfig(16, 2, 9, 6, qkvBias);
        var config = new AgentVisionConfig { DModel = 16, Heads = 2, Agents = 9, GridHeight = 6, GridWidth = 6, QkvBias = qkvBias, Form = "deit" };
        AssertMatchesReference(config, CheckpointLayout.AgentDeit, VisionTorchReferenceWindows.Parameters(rc), dtype, new Shape(Batch, 37, 16),
            (p, x) => VisionTorchReferenceWindows.AgentDeit(rc, p, x), $"agent-deit {rc} {dtype}");
    }

    [Test]
    public void Agent_pvt_layer_gradients_agree_with_finite_differences()
    {
        // Another grid with a reduction: every parameter path (sr, norm, resized biases, pooled agents, v bilinear, dwc).
        var config = new AgentVisionConfig { DModel = 8, Heads = 2, Agents = 4, GridHeight = 8, GridWidth = 8, SrRatio = 2, QkvBias = true };
        CheckGradients(config, 6, 10);
    }

    [Test]
    public void Flatten_pvt_layer_gradients_agree_with_finite_differences()
    {
        var config = new FlattenVisionConfig { DModel = 8, Heads = 2, GridHeight = 8, GridWidth = 8, SrRatio = 2, QkvBias = true, DwcKernel = 3 };
        CheckGradients(config, 6, 10);
    }

    [Test]
    public void Agent_deit_and_swin_layer_gradients_agree_with_finite_differences()
    {
        // DeiT on a grid other than its built one (every bias resized: our extension), Swin on a grid of 2×2 windows.
        CheckGradients(new AgentVisionConfig { DModel = 8, Heads = 2, Agents = 4, GridHeight = 4, GridWidth = 4, QkvBias = true, Form = "deit" }, new Shape(Batch, 1 + 25, 8));
        CheckGradients(new AgentVisionConfig { DModel = 8, Heads = 2, Agents = 4, GridHeight = 3, GridWidth = 3, QkvBias = true, Form = "swin" }, new Shape(Batch, 6, 6, 8));
        CheckGradients(new FlattenVisionConfig { DModel = 8, Heads = 2, GridHeight = 3, GridWidth = 3, QkvBias = true, DwcKernel = 3, Form = "swin" }, new Shape(Batch, 6, 3, 8));
    }

    [Test]
    public void Agent_pvt_on_a_one_row_grid_with_zero_biases_equals_the_1d_layer()
    {
        // A 1×T grid pools q to √n×√n agents whose √n rows copy the 1-D pool to √n agents; with zero biases the second softmax
        // splits each 1-D weight evenly over the copies, and the k×k filter meets only its middle row (VisionReferenceTests).
        const int tokens = 8, side = 3, dm = 16;
        var vision = new AgentVisionConfig { DModel = dm, Heads = 4, Agents = side * side, GridHeight = 1, GridWidth = tokens, QkvBias = true };
        var oneD = new AgentConfig { DModel = dm, Heads = 4, Agents = side, SeqLen = tokens, DwcKernel = 3 };
        using var layer2 = AttentionLayer.Create(vision, Backend.Cpu, DType.F64);
        using var layer1 = AttentionLayer.Create(oneD, Backend.Cpu, DType.F64);
        var w = Draw(layer2, seed: 61);
        foreach (var name in new[] { "an_bias", "na_bias", "ah_bias", "aw_bias", "ha_bias", "wa_bias" })
        {
            w[name] = new double[w[name].Length];
        }
        Load(layer2, w);
        var w1 = Projections(w, dm);
        w1["bias_ak"] = new double[4 * side * tokens];
        w1["bias_qa"] = new double[4 * tokens * side];
        w1["dwc_w"] = MiddleRow(w["dwc.weight"], dm, 3);
        w1["dwc_b"] = w["dwc.bias"];
        Load(layer1, w1);
        var (y2, dx2, g2) = Run(layer2, new Shape(Batch, tokens, dm), seed: 62);
        var (y1, dx1, g1) = Run(layer1, new Shape(Batch, tokens, dm), seed: 62);
        Close(y2, y1, "y");
        Close(dx2, dx1, "dx");
        CloseProjections(g2, g1, dm);
        Close(MiddleRow(g2["dwc.weight"], dm, 3), g1["dwc_w"], "d dwc middle row");
        Assert.That(g2["dwc.weight"].Sum(Math.Abs) - MiddleRow(g2["dwc.weight"], dm, 3).Sum(Math.Abs), Is.EqualTo(0).Within(1e-12),
            "the rows of the 3×3 filter that meet only padding get no gradient");
    }

    [Test]
    public void Flatten_pvt_on_a_one_row_grid_equals_the_1d_layer()
    {
        // FLatten has no pooling: on a 1×T grid every parameter maps onto variants.md §6 (the k×k filters by their middle row).
        const int tokens = 8, kernel = 5, dm = 16, heads = 4;
        var vision = new FlattenVisionConfig { DModel = dm, Heads = heads, GridHeight = 1, GridWidth = tokens, QkvBias = true, DwcKernel = kernel };
        var oneD = new FlattenConfig { DModel = dm, Heads = heads, SeqLen = tokens, DwcKernel = kernel };
        using var layer2 = AttentionLayer.Create(vision, Backend.Cpu, DType.F64);
        using var layer1 = AttentionLayer.Create(oneD, Backend.Cpu, DType.F64);
        var w = Draw(layer2, seed: 71);
        Load(layer2, w);
        var w1 = Projections(w, dm);
        w1["pos_enc"] = w["positional_encoding"];
        w1["scale"] = w["scale"];
        w1["dwc_w"] = MiddleRow(w["dwc.weight"], dm / heads, kernel);
        w1["dwc_b"] = w["dwc.bias"];
        Load(layer1, w1);
        var (y2, dx2, g2) = Run(layer2, new Shape(Batch, tokens, dm), seed: 72);
        var (y1, dx1, g1) = Run(layer1, new Shape(Batch, tokens, dm), seed: 72);
        Close(y2, y1, "y");
        Close(dx2, dx1, "dx");
        CloseProjections(g2, g1, dm);
        Close(g2["positional_encoding"], g1["pos_enc"], "d positional_encoding");
        Close(g2["scale"], g1["scale"], "d scale");
        Close(MiddleRow(g2["dwc.weight"], dm / heads, kernel), g1["dwc_w"], "d dwc middle row");
        Close(g2["dwc.bias"], g1["dwc_b"], "d dwc.bias");
    }

    [Test]
    public void Official_module_arguments_make_the_2d_configs()
    {
        var agent = CheckpointLayout.AgentPvt.ReadConfig("""{"dim": 64, "num_heads": 1, "num_patches": 3136, "agent_num": 49, "sr_ratio": 1, "qkv_bias": true, "attn_drop": 0.0}""");
        Assert.That(agent, Is.EqualTo(new AgentVisionConfig { DModel = 64, Heads = 1, Agents = 49, GridHeight = 56, GridWidth = 56, QkvBias = true }));
        var flatten = CheckpointLayout.FlattenPvt.ReadConfig("""{"dim": 128, "num_heads": 2, "num_patches": 784, "sr_ratio": 2, "qkv_bias": true, "focusing_factor": 3, "kernel_size": 5}""");
        Assert.That(flatten, Is.EqualTo(new FlattenVisionConfig { DModel = 128, Heads = 2, GridHeight = 28, GridWidth = 28, SrRatio = 2, QkvBias = true }));
        var e = Assert.Throws<ArgumentException>(() => CheckpointLayout.AgentPvt.ReadConfig("""{"dim": 64, "num_heads": 1, "num_patches": 3000}"""));
        Assert.That(e!.Message, Does.Contain("num_patches"));
        e = Assert.Throws<ArgumentException>(() => CheckpointLayout.FlattenPvt.ReadConfig("""{"dim": 64, "num_heads": 1, "num_patches": 64, "qk_scale": 0.1}"""));
        Assert.That(e!.Message, Does.Contain("qk_scale"));
        var swin = CheckpointLayout.AgentSwin.ReadConfig("""{"dim": 96, "window_size": [56, 56], "num_heads": 3, "qkv_bias": true, "qk_scale": null, "shift_size": 0, "agent_num": 9}""");
        Assert.That(swin, Is.EqualTo(new AgentVisionConfig { DModel = 96, Heads = 3, Agents = 9, GridHeight = 56, GridWidth = 56, QkvBias = true, Form = "swin" }));
        var deit = CheckpointLayout.AgentDeit.ReadConfig("""{"dim": 384, "num_heads": 6, "qkv_bias": true, "agent_num": 49, "window": 14}""");
        Assert.That(deit, Is.EqualTo(new AgentVisionConfig { DModel = 384, Heads = 6, Agents = 49, GridHeight = 14, GridWidth = 14, QkvBias = true, Form = "deit" }));
        var flattenSwin = CheckpointLayout.FlattenSwin.ReadConfig("""{"dim": 96, "window_size": 56, "num_heads": 3, "focusing_factor": 3, "kernel_size": 5}""");
        Assert.That(flattenSwin, Is.EqualTo(new FlattenVisionConfig { DModel = 96, Heads = 3, GridHeight = 56, GridWidth = 56, QkvBias = true, Form = "swin" }));
        Assert.That(CheckpointLayout.AgentSwin.Misfits(agent), Has.One.Contains("form swin"));
        // A 1-D config cannot hold a PVT checkpoint.
        Assert.That(CheckpointLayout.AgentPvt.Misfits(new AgentConfig { DModel = 16, Heads = 2, Agents = 4, SeqLen = 36 }), Is.Not.Empty);
        Assert.That(CheckpointLayout.AgentPvt.Misfits(agent), Is.Empty);
    }

    [Test]
    public void Grid_keys_parse_and_write_back()
    {
        var square = (AgentVisionConfig)LayerConfig.Parse("agent", """{"d_model": 16, "n_heads": 2, "n_agents": 4, "grid_size": 6}""");
        Assert.That((square.GridHeight, square.GridWidth, square.SrRatio, square.QkvBias, square.DwcKernel), Is.EqualTo((6, 6, 1, false, 3)));
        Assert.That(LayerConfig.Parse("agent", square.ToJson()), Is.EqualTo(square));
        var wide = (FlattenVisionConfig)LayerConfig.Parse("flatten", """{"d_model": 16, "n_heads": 2, "grid_h": 4, "grid_w": 6, "sr_ratio": 2, "qkv_bias": true, "seq_len": 24}""");
        Assert.That((wide.GridHeight, wide.GridWidth, wide.SrRatio, wide.QkvBias, wide.DwcKernel), Is.EqualTo((4, 6, 2, true, 5)));
        Assert.That(LayerConfig.Parse("flatten", wide.ToJson()), Is.EqualTo(wide));
        // Without a grid key the 1-D forms are unchanged.
        Assert.That(LayerConfig.Parse("agent", """{"d_model": 16, "n_heads": 2, "n_agents": 4, "seq_len": 36}"""), Is.TypeOf<AgentConfig>());
    }

    [TestCase("agent", """{"d_model": 16, "n_heads": 2, "n_agents": 4, "grid_size": 6, "seq_len": 35}""", "seq_len")]
    [TestCase("agent", """{"d_model": 16, "n_heads": 2, "n_agents": 4, "grid_size": 6, "sr_ratio": 4}""", "sr_ratio")]
    [TestCase("agent", """{"d_model": 16, "n_heads": 2, "n_agents": 4, "grid_h": 6, "grid_w": 9, "sr_ratio": 2}""", "sr_ratio")]
    [TestCase("agent", """{"d_model": 16, "n_heads": 2, "n_agents": 8, "grid_size": 6}""", "n_agents")]
    [TestCase("agent", """{"d_model": 16, "n_heads": 2, "n_agents": 4, "grid_size": 6, "grid_h": 6}""", "grid_size")]
    [TestCase("agent", """{"d_model": 16, "n_heads": 2, "n_agents": 4, "grid_h": 0, "grid_w": 6}""", "grid_h")]
    [TestCase("flatten", """{"d_model": 16, "n_heads": 2, "grid_h": 4, "grid_w": 6, "seq_len": 25}""", "seq_len")]
    [TestCase("agent", """{"d_model": 16, "n_heads": 2, "n_agents": 4, "grid_size": 6, "form": "vit"}""", "form")]
    [TestCase("flatten", """{"d_model": 16, "n_heads": 2, "grid_size": 6, "form": "deit"}""", "form")]
    [TestCase("agent", """{"d_model": 16, "n_heads": 2, "n_agents": 4, "grid_size": 6, "form": "swin", "sr_ratio": 2}""", "sr_ratio")]
    [TestCase("agent", """{"d_model": 16, "n_heads": 2, "n_agents": 4, "grid_h": 6, "grid_w": 4, "form": "deit"}""", "grid_w")]
    [TestCase("flatten", """{"d_model": 16, "n_heads": 2, "grid_size": 6, "sr_ratio": 5}""", "sr_ratio")]
    public void Bad_grids_are_refused_naming_the_key(string variant, string json, string key)
    {
        var e = Assert.Throws<ArgumentException>(() => LayerConfig.Parse(variant, json));
        Assert.That(e!.ParamName, Is.EqualTo(key), e.Message);
        Assert.That(e.Message, Does.StartWith(key + ":"));
    }

    [Test]
    public void Inputs_off_the_grid_are_refused_naming_x()
    {
        using var agent = AttentionLayer.Create(new AgentVisionConfig { DModel = 8, Heads = 2, Agents = 4, GridHeight = 6, GridWidth = 6, SrRatio = 2 }, Backend.Cpu, DType.F32);
        using var wrongTokens = Backend.Cpu.Zeros(new Shape(1, 35, 8), DType.F32);
        var e = Assert.Throws<ArgumentException>(() => agent.Forward(wrongTokens).Dispose());
        Assert.That(e!.ParamName, Is.EqualTo("x"));
        Assert.That(e.Message, Does.Contain("grid_h·grid_w = 36"));
        using var oddGrid = Backend.Cpu.Zeros(new Shape(1, 6, 9, 8), DType.F32);
        e = Assert.Throws<ArgumentException>(() => agent.Forward(oddGrid).Dispose());
        Assert.That(e!.ParamName, Is.EqualTo("x"));
        Assert.That(e.Message, Does.Contain("sr_ratio = 2"));
        // Swin: windows that do not tile the grid; DeiT: tokens that are not 1 + S².
        using var swin = AttentionLayer.Create(new AgentVisionConfig { DModel = 8, Heads = 2, Agents = 4, GridHeight = 4, GridWidth = 4, Form = "swin" }, Backend.Cpu, DType.F32);
        using var untiled = Backend.Cpu.Zeros(new Shape(1, 8, 6, 8), DType.F32);
        e = Assert.Throws<ArgumentException>(() => swin.Forward(untiled).Dispose());
        Assert.That(e!.ParamName, Is.EqualTo("x"));
        Assert.That(e.Message, Does.Contain("4×4 windows tile"));
        using var deit = AttentionLayer.Create(new AgentVisionConfig { DModel = 8, Heads = 2, Agents = 4, GridHeight = 4, GridWidth = 4, Form = "deit" }, Backend.Cpu, DType.F32);
        using var noClassToken = Backend.Cpu.Zeros(new Shape(1, 16, 8), DType.F32);
        e = Assert.Throws<ArgumentException>(() => deit.Forward(noClassToken).Dispose());
        Assert.That(e!.ParamName, Is.EqualTo("x"));
        Assert.That(e.Message, Does.Contain("1 + S²"));
        // Another grid the ratio divides runs, and gives y in the input's shape.
        using var other = Backend.Cpu.Zeros(new Shape(1, 4, 10, 8), DType.F32);
        using var y = agent.Forward(other);
        Assert.That(y.Shape, Is.EqualTo(other.Shape));
    }

    // ---- helpers ----

    private delegate TorchTensor Reference(IReadOnlyDictionary<string, TorchTensor> parameters, TorchTensor x);

    /// <summary>
    /// Loads drawn values (none a no-op) under the official names through <paramref name="layout"/>, runs the layer's forward and
    /// backward on an H×W grid (<c>[B, N, C]</c> on the built grid, <c>[B, H, W, C]</c> on another), and holds y, dx and every
    /// gradient to the float64 reference: F64 within 1e-10, F32 within design.md's 1e-4 (outputs relative to 1 + max|ref|,
    /// gradients to max|ref gradient|, as TorchKit does).
    /// </summary>
    private static void AssertMatchesReference(LayerConfig config, CheckpointLayout layout, IReadOnlyList<(string Name, long[] Shape)> official,
        DType dtype, Shape shape, Reference reference, string label)
    {
        using var layer = AttentionLayer.Create(config, Backend.Cpu, dtype);
        Assert.That(layer.ParameterSpecs.Select(s => $"{s.Name} [{string.Join(", ", Dims(s.Shape))}]"), Is.EqualTo(official.Select(p => $"{p.Name} [{string.Join(", ", p.Shape)}]")),
            $"{label}: the official module's parameters, names, shapes and order");
        var w = VisionTorchReference.Draw(official, seed: 17);
        if (dtype == DType.F32)
        {
            foreach (var name in w.Keys.ToList())
            {
                w[name] = Rounded(w[name]);
            }
        }
        var checkpoint = official.ToDictionary(p => p.Name, p => Backend.Cpu.FromArray(w[p.Name], new Shape([.. p.Shape.Select(s => (int)s)]), DType.F64), StringComparer.Ordinal);
        try
        {
            layer.LoadParameters(checkpoint, layout);
        }
        finally
        {
            foreach (var t in checkpoint.Values)
            {
                t.Dispose();
            }
        }
        int dm = config.DModel, batch = shape[0];
        long tokens = shape.ElementCount / batch / dm;
        var (y, dx, grads) = Run(layer, shape, seed: 18);

        using var scope = torch.NewDisposeScope();
        var leaves = VisionTorchReference.Leaves(official, w, requiresGrad: true);
        var x = torch.tensor(Stored(TestData.Normal(18 + 1, shape.ElementCount), dtype), [batch, tokens, dm], ScalarType.Float64, requires_grad: true);
        var dy = torch.tensor(Stored(TestData.Normal(18 + 2, shape.ElementCount), dtype), [batch, tokens, dm], ScalarType.Float64);
        var yt = reference(leaves, x);
        (yt * dy).sum().backward();

        double tolerance = dtype == DType.F64 ? 1e-10 : 1e-4;
        var failures = new List<string>();
        void Check(string what, double[] ours, TorchTensor theirs, bool gradient)
        {
            double[] r = Values(theirs);
            Assert.That(ours, Has.Length.EqualTo(r.Length), $"{label} {what}: element count");
            double maxRef = r.Max(Math.Abs), maxErr = ours.Zip(r, (p, q) => Math.Abs(p - q)).Select(e => double.IsNaN(e) ? double.PositiveInfinity : e).Max();
            double error = maxErr / (gradient ? maxRef : 1 + maxRef);
            TestContext.Out.WriteLine($"{label} {what}: {error:E2} (max|ref| {maxRef:E2})");
            if (gradient && maxRef == 0)
            {
                failures.Add($"{what}: the reference gradient is zero");
            }
            else if (!(error <= tolerance))
            {
                failures.Add($"{what}: {error:E2} > {tolerance:E0}");
            }
        }
        Check("y", y, yt, gradient: false);
        Check("dx", dx, x.grad!, gradient: true);
        Assert.That(grads.Keys, Is.EquivalentTo(official.Select(p => p.Name)), $"{label}: a gradient for every parameter");
        foreach (var (name, _) in official)
        {
            Check($"d{name}", grads[name], leaves[name].grad!, gradient: true);
        }
        Assert.That(failures, Is.Empty, label);

        // Export gives the checkpoint back under the same names, bit for bit.
        var exported = layout.Export(layer);
        try
        {
            foreach (var (name, _) in official)
            {
                Assert.That(exported[name].ToDoubleArray(), Is.EqualTo(w[name]), $"{label}: export of {name}");
            }
        }
        finally
        {
            foreach (var t in exported.Values)
            {
                t.Dispose();
            }
        }
    }

    /// <summary>Central finite differences of the library layer itself (F64) for x and every parameter, a dozen probes each.</summary>
    private static void CheckGradients(LayerConfig config, int height, int width) => CheckGradients(config, new Shape(Batch, height, width, config.DModel));

    private static void CheckGradients(LayerConfig config, Shape shape)
    {
        using var layer = AttentionLayer.Create(config, Backend.Cpu, DType.F64);
        var w = Draw(layer, seed: 91);
        var names = layer.ParameterSpecs.Select(s => s.Name).ToArray();
        var inputs = new[] { TestData.Normal(92, shape.ElementCount) }.Concat(names.Select(n => w[n])).ToArray();
        var dy = TestData.Normal(93, shape.ElementCount);
        double[] Forward(double[][] v)
        {
            for (int i = 0; i < names.Length; i++)
            {
                layer.Parameters[names[i]].CopyFrom(v[i + 1]);
            }
            using var x = Backend.Cpu.FromArray(v[0], shape, DType.F64);
            using var y = layer.Forward(x);
            return y.ToDoubleArray();
        }
        Load(layer, w);
        using var tx = Backend.Cpu.FromArray(inputs[0], shape, DType.F64);
        using var tdy = Backend.Cpu.FromArray(dy, shape, DType.F64);
        double[][] analytic;
        using (var pass = layer.ForwardForTraining(tx))
        using (var grads = pass.Backward(tdy))
        {
            analytic = [grads.Input.ToDoubleArray(), .. names.Select(n => grads.Parameters[n].ToDoubleArray())];
        }
        double error = GradientCheck.MaxError(inputs, Forward, dy, analytic, maxProbesPerInput: 12);
        GradientCheck.AssertClose($"{config} on {shape}: x and {string.Join(", ", names)}", error);
    }

    // [B, N, C] on the built grid, [B, H, W, C] on another.
    private static Shape GridShape(int gridH, int gridW, int h, int w, int dm) =>
        (gridH, gridW) == (h, w) ? new Shape(Batch, h * w, dm) : new Shape(Batch, h, w, dm);

    // One window: [B, w², C] as the official module takes windows; a rows×columns grid of windows: [B, rows·w, columns·w, C].
    private static Shape WindowShape(int rows, int columns, int window, int dm) =>
        rows * columns == 1 ? new Shape(Batch, window * window, dm) : new Shape(Batch, rows * window, columns * window, dm);

    // Swin's window_partition before the module and window_reverse after it, in torch: x [B, H·W, C] row-major over the grid.
    private static TorchTensor PerWindow(TorchTensor x, int rows, int columns, int window, Func<TorchTensor, TorchTensor> module)
    {
        long b = x.shape[0], c = x.shape[2];
        var windows = x.reshape(b, rows, window, columns, window, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c);
        var y = module(windows);
        return y.reshape(b, rows, columns, window, window, c).permute(0, 1, 3, 2, 4, 5).reshape(b, -1, c);
    }

    private static (double[] Y, double[] Dx, Dictionary<string, double[]> Grads) Run(AttentionLayer layer, Shape shape, int seed)
    {
        using var x = Backend.Cpu.FromArray(Stored(TestData.Normal(seed + 1, shape.ElementCount), layer.DType), shape, layer.DType);
        using var dy = Backend.Cpu.FromArray(Stored(TestData.Normal(seed + 2, shape.ElementCount), layer.DType), shape, layer.DType);
        using var pass = layer.ForwardForTraining(x);
        Assert.That(pass.Output.Shape, Is.EqualTo(shape), "y has the input's shape");
        using var grads = pass.Backward(dy);
        return (pass.Output.ToDoubleArray(), grads.Input.ToDoubleArray(), grads.Parameters.ToDictionary(p => p.Key, p => p.Value.ToDoubleArray()));
    }

    // Every parameter drawn (none a no-op), as VisionTorchReference draws the official ones.
    private static Dictionary<string, double[]> Draw(AttentionLayer layer, int seed) =>
        VisionTorchReference.Draw(layer.ParameterSpecs.Select(s => (s.Name, Dims(s.Shape))).ToList(), seed);

    private static void Load(AttentionLayer layer, Dictionary<string, double[]> w)
    {
        foreach (var spec in layer.ParameterSpecs)
        {
            layer.Parameters[spec.Name].CopyFrom(w[spec.Name]);
        }
    }

    // The 1-D forms' projections from the PVT names: kv.weight's rows are k then v.
    private static Dictionary<string, double[]> Projections(Dictionary<string, double[]> w, int dm) => new(StringComparer.Ordinal)
    {
        ["w_q"] = w["q.weight"], ["b_q"] = w["q.bias"],
        ["w_k"] = w["kv.weight"][..(dm * dm)], ["b_k"] = w["kv.bias"][..dm],
        ["w_v"] = w["kv.weight"][(dm * dm)..], ["b_v"] = w["kv.bias"][dm..],
        ["w_o"] = w["proj.weight"], ["b_o"] = w["proj.bias"],
    };

    private static void CloseProjections(Dictionary<string, double[]> g2, Dictionary<string, double[]> g1, int dm)
    {
        Close(g2["q.weight"], g1["w_q"], "d q.weight");
        Close(g2["q.bias"], g1["b_q"], "d q.bias");
        Close(g2["kv.weight"], [.. g1["w_k"], .. g1["w_v"]], "d kv.weight");
        Close(g2["kv.bias"][dm..], g1["b_v"], "d kv.bias (v half)");
        Close(g2["proj.weight"], g1["w_o"], "d proj.weight");
        Close(g2["proj.bias"], g1["b_o"], "d proj.bias");
    }

    // [filters, 1, k, k] → [filters, 1, k]: the kernel row that meets a one-row image.
    private static double[] MiddleRow(double[] weight, int filters, int k)
    {
        var row = new double[filters * k];
        for (int f = 0; f < filters; f++)
        {
            Array.Copy(weight, ((f * k) + (k / 2)) * k, row, f * k, k);
        }
        return row;
    }

    /// <summary>Both F64 through the same few hundred operations in another order: 1e-12 relative to 1 + max is ~100× round-off.</summary>
    private static void Close(double[] actual, double[] expected, string what)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length), what);
        double error = actual.Zip(expected, (a, e) => Math.Abs(a - e)).Max() / (1 + expected.Max(Math.Abs));
        TestContext.Out.WriteLine($"{what}: {error:E2}");
        Assert.That(error, Is.LessThanOrEqualTo(1e-12), what);
    }

    private static long[] Dims(Shape shape) => [.. Enumerable.Range(0, shape.Rank).Select(i => (long)shape[i])];

    private static double[] Rounded(double[] values) => [.. values.Select(v => (double)(float)v)];

    private static double[] Stored(double[] values, DType dtype) => dtype == DType.F64 ? values : Rounded(values);

    private static double[] Values(TorchTensor t) => t.detach().contiguous().data<double>().ToArray();
}

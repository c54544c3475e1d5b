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
    internal const int Batch = 2;

    private static readonly (AgentPvtConfig Config, int H, int W)[] AgentRuns =
    [
        (new(16, 2, 4, 6, 6, QkvBias: true), 6, 6),               // the built grid, no reduction
        (new(16, 2, 4, 6, 6, QkvBias: true), 5, 7),               // another grid: every bias resized
        (new(16, 2, 9, 8, 8, SrRatio: 2, QkvBias: true), 8, 8),   // keys on 4×4 through sr and norm, v bilinear back
        (new(16, 2, 9, 8, 8, SrRatio: 2, QkvBias: true), 6, 10),  // both at once: the key grid 3×5 against the biases' 4×4
        (new(16, 4, 9, 6, 6, DwcKernel: 5), 6, 6),                // no qkv bias, 5×5 depthwise filters
        (new(16, 2, 4, 6, 6, QkvBias: true, PoolH: 3, PoolW: 2), 7, 5),  // the downstream module's agent grid 3×2 (not 2×2)
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
            QkvBias = rc.QkvBias, DwcKernel = rc.DwcKernel, AgentGridHeight = rc.PoolH, AgentGridWidth = rc.PoolW,
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
    internal static void CheckGradients(LayerConfig config, int height, int width) => CheckGradients(config, new Shape(Batch, height, width, config.DModel));

    internal static void CheckGradients(LayerConfig config, Shape shape)
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

    internal static (double[] Y, double[] Dx, Dictionary<string, double[]> Grads) Run(AttentionLayer layer, Shape shape, int seed)
    {
        using var x = Backend.Cpu.FromArray(Stored(TestData.Normal(seed + 1, shape.ElementCount), layer.DType), shape, layer.DType);
        using var dy = Backend.Cpu.FromArray(Stored(TestData.Normal(seed + 2, shape.ElementCount), layer.DType), shape, layer.DType);
        using var pass = layer.ForwardForTraining(x);
        Assert.That(pass.Output.Shape, Is.EqualTo(shape), "y has the input's shape");
        using var grads = pass.Backward(dy);
        return (pass.Output.ToDoubleArray(), grads.Input.ToDoubleArray(), grads.Parameters.ToDictionary(p => p.Key, p => p.Value.ToDoubleArray()));
    }

    // Every parameter drawn (none a no-op), as VisionTorchReference draws the official ones.
    internal static Dictionary<string, double[]> Draw(AttentionLayer layer, int seed) =>
        VisionTorchReference.Draw(layer.ParameterSpecs.Select(s => (s.Name, Dims(s.Shape))).ToList(), seed);

    internal static void Load(AttentionLayer layer, Dictionary<string, double[]> w)
    {
        foreach (var spec in layer.ParameterSpecs)
        {
            layer.Parameters[spec.Name].CopyFrom(w[spec.Name]);
        }
    }

    // The 1-D forms' projections from the PVT names: kv.weight's rows are k then v.
    internal static Dictionary<string, double[]> Projections(Dictionary<string, double[]> w, int dm) => new(StringComparer.Ordinal)
    {
        ["w_q"] = w["q.weight"], ["b_q"] = w["q.bias"],
        ["w_k"] = w["kv.weight"][..(dm * dm)], ["b_k"] = w["kv.bias"][..dm],
        ["w_v"] = w["kv.weight"][(dm * dm)..], ["b_v"] = w["kv.bias"][dm..],
        ["w_o"] = w["proj.weight"], ["b_o"] = w["proj.bias"],
    };

    internal static void CloseProjections(Dictionary<string, double[]> g2, Dictionary<string, double[]> g1, int dm)
    {
        Close(g2["q.weight"], g1["w_q"], "d q.weight");
        Close(g2["q.bias"], g1["b_q"], "d q.bias");
        Close(g2["kv.weight"], [.. g1["w_k"], .. g1["w_v"]], "d kv.weight");
        Close(g2["kv.bias"][dm..], g1["b_v"], "d kv.bias (v half)");
        Close(g2["proj.weight"], g1["w_o"], "d proj.weight");
        Close(g2["proj.bias"], g1["b_o"], "d proj.bias");
    }

    // [filters, 1, k, k] → [filters, 1, k]: the kernel row that meets a one-row image.
    internal static double[] MiddleRow(double[] weight, int filters, int k)
    {
        var row = new double[filters * k];
        for (int f = 0; f < filters; f++)
        {
            Array.Copy(weight, ((f * k) + (k / 2)) * k, row, f * k, k);
        }
        return row;
    }

    /// <summary>Both F64 through the same few hundred operations in another order: 1e-12 relative to 1 + max is ~100× round-off.</summary>
    internal static void Close(double[] actual, double[] expected, string what)
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

using Attention.Native.Tests.Support;
using Attention.Native.Tests.TorchReference;
using Attention.Native.Variants;
using TorchSharp;

namespace Attention.Native.Tests.Variants.Vision;

using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;
using Tensor = TorchSharp.torch.Tensor;

/// <summary>
/// Makes the torch reference of the PVT forms (<see cref="VisionTorchReference"/>) trustworthy before the library has them:
/// its interpolation and pooling against numbers worked by hand, its outputs against per-element loops
/// (<see cref="VisionLoops"/>) on the grid the biases were made for and on others, its 1×T grids against the project's 1-D
/// formulas (variants.md §5–6), and its autograd gradients against central finite differences.
/// </summary>
public class VisionReferenceTests : TorchReferenceFixture
{
    private const int Batch = 2;

    /// <summary>
    /// Both sides in F64 over a few hundred operations per value; 1e-12 relative to 1 + max|loops| is ~100× their honest
    /// difference, while a wrong index, interpolation weight or bias moves y by ≥ 1e-4.
    /// </summary>
    private const double Tolerance = 1e-12;

    private static readonly AgentPvtConfig[] AgentCases =
    [
        new(16, 2, 4, 6, 6, QkvBias: true),                    // the grid the biases were made for, no reduction
        new(16, 2, 9, 8, 8, SrRatio: 2, QkvBias: true),        // spatial reduction 2: keys on 4×4, v bilinear back to 8×8
        new(16, 4, 9, 6, 6, DwcKernel: 5),                     // no qkv bias; the downstream code's kernel_size 5
    ];

    private static readonly (int Case, int H, int W)[] AgentRuns =
    [
        (0, 6, 6), (1, 8, 8), (2, 6, 6),
        (0, 5, 7),   // another grid: every bias bilinear to 5×7; pooling windows of 5 and 7 cells over 2 agents overlap
        (1, 6, 10),  // another grid with a reduction: the key grid 3×5 against the biases' 4×4
    ];

    private static readonly FlattenPvtConfig[] FlattenCases =
    [
        new(16, 2, 6, 6, QkvBias: true),
        new(16, 4, 8, 8, SrRatio: 2, QkvBias: true, DwcKernel: 3),  // v linear over the token sequence from 16 to 64 tokens
        new(16, 2, 6, 6, FocusingFactor: 2.5),
    ];

    private static readonly (int Case, int H, int W)[] FlattenRuns = [(0, 6, 6), (1, 8, 8), (2, 6, 6), (0, 5, 7), (1, 6, 10)];

    private static IEnumerable<TestCaseData> AgentRunCases() =>
        AgentRuns.Select(r => new TestCaseData(r.Case, r.H, r.W).SetArgDisplayNames($"case{r.Case}", $"{r.H}x{r.W}"));

    private static IEnumerable<TestCaseData> FlattenRunCases() =>
        FlattenRuns.Select(r => new TestCaseData(r.Case, r.H, r.W).SetArgDisplayNames($"case{r.Case}", $"{r.H}x{r.W}"));

    [Test]
    public void Interpolation_and_pooling_are_pytorchs_as_worked_by_hand()
    {
        using var scope = torch.NewDisposeScope();
        // 2×2 of 1 + 2j + 4i to 4×4, align_corners false: sources (dst + 0.5)/2 − 0.5 clamped at 0 and at the last cell,
        // i.e. positions 0, 0.25, 0.75, 1 in each axis, so out[i, j] = 1 + 2·pos[j] + 4·pos[i].
        double[] pos = [0, 0.25, 0.75, 1];
        var expected = new double[16];
        for (int i = 0; i < 4; i++)
        {
            for (int j = 0; j < 4; j++)
            {
                expected[(i * 4) + j] = 1 + (2 * pos[j]) + (4 * pos[i]);
            }
        }
        double[] image = [1, 3, 5, 7];
        AssertEqual(Values(VisionTorchReference.Bilinear(torch.tensor(image, [1, 1, 2, 2], ScalarType.Float64), 4, 4)), expected, "torch bilinear 2×2 → 4×4");
        AssertEqual(VisionLoops.Bilinear(image, 1, 2, 2, 4, 4), expected, "loops bilinear 2×2 → 4×4");
        // 1×7 ramp 0…6 to 1×3 (downsampling samples two cells, no antialias): sources 7/3·(j + 0.5) − 0.5 = 2/3, 3, 16/3.
        double[] ramp = [0, 1, 2, 3, 4, 5, 6];
        double[] down = [2.0 / 3, 3, 16.0 / 3];
        AssertEqual(Values(VisionTorchReference.Bilinear(torch.tensor(ramp, [1, 1, 1, 7], ScalarType.Float64), 1, 3)), down, "torch bilinear 1×7 → 1×3");
        AssertEqual(VisionLoops.Bilinear(ramp, 1, 1, 7, 1, 3), down, "loops bilinear 1×7 → 1×3");
        // linear 0, 3, 6 to 5 samples: sources 0.6·(j + 0.5) − 0.5 = (0), 0.4, 1, 1.6, 2.2 (→ the last cell).
        double[] line = [0, 3, 6];
        double[] stretched = [0, 1.2, 3, 4.8, 6];
        AssertEqual(Values(F.interpolate(torch.tensor(line, [1, 1, 3], ScalarType.Float64), [5], mode: InterpolationMode.Linear, align_corners: false)), stretched, "torch linear 3 → 5");
        AssertEqual(VisionLoops.Linear(line, 1, 3, 5), stretched, "loops linear 3 → 5");
        // AdaptiveAvgPool 7 → 3: windows [0, 3), [2, 5), [4, 7) (overlapping) average the ramp to 1, 3, 5.
        double[] pooled = [1, 3, 5];
        AssertEqual(Values(F.adaptive_avg_pool2d(torch.tensor(ramp, [1, 1, 1, 7], ScalarType.Float64), [1, 3])), pooled, "torch adaptive pool 7 → 3");
        AssertEqual(VisionLoops.AdaptivePool(ramp, 1, 1, 7, 1, 3), pooled, "loops adaptive pool 7 → 3");
    }

    [TestCaseSource(nameof(AgentRunCases))]
    public void Agent_pvt_reference_equals_the_loops(int index, int height, int width)
    {
        var c = AgentCases[index];
        var parameters = VisionTorchReference.Parameters(c);
        var w = VisionTorchReference.Draw(parameters, seed: 31 + index);
        var x = TestData.Normal(5 + index, Batch * height * width * c.DModel);
        using var scope = torch.NewDisposeScope();
        var y = VisionTorchReference.AgentPvt(c, VisionTorchReference.Leaves(parameters, w, false), Input(x, height, width, c.DModel), height, width);
        Compare(Values(y), VisionLoops.AgentPvt(c, w, x, Batch, height, width), $"agent-pvt {c} on {height}×{width}");
    }

    [Test]
    public void Agent_pvt_reference_on_another_agent_grid_equals_the_loops()
    {
        // The downstream code's downstream_agent_shape: the agents pooled to 3×2 (not the 2×2 of n = 4), every bias's agent axes
        // bilinear from 2×2 to 3×2; on a 7×5 grid against the biases' 6×6.
        var c = new AgentPvtConfig(16, 2, 4, 6, 6, QkvBias: true, PoolH: 3, PoolW: 2);
        var parameters = VisionTorchReference.Parameters(c);
        var w = VisionTorchReference.Draw(parameters, seed: 41);
        var x = TestData.Normal(43, Batch * 35 * c.DModel);
        using var scope = torch.NewDisposeScope();
        var y = VisionTorchReference.AgentPvt(c, VisionTorchReference.Leaves(parameters, w, false), Input(x, 7, 5, c.DModel), 7, 5);
        Compare(Values(y), VisionLoops.AgentPvt(c, w, x, Batch, 7, 5), "agent-pvt, agents pooled to 3×2, on 7×5");
    }

    [TestCaseSource(nameof(FlattenRunCases))]
    public void Flatten_pvt_reference_equals_the_loops(int index, int height, int width)
    {
        var c = FlattenCases[index];
        var parameters = VisionTorchReference.Parameters(c);
        var w = VisionTorchReference.Draw(parameters, seed: 51 + index);
        var x = TestData.Normal(7 + index, Batch * height * width * c.DModel);
        using var scope = torch.NewDisposeScope();
        var y = VisionTorchReference.FlattenPvt(c, VisionTorchReference.Leaves(parameters, w, false), Input(x, height, width, c.DModel), height, width);
        Compare(Values(y), VisionLoops.FlattenPvt(c, w, x, Batch, height, width), $"flatten-pvt {c} on {height}×{width}");
    }

    [Test]
    public void Agent_pvt_on_a_one_row_grid_with_zero_biases_is_the_1d_formula()
    {
        // A 1×T grid pools q to √n×√n agents whose √n rows are copies of the 1-D pool over T to √n agents. With zero biases the
        // copies share scores, so the second softmax splits each 1-D weight evenly among them and O is the 1-D O; the 3×3
        // depthwise filter meets only its middle row. So y equals variants.md §5 with n = √n agents and zero bias_ak/bias_qa.
        const int tokens = 8, side = 3;
        var c = new AgentPvtConfig(16, 4, side * side, 1, tokens, QkvBias: true);
        var parameters = VisionTorchReference.Parameters(c);
        var w = VisionTorchReference.Draw(parameters, seed: 61);
        foreach (var name in new[] { "an_bias", "na_bias", "ah_bias", "aw_bias", "ha_bias", "wa_bias" })
        {
            w[name] = new double[w[name].Length];
        }
        var x = TestData.Normal(62, Batch * tokens * c.DModel);
        var oneD = new AgentConfig { DModel = 16, Heads = 4, Agents = side, SeqLen = tokens, DwcKernel = 3 };
        var w1 = Projections(w, c.DModel);
        w1["bias_ak"] = new double[c.Heads * side * tokens];
        w1["bias_qa"] = new double[c.Heads * tokens * side];
        w1["dwc_w"] = MiddleRow(w["dwc.weight"], c.DModel, 3);
        w1["dwc_b"] = w["dwc.bias"];
        using var scope = torch.NewDisposeScope();
        var y = VisionTorchReference.AgentPvt(c, VisionTorchReference.Leaves(parameters, w, false), Input(x, 1, tokens, c.DModel), 1, tokens);
        Compare(Values(y), AgentFormula.Forward(oneD, w1, x, Batch), "agent-pvt 1×8 (zero biases)", "variants.md §5 formula");
    }

    [Test]
    public void Flatten_pvt_on_a_one_row_grid_is_the_1d_formula()
    {
        // A 1×T grid without reduction: FLatten has no pooling, the positional encoding is §6's pos_enc and the k×k filters
        // meet only their middle row, so every parameter (none zero) maps onto variants.md §6.
        const int tokens = 8, kernel = 5;
        var c = new FlattenPvtConfig(16, 4, 1, tokens, QkvBias: true, DwcKernel: kernel);
        var parameters = VisionTorchReference.Parameters(c);
        var w = VisionTorchReference.Draw(parameters, seed: 71);
        var x = TestData.Normal(72, Batch * tokens * c.DModel);
        var oneD = new FlattenConfig { DModel = 16, Heads = 4, SeqLen = tokens, FocusingFactor = 3, DwcKernel = kernel };
        var w1 = Projections(w, c.DModel);
        w1["pos_enc"] = w["positional_encoding"];
        w1["scale"] = w["scale"];
        w1["dwc_w"] = MiddleRow(w["dwc.weight"], c.HeadDim, kernel);
        w1["dwc_b"] = w["dwc.bias"];
        using var scope = torch.NewDisposeScope();
        var y = VisionTorchReference.FlattenPvt(c, VisionTorchReference.Leaves(parameters, w, false), Input(x, 1, tokens, c.DModel), 1, tokens);
        Compare(Values(y), FlattenFormula.Forward(oneD, w1, x, Batch), "flatten-pvt 1×8", "variants.md §6 formula");
    }

    [Test]
    public void Float64_conv2d_gradients_agree_with_finite_differences()
    {
        // TorchKit.Conv1d: libtorch's float32 conv1d input gradient is wrong for padded kernels on this project's machines. The
        // reference convolves in float64; its two convolutions' gradients (padded depthwise 3×3 and 5×5, strided 2×2) are checked.
        foreach (var (channels, kernel, stride, groups) in new[] { (3, 3, 1, 3), (2, 5, 1, 2), (3, 2, 2, 1) })
        {
            long pad = stride == 1 ? kernel / 2 : 0;
            long[] xShape = [2, channels, 6, 4], wShape = [channels, channels / groups, kernel, kernel];
            var values = new[]
            {
                TestData.Normal(81, Count(xShape)), TestData.Normal(82, Count(wShape)), TestData.Normal(83, channels),
            };
            Tensor Run(double[][] v, bool grad, out Tensor[] leaves)
            {
                leaves = [torch.tensor(v[0], xShape, ScalarType.Float64, requires_grad: grad), torch.tensor(v[1], wShape, ScalarType.Float64, requires_grad: grad),
                    torch.tensor(v[2], [channels], ScalarType.Float64, requires_grad: grad)];
                return F.conv2d(leaves[0], leaves[1], leaves[2], strides: [stride, stride], padding: [pad, pad], groups: groups);
            }
            using var scope = torch.NewDisposeScope();
            var y = Run(values, true, out var leaves);
            var dy = TestData.Normal(84, y.numel());
            (y * torch.tensor(dy, y.shape, ScalarType.Float64)).sum().backward();
            var analytic = leaves.Select(l => Values(l.grad!)).ToArray();
            double error = GradientCheck.MaxError(values, v =>
            {
                using var inner = torch.NewDisposeScope();
                return Values(Run(v, false, out _));
            }, dy, analytic);
            GradientCheck.AssertClose($"float64 conv2d C {channels} k {kernel} stride {stride} groups {groups}", error);
        }
    }

    [Test]
    public void Agent_pvt_reference_gradients_agree_with_finite_differences()
    {
        // A reduced grid other than the biases' (every path: sr, norm, interpolated biases, pooled agents, v bilinear), and
        // agents pooled to another grid.
        CheckGradients(new AgentPvtConfig(8, 2, 4, 8, 8, SrRatio: 2, QkvBias: true), 6, 10);
        CheckGradients(new AgentPvtConfig(8, 2, 4, 4, 4, QkvBias: true, PoolH: 3, PoolW: 3), 5, 4);
    }

    [Test]
    public void Flatten_pvt_reference_gradients_agree_with_finite_differences()
    {
        CheckGradients(new FlattenPvtConfig(8, 2, 8, 8, SrRatio: 2, QkvBias: true, DwcKernel: 3), 6, 10);
        CheckGradients(new FlattenPvtConfig(8, 2, 4, 4, QkvBias: true, FocusingFactor: 2.5), 5, 3);
    }

    private static void CheckGradients(object config, int height, int width)
    {
        var (parameters, dm, run) = config switch
        {
            AgentPvtConfig c => (VisionTorchReference.Parameters(c), c.DModel,
                (Func<IReadOnlyDictionary<string, Tensor>, Tensor, Tensor>)((w, x) => VisionTorchReference.AgentPvt(c, w, x, height, width))),
            FlattenPvtConfig c => (VisionTorchReference.Parameters(c), c.DModel,
                (Func<IReadOnlyDictionary<string, Tensor>, Tensor, Tensor>)((w, x) => VisionTorchReference.FlattenPvt(c, w, x, height, width))),
            _ => throw new ArgumentException("not a PVT config", nameof(config)),
        };
        CheckReferenceGradients(parameters, [Batch, height * width, dm], run, $"{config} on {height}×{width}", seed: 91);
    }

    /// <summary>
    /// A torch reference's autograd gradients (x and every parameter) against central finite differences, a dozen probes per
    /// input: parameters drawn with <paramref name="seed"/>, x and dy with the next two seeds.
    /// </summary>
    internal static void CheckReferenceGradients(IReadOnlyList<(string Name, long[] Shape)> parameters, long[] xShape,
        Func<IReadOnlyDictionary<string, Tensor>, Tensor, Tensor> run, string label, int seed)
    {
        var drawn = VisionTorchReference.Draw(parameters, seed: seed);
        var names = parameters.Select(p => p.Name).ToArray();
        var inputs = new[] { TestData.Normal(seed + 1, Count(xShape)) }.Concat(names.Select(n => drawn[n])).ToArray();
        var dy = TestData.Normal(seed + 2, inputs[0].Length);
        Tensor Forward(double[][] v, bool grad, out Tensor[] leaves)
        {
            var w = VisionTorchReference.Leaves(parameters, names.Select((n, i) => (n, v[i + 1])).ToDictionary(p => p.n, p => p.Item2), grad);
            var x = torch.tensor(v[0], xShape, ScalarType.Float64, requires_grad: grad);
            leaves = [x, .. names.Select(n => w[n])];
            return run(w, x);
        }
        using var scope = torch.NewDisposeScope();
        var y = Forward(inputs, true, out var leaves);
        (y * torch.tensor(dy, y.shape, ScalarType.Float64)).sum().backward();
        var analytic = leaves.Select(l => Values(l.grad!)).ToArray();
        // A dozen probes of x and of every parameter: two forwards each, about a millisecond apiece at these sizes.
        double error = GradientCheck.MaxError(inputs, v =>
        {
            using var inner = torch.NewDisposeScope();
            return Values(Forward(v, false, out _));
        }, dy, analytic, maxProbesPerInput: 12);
        GradientCheck.AssertClose($"{label}: x and {string.Join(", ", names)}", error);
    }

    // The 1-D forms' projections from the PVT names: kv.weight's rows are k then v.
    private static Dictionary<string, double[]> Projections(Dictionary<string, double[]> w, int dm) => new(StringComparer.Ordinal)
    {
        ["w_q"] = w["q.weight"], ["b_q"] = w["q.bias"],
        ["w_k"] = w["kv.weight"][..(dm * dm)], ["b_k"] = w["kv.bias"][..dm],
        ["w_v"] = w["kv.weight"][(dm * dm)..], ["b_v"] = w["kv.bias"][dm..],
        ["w_o"] = w["proj.weight"], ["b_o"] = w["proj.bias"],
    };

    // [filters, 1, k, k] → [filters, 1, k]: the kernel row that meets a one-row image.
    private static double[] MiddleRow(double[] weight, int filters, int k)
    {
        var row = new double[filters * k];
        for (int f = 0; f < filters; f++)
        {
            Array.Copy(weight, (((f * k) + (k / 2)) * k), row, f * k, k);
        }
        return row;
    }

    private static Tensor Input(double[] x, int height, int width, int dm) =>
        torch.tensor(x, [Batch, height * width, dm], ScalarType.Float64);

    private static long Count(long[] shape) => shape.Aggregate(1L, (a, e) => a * e);

    private static double[] Values(Tensor t) => t.detach().contiguous().data<double>().ToArray();

    private static void AssertEqual(double[] actual, double[] expected, string what)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length), what);
        double error = actual.Zip(expected, (a, e) => Math.Abs(a - e)).Max();
        TestContext.Out.WriteLine($"{what}: max error {error:E2}");
        // Values up to 7 from two or three products: a few ulps.
        Assert.That(error, Is.LessThanOrEqualTo(1e-14), what);
    }

    private static void Compare(double[] reference, double[] loops, string what, string against = "loops")
    {
        Assert.That(reference, Has.Length.EqualTo(loops.Length), what);
        double error = reference.Zip(loops, (a, e) => Math.Abs(a - e)).Max() / (1 + loops.Max(Math.Abs));
        TestContext.Out.WriteLine($"{what}: max |torch − {against}| / (1 + max|{against}|) = {error:E2}");
        Assert.That(error, Is.LessThanOrEqualTo(Tolerance), what);
    }
}

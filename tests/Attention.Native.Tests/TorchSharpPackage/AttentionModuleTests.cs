using Attention.Native.Tests.Support;
using Attention.Native.Tests.TorchReference;
using Attention.Native.Tests.Variants;
using Attention.Native.Torch;
using Attention.Native.Variants;
using TorchSharp;

namespace Attention.Native.Tests.TorchSharpPackage;

using static TorchSharp.torch;
using TorchTensor = TorchSharp.torch.Tensor;

/// <summary>
/// <see cref="AttentionModule"/>: every variant as a TorchSharp module. Its state_dict carries the layout's official names
/// and loads an official checkpoint as it is (output = the official module's, <see cref="OfficialModules"/>); its forward
/// and backward (torch autograd into TorchSharp parameters) equal the Attention.Native layer's; the layer computes on the
/// parameters' own memory, so an optimizer step is seen without a copy; and under the spec layout the torch composition of
/// variants.md (the independent reference) run on the module's own parameters gives the same y and gradients.
/// </summary>
public class AttentionModuleTests : TorchReferenceFixture
{
    private const int Batch = 2, Tokens = 6;

    /// <summary>One config per variant (small; every learnable parameter used).</summary>
    private static IEnumerable<TestCaseData> Variants()
    {
        yield return Case(new GqaConfig { Kind = "gqa", DModel = 16, Heads = 4, KvHeads = 2, HeadDim = 4, Causal = true, Rope = true });
        yield return Case(new GqaConfig { Kind = "mha", DModel = 16, Heads = 2, KvHeads = 2, HeadDim = 8, Causal = false, Rope = false });
        yield return Case(new GqaConfig { Kind = "mqa", DModel = 16, Heads = 4, KvHeads = 1, HeadDim = 4, Causal = true, Rope = true });
        yield return Case(new MlaConfig { DModel = 16, Heads = 3, QLoraRank = 8, KvLoraRank = 10, QkNopeHeadDim = 6, QkRopeHeadDim = 4, VHeadDim = 5, Causal = true });
        yield return Case(new TpaConfig { DModel = 16, Heads = 3, HeadDim = 8, QRank = 4, KRank = 2, VRank = 3, Causal = true });
        yield return Case(new SasConfig { DModel = 16, Heads = 2, HeadDim = 6, SimHeads = 6, SimHeadDim = 8, KernelSize = 3, Causal = true, Rope = true });
        yield return Case(new AgentConfig { DModel = 16, Heads = 4, Agents = 4, SeqLen = Tokens, DwcKernel = 3 });
        yield return Case(new FlattenConfig { DModel = 16, Heads = 4, SeqLen = Tokens, FocusingFactor = 3, DwcKernel = 3 });
        yield return Case(new TransNormerConfig { DModel = 16, Heads = 2, HeadDim = 6, LayerIndex = 1, NumLayers = 4, Lrpe = true });
        yield return Case(new MfaConfig { DModel = 16, Heads = 5, HeadDim = 8, QLoraDim = 6, Causal = true, Rope = true });
    }

    private static TestCaseData Case(LayerConfig config) => new TestCaseData(config).SetArgDisplayNames(config.Variant);

    private static IEnumerable<string> LayoutNames() => LayoutCase.All().Select(c => c.Name);

    [TestCaseSource(nameof(Variants))]
    public void Forward_and_backward_equal_the_layer(LayerConfig config)
    {
        using var scope = torch.NewDisposeScope();
        using var module = new AttentionModule(config, dtype: ScalarType.Float64, seed: 7);
        using var layer = AttentionLayer.Create(config, Backend.Cpu, DType.F64);
        layer.InitializeParameters(7);
        var names = module.state_dict().Keys.Order(StringComparer.Ordinal).ToList();
        Assert.That(names, Is.EqualTo(layer.ParameterSpecs.Select(s => s.Name).Order(StringComparer.Ordinal)), "spec layout: the variants.md names");

        int dm = config.DModel;
        double[] x = TestData.Normal(3, Batch * Tokens * dm), dy = TestData.Normal(4, x.Length);
        var xt = torch.tensor(x, [Batch, Tokens, dm], ScalarType.Float64, requires_grad: true);
        var y = module.call(xt);
        (y * torch.tensor(dy, [Batch, Tokens, dm], ScalarType.Float64)).sum().backward();

        using var tx = Backend.Cpu.FromArray(x, new Shape(Batch, Tokens, dm), DType.F64);
        using var pass = layer.ForwardForTraining(tx);
        using var tdy = Backend.Cpu.FromArray(dy, tx.Shape, DType.F64);
        using var grads = pass.Backward(tdy);
        Near(Values(y), pass.Output.ToDoubleArray(), 0, $"{config.Variant} y");
        Near(Values(xt.grad!), grads.Input.ToDoubleArray(), 0, $"{config.Variant} dx");
        var parameters = module.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var spec in layer.ParameterSpecs)
        {
            if (spec.Learnable)
            {
                Near(Values(parameters[spec.Name].grad!), grads.Parameters[spec.Name].ToDoubleArray(), 0, $"{config.Variant} d{spec.Name}");
            }
            else
            {
                Assert.That(parameters.ContainsKey(spec.Name), Is.False, $"{spec.Name}: not learnable, so a buffer rather than a parameter");
            }
        }
    }

    [TestCaseSource(nameof(LayoutNames))]
    public void Official_checkpoint_loads_by_its_names_and_gives_the_official_output(string name)
    {
        var c = LayoutCase.All().Single(l => l.Name == name);
        using var scope = torch.NewDisposeScope();
        using var module = new AttentionModule(c.Config(), c.Layout, ScalarType.Float64);
        var official = LayoutCase.Draw(c.Layout, module.Layer);
        var specs = c.Layout.OfficialSpecs(module.Layer);
        Assert.That(module.state_dict().Keys.Order(StringComparer.Ordinal), Is.EqualTo(specs.Select(s => s.Name).Order(StringComparer.Ordinal)), $"{name}: state_dict names");
        var checkpoint = specs.ToDictionary(s => s.Name, s => torch.tensor(official[s.Name], Dims(s.Shape), ScalarType.Float64));
        var (missing, unexpected) = module.load_state_dict(checkpoint);
        Assert.That(missing.Concat(unexpected), Is.Empty, $"{name}: every official tensor loads by name");

        int dm = module.Config.DModel;
        var x = TestData.Normal(41, LayoutCase.Batch * LayoutCase.Tokens * dm);
        using var noGrad = torch.no_grad();
        var y = module.call(torch.tensor(x, [LayoutCase.Batch, LayoutCase.Tokens, dm], ScalarType.Float64));
        FormulaKit.AssertMatches(Values(y), c.Official(official, x, LayoutCase.Batch, LayoutCase.Tokens), $"{name}: the official module's output");
    }

    [TestCaseSource(nameof(LayoutNames))]
    public void Gradients_arrive_under_the_official_names(string name)
    {
        var c = LayoutCase.All().Single(l => l.Name == name);
        using var scope = torch.NewDisposeScope();
        using var module = new AttentionModule(c.Config(), c.Layout, ScalarType.Float64, seed: 3);
        using var layer = AttentionLayer.Create(c.Config(), Backend.Cpu, DType.F64);
        layer.InitializeParameters(3);
        int dm = module.Config.DModel;
        double[] x = TestData.Normal(43, Batch * Tokens * dm), dy = TestData.Normal(47, x.Length);
        var y = module.call(torch.tensor(x, [Batch, Tokens, dm], ScalarType.Float64));
        (y * torch.tensor(dy, [Batch, Tokens, dm], ScalarType.Float64)).sum().backward();

        using var tx = Backend.Cpu.FromArray(x, new Shape(Batch, Tokens, dm), DType.F64);
        using var pass = layer.ForwardForTraining(tx);
        using var tdy = Backend.Cpu.FromArray(dy, tx.Shape, DType.F64);
        using var grads = pass.Backward(tdy);
        var expected = c.Layout.ExportGradients(layer, grads.Parameters);
        var parameters = module.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        Assert.That(parameters.Keys.Order(StringComparer.Ordinal), Is.EqualTo(expected.Keys.Order(StringComparer.Ordinal)), $"{name}: the learnable official tensors are the parameters");
        foreach (var (official, gradient) in expected)
        {
            Near(Values(parameters[official].grad!), gradient.ToDoubleArray(), 0, $"{name} d{official}");
            gradient.Dispose();
        }
    }

    [Test]
    public void An_optimizer_step_is_seen_by_the_next_call_without_a_copy()
    {
        var config = new GqaConfig { Kind = "gqa", DModel = 16, Heads = 4, KvHeads = 2, HeadDim = 4, Causal = true, Rope = true };
        using var scope = torch.NewDisposeScope();
        using var module = new AttentionModule(config, CheckpointLayout.Llama, ScalarType.Float32, seed: 5);
        var optimizer = torch.optim.SGD(module.parameters(), 0.5);
        var x = torch.tensor(TestData.Normal(8, Batch * Tokens * 16).Select(v => (float)v).ToArray(), [Batch, Tokens, 16L]);
        module.call(x).pow(2).sum().backward();
        var before = module.Layer.Parameters["w_q"].ToDoubleArray();
        optimizer.step();
        // The layer's w_q is a view of q_proj.weight: the step's new values are there, with nothing copied in between.
        var after = module.Layer.Parameters["w_q"].ToDoubleArray();
        Assert.That(after, Is.EqualTo(Values(module.state_dict()["q_proj.weight"])), "the layer reads the parameter's memory");
        Assert.That(after, Is.Not.EqualTo(before), "the step changed w_q");

        // The next call computes with the stepped parameters: the same as a fresh layer loaded with them.
        using var layer = AttentionLayer.Create(config, Backend.Cpu, DType.F32);
        layer.LoadParameters(module.state_dict().ToDictionary(p => p.Key, p => (Attention.Native.Tensor)Backend.Cpu.FromArray(Values(p.Value), Shape(p.Value), DType.F32)), CheckpointLayout.Llama);
        using var noGrad = torch.no_grad();
        using var tx = Backend.Cpu.FromArray(Values(x), new Shape(Batch, Tokens, 16), DType.F32);
        using var expected = layer.Forward(tx);
        Near(Values(module.call(x)), expected.ToDoubleArray(), 0, "forward after the step");
    }

    [Test]
    public void A_replaced_parameter_is_bound_again_on_the_next_call()
    {
        var config = new GqaConfig { Kind = "gqa", DModel = 16, Heads = 4, KvHeads = 2, HeadDim = 4, Causal = false, Rope = false };
        using var scope = torch.NewDisposeScope();
        using var module = new AttentionModule(config, dtype: ScalarType.Float64, seed: 5);
        var x = torch.tensor(TestData.Normal(9, Batch * Tokens * 16), [Batch, Tokens, 16L], ScalarType.Float64);
        using var noGrad = torch.no_grad();
        var y0 = Values(module.call(x));
        // The parameter's storage swapped for new memory (set_), as a user pointing a weight at other storage would.
        var replaced = torch.tensor(TestData.Normal(10, 16 * 16), [16L, 16L], ScalarType.Float64);
        var wO = module.named_parameters().Single(p => p.name == "w_o").parameter;
        wO.set_(replaced);
        var y1 = Values(module.call(x));
        Assert.That(module.Layer.Parameters["w_o"].ToDoubleArray(), Is.EqualTo(Values(replaced)), "w_o is the new tensor's memory");
        Assert.That(y1, Is.Not.EqualTo(y0), "the output changed with w_o");
    }

    [Test]
    public void Spec_layout_module_equals_the_torch_composition_on_its_own_parameters()
    {
        // variants.md §1 in torch ops (TorchReference.GqaTorchTests), run on the module's TorchSharp parameters themselves.
        var config = new GqaConfig { Kind = "gqa", DModel = 16, Heads = 4, KvHeads = 2, HeadDim = 8, Causal = true, Rope = true, RopeBase = 500 };
        using var scope = torch.NewDisposeScope();
        using var module = new AttentionModule(config, dtype: ScalarType.Float64, seed: 21);
        double[] x = TestData.Normal(22, Batch * Tokens * 16), dy = TestData.Normal(23, x.Length);
        var xa = torch.tensor(x, [Batch, Tokens, 16L], ScalarType.Float64, requires_grad: true);
        var xb = torch.tensor(x, [Batch, Tokens, 16L], ScalarType.Float64, requires_grad: true);
        var upstream = torch.tensor(dy, [Batch, Tokens, 16L], ScalarType.Float64);
        var ours = module.call(xa);
        (ours * upstream).sum().backward();
        var oursGrads = module.named_parameters().ToDictionary(p => p.name, p => Values(p.parameter.grad!));
        module.zero_grad();
        var parameters = module.named_parameters().ToDictionary(p => p.name, p => (TorchTensor)p.parameter);
        var reference = GqaTorchTests.Composition(config, sdpa: true)(xb, parameters);
        (reference * upstream).sum().backward();
        Near(Values(ours), Values(reference), 1e-12, "y");
        Near(Values(xa.grad!), Values(xb.grad!), 1e-12, "dx");
        foreach (var (name, p) in module.named_parameters())
        {
            Near(oursGrads[name], Values(p.grad!), 1e-12, $"d{name}");
        }
    }

    [Test]
    public void Bad_arguments_name_what_was_expected()
    {
        var gqa = new GqaConfig { Kind = "gqa", DModel = 16, Heads = 4, KvHeads = 2, HeadDim = 4, Causal = true };
        var e = Assert.Throws<ArgumentException>(() => new AttentionModule(gqa, CheckpointLayout.DeepSeek).Dispose())!;
        Assert.That(e.Message, Does.Contain("deepseek").And.Contain("gqa"));
        e = Assert.Throws<ArgumentException>(() => new AttentionModule(gqa, dtype: ScalarType.Int32).Dispose())!;
        Assert.That(e.Message, Does.Contain("float32").And.Contain("Int32"));
        using var module = new AttentionModule(gqa);
        e = Assert.Throws<ArgumentException>(() => module.call(torch.zeros(2, 3, 8)))!;
        Assert.That(e.Message, Does.Contain("[B, T, 16]").And.Contain("[2, 3, 8]"));
    }

    /// <summary>max|actual − expected| ≤ <paramref name="tolerance"/> · (1 + max|expected|); 0 asks for the same bits.</summary>
    internal static void Near(double[] actual, double[] expected, double tolerance, string what)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length), $"{what}: element count");
        double error = 0, size = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double e = Math.Abs(actual[i] - expected[i]);
            error = Math.Max(error, double.IsNaN(e) ? double.PositiveInfinity : e);
            size = Math.Max(size, Math.Abs(expected[i]));
        }
        TestContext.Out.WriteLine($"{what}: max|actual − expected| = {error:E2} (max|expected| {size:E2})");
        Assert.That(error, Is.LessThanOrEqualTo(tolerance * (1 + size)), what);
    }

    internal static double[] Values(TorchTensor t) => t.detach().to_type(ScalarType.Float64).contiguous().data<double>().ToArray();

    private static long[] Dims(Shape shape) => [.. Enumerable.Range(0, shape.Rank).Select(i => (long)shape[i])];

    private static Shape Shape(TorchTensor t) => new([.. t.shape.Select(s => (int)s)]);
}

/// <summary>
/// The 2-D forms as TorchSharp modules: the official vision module's state_dict (nested names such as <c>kv.weight</c>) loads
/// as it is, and the module's y and gradients through torch autograd equal the official module's (the float64 references of
/// <see cref="Variants.Vision.VisionTorchReference"/>), on the built grid and, through <c>[B, H, W, C]</c>, on another.
/// </summary>
public class VisionAttentionModuleTests : TorchReferenceFixture
{
    [TestCase(false)]
    [TestCase(true)]
    public void Agent_pvt_module_loads_the_official_state_dict_and_gives_the_official_output_and_gradients(bool otherGrid)
    {
        var rc = new Variants.Vision.AgentPvtConfig(16, 2, 4, 6, 6, SrRatio: 2, QkvBias: true);
        var config = new AgentVisionConfig { DModel = 16, Heads = 2, Agents = 4, GridHeight = 6, GridWidth = 6, SrRatio = 2, QkvBias = true };
        var official = Variants.Vision.VisionTorchReference.Parameters(rc);
        var w = Variants.Vision.VisionTorchReference.Draw(official, seed: 141);
        int h = otherGrid ? 4 : 6, wd = otherGrid ? 8 : 6;
        var x = TestData.Normal(142, 2 * h * wd * 16);
        var dy = TestData.Normal(143, x.Length);
        using var scope = torch.NewDisposeScope();
        var leaves = Variants.Vision.VisionTorchReference.Leaves(official, w, requiresGrad: true);
        var xr = torch.tensor(x, [2, h * wd, 16], ScalarType.Float64, requires_grad: true);
        var yr = Variants.Vision.VisionTorchReference.AgentPvt(rc, leaves, xr, h, wd);
        (yr * torch.tensor(dy, [2, h * wd, 16], ScalarType.Float64)).sum().backward();

        using var module = new AttentionModule(config, CheckpointLayout.AgentPvt, ScalarType.Float64);
        module.load_state_dict(leaves.ToDictionary(p => p.Key, p => p.Value.detach()));
        long[] shape = otherGrid ? [2, h, wd, 16] : [2, h * wd, 16];
        var xm = torch.tensor(x, shape, ScalarType.Float64, requires_grad: true);
        var ym = module.call(xm);
        (ym * torch.tensor(dy, shape, ScalarType.Float64)).sum().backward();
        Close(Values(ym), Values(yr), "y");
        Close(Values(xm.grad!), Values(xr.grad!), "dx");
        foreach (var (name, p) in module.named_parameters())
        {
            Close(Values(p.grad!), Values(leaves[name].grad!), $"d{name}");
        }
    }

    private static double[] Values(TorchTensor t) => t.detach().contiguous().data<double>().ToArray();

    // F64 on both sides: 1e-10 relative to the reference's size, as TorchKit holds the 1-D forms.
    private static void Close(double[] ours, double[] reference, string what)
    {
        Assert.That(ours, Has.Length.EqualTo(reference.Length), what);
        double error = ours.Zip(reference, (a, b) => Math.Abs(a - b)).Max() / Math.Max(1e-300, reference.Max(Math.Abs));
        TestContext.Out.WriteLine($"{what}: {error:E2}");
        Assert.That(error, Is.LessThanOrEqualTo(1e-10), what);
    }
}

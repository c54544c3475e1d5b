using Attention.Native.Tests.Support;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>
/// Checkpoint layouts (<see cref="CheckpointLayout"/>): a checkpoint under each official module's names, with its official
/// config, loads as it is and gives the official module's outputs (<see cref="OfficialModules"/>, F64) and gradients (exported
/// under the official names, against directional derivatives of the official module); the same weights through <c>spec</c>
/// with the documented transform give identical outputs; export round-trips bit for bit; bad checkpoints get one error
/// listing every problem.
/// </summary>
public class CheckpointLayoutTests
{
    private static IEnumerable<string> Cases() => LayoutCases().Select(c => c.Name);

    private static IEnumerable<LayoutCase> LayoutCases() => Attention.Native.Tests.Variants.LayoutCase.All();

    [TestCaseSource(nameof(Cases))]
    public void Official_checkpoint_gives_the_official_modules_output_and_decode(string name)
    {
        var c = LayoutCases().Single(l => l.Name == name);
        using var layer = AttentionLayer.Create(c.Config(), Backend.Cpu, DType.F64);
        var official = LayoutCase.Draw(c.Layout, layer);
        LoadOfficial(layer, c.Layout, official);
        var x = TestData.Normal(41, LayoutCase.Batch * LayoutCase.Tokens * layer.Config.DModel);
        var expected = c.Official(official, x, LayoutCase.Batch, LayoutCase.Tokens);
        FormulaKit.AssertMatches(FormulaKit.Forward(layer, x, LayoutCase.Batch, LayoutCase.Tokens), expected, $"{c.Name}: forward");
        if (layer is CausalAttentionLayer { IsCausal: true } causal)
        {
            FormulaKit.AssertMatches(FormulaKit.Decode(causal, x, LayoutCase.Batch, LayoutCase.Tokens, prompt: 3), expected, $"{c.Name}: prefill 3, then decode");
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void Gradients_under_official_names_are_the_official_modules(string name)
    {
        var c = LayoutCases().Single(l => l.Name == name);
        using var layer = AttentionLayer.Create(c.Config(), Backend.Cpu, DType.F64);
        var official = LayoutCase.Draw(c.Layout, layer);
        LoadOfficial(layer, c.Layout, official);
        int dm = layer.Config.DModel;
        var x = TestData.Normal(43, LayoutCase.Batch * LayoutCase.Tokens * dm);
        var dy = TestData.Normal(47, x.Length);
        using var tx = Backend.Cpu.FromArray(x, new Shape(LayoutCase.Batch, LayoutCase.Tokens, dm), DType.F64);
        using var tdy = Backend.Cpu.FromArray(dy, tx.Shape, DType.F64);
        using var pass = layer.ForwardForTraining(tx);
        using var grads = pass.Backward(tdy);
        var exported = c.Layout.ExportGradients(layer, grads.Parameters);
        try
        {
            var learnable = c.Layout.OfficialSpecs(layer).Where(s => s.Learnable).Select(s => s.Name).Order(StringComparer.Ordinal);
            Assert.That(exported.Keys.Order(StringComparer.Ordinal), Is.EqualTo(learnable), "one gradient per learnable official tensor");
            double Loss(IReadOnlyDictionary<string, double[]> w, double[] input) =>
                c.Official(w, input, LayoutCase.Batch, LayoutCase.Tokens).Zip(dy, (a, b) => a * b).Sum();
            int seed = 100;
            foreach (var (tensor, gradient) in exported)
            {
                var direction = TestData.Normal(seed++, official[tensor].Length);
                double derivative = Directional(h =>
                {
                    var w = new Dictionary<string, double[]>(official, StringComparer.Ordinal) { [tensor] = official[tensor].Zip(direction, (a, d) => a + (h * d)).ToArray() };
                    return Loss(w, x);
                });
                double analytic = gradient.ToDoubleArray().Zip(direction, (g, d) => g * d).Sum();
                TestContext.Out.WriteLine($"{c.Name}: {tensor}: |analytic − directional| / (1 + |directional|) = {Math.Abs(analytic - derivative) / (1 + Math.Abs(derivative)):E2}");
                Assert.That(analytic, Is.EqualTo(derivative).Within(1e-6 * (1 + Math.Abs(derivative))), $"{c.Name}: d loss along a random direction of {tensor}");
            }
            var dxDirection = TestData.Normal(seed, x.Length);
            double dxDerivative = Directional(h => Loss(official, x.Zip(dxDirection, (a, d) => a + (h * d)).ToArray()));
            double dxAnalytic = grads.Input.ToDoubleArray().Zip(dxDirection, (g, d) => g * d).Sum();
            TestContext.Out.WriteLine($"{c.Name}: x: |analytic − directional| / (1 + |directional|) = {Math.Abs(dxAnalytic - dxDerivative) / (1 + Math.Abs(dxDerivative)):E2}");
            Assert.That(dxAnalytic, Is.EqualTo(dxDerivative).Within(1e-6 * (1 + Math.Abs(dxDerivative))), $"{c.Name}: d loss along a random direction of x");
        }
        finally
        {
            foreach (var t in exported.Values)
            {
                t.Dispose();
            }
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void Spec_names_with_the_documented_transform_give_identical_outputs(string name)
    {
        var c = LayoutCases().Single(l => l.Name == name);
        var config = c.Config();
        using var viaLayout = AttentionLayer.Create(config, Backend.Cpu, DType.F32);
        using var viaSpec = AttentionLayer.Create(config, Backend.Cpu, DType.F32);
        var official = LayoutCase.Draw(c.Layout, viaLayout);
        LoadOfficial(viaLayout, c.Layout, official, DType.F32);
        var spec = c.ToSpec(config, official);
        var specTensors = viaSpec.ParameterSpecs.ToDictionary(s => s.Name, s => Backend.Cpu.FromArray(spec[s.Name], s.Shape, DType.F32), StringComparer.Ordinal);
        try
        {
            viaSpec.LoadParameters(specTensors);
        }
        finally
        {
            foreach (var t in specTensors.Values)
            {
                t.Dispose();
            }
        }
        using var x = Backend.Cpu.FromArray(TestData.NormalSingle(53, LayoutCase.Batch * LayoutCase.Tokens * config.DModel), new Shape(LayoutCase.Batch, LayoutCase.Tokens, config.DModel));
        using var a = viaLayout.Forward(x);
        using var b = viaSpec.Forward(x);
        Assert.That(a.ToArray(), Is.EqualTo(b.ToArray()), $"{c.Name}: outputs of the two loads, bit for bit");
    }

    [TestCaseSource(nameof(Cases))]
    public void Export_round_trips_bit_exactly_in_every_dtype(string name)
    {
        var c = LayoutCases().Single(l => l.Name == name);
        foreach (var dtype in new[] { DType.F32, DType.BF16, DType.F16, DType.F64 })
        {
            using var layer = AttentionLayer.Create(c.Config(), Backend.Cpu, dtype);
            var official = LayoutCase.Draw(c.Layout, layer, seed: 9);
            var tensors = LayoutCase.Tensors(c.Layout, layer, official, dtype);
            try
            {
                layer.LoadParameters(tensors, c.Layout);
                var exported = c.Layout.Export(layer);
                try
                {
                    Assert.That(exported.Keys.Order(StringComparer.Ordinal), Is.EqualTo(tensors.Keys.Order(StringComparer.Ordinal)), $"{c.Name} {dtype}: names");
                    foreach (var (tensorName, tensor) in tensors)
                    {
                        Assert.That(exported[tensorName].DType, Is.EqualTo(dtype));
                        Assert.That(exported[tensorName].Shape, Is.EqualTo(tensor.Shape), $"{c.Name} {dtype}: shape of {tensorName}");
                        Assert.That(Bytes(exported[tensorName]), Is.EqualTo(Bytes(tensor)), $"{c.Name} {dtype}: bytes of {tensorName}");
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
            finally
            {
                foreach (var t in tensors.Values)
                {
                    t.Dispose();
                }
            }
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void A_bad_checkpoint_gets_one_error_listing_every_problem(string name)
    {
        var c = LayoutCases().Single(l => l.Name == name);
        using var layer = AttentionLayer.Create(c.Config(), Backend.Cpu, DType.F32);
        var specs = c.Layout.OfficialSpecs(layer);
        var tensors = LayoutCase.Tensors(c.Layout, layer, LayoutCase.Draw(c.Layout, layer), DType.F32);
        string missing = specs[0].Name, misshapen = specs[^1].Name;
        tensors.Remove(missing, out var removed);
        removed!.Dispose();
        tensors[misshapen].Dispose();
        tensors[misshapen] = Backend.Cpu.Zeros(new Shape(checked((int)specs[^1].Shape.ElementCount + 1)));
        tensors["extra.weight"] = Backend.Cpu.Zeros(new Shape(2));
        var before = layer.Parameters.ToDictionary(p => p.Key, p => p.Value.ToArray());
        try
        {
            var e = Assert.Throws<ArgumentException>(() => layer.LoadParameters(tensors, c.Layout))!;
            Assert.That(e.ParamName, Is.EqualTo("tensors"));
            Assert.That(e.Message, Does.Contain($"missing: {missing}").And.Contain("unexpected: extra.weight")
                .And.Contain($"wrong shape: {misshapen} expected {specs[^1].Shape} actual [{specs[^1].Shape.ElementCount + 1}]"), c.Name);
            foreach (var (parameter, values) in before)
            {
                Assert.That(layer.Parameters[parameter].ToArray(), Is.EqualTo(values), $"{parameter} untouched by the refused load");
            }
        }
        finally
        {
            foreach (var t in tensors.Values)
            {
                t.Dispose();
            }
        }
    }

    [Test]
    public void A_prefix_selects_the_layers_tensors_of_a_whole_model_checkpoint()
    {
        var c = LayoutCases().First(l => l.Layout == CheckpointLayout.Llama);
        using var layer = AttentionLayer.Create(c.Config(), Backend.Cpu, DType.F64);
        var official = LayoutCase.Draw(c.Layout, layer);
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (tensorName, tensor) in LayoutCase.Tensors(c.Layout, layer, official))
        {
            tensors.Add($"model.layers.3.self_attn.{tensorName}", tensor);
        }
        tensors.Add("model.layers.4.self_attn.q_proj.weight", Backend.Cpu.Zeros(new Shape(1)));
        tensors.Add("model.embed_tokens.weight", Backend.Cpu.Zeros(new Shape(3)));
        try
        {
            layer.LoadParameters(tensors, c.Layout, "model.layers.3.self_attn.");
            Assert.That(layer.Parameters["w_k"].ToDoubleArray(), Is.EqualTo(official["k_proj.weight"]));
            tensors.Add("model.layers.3.self_attn.q_norm.weight", Backend.Cpu.Zeros(new Shape(1)));
            var e = Assert.Throws<ArgumentException>(() => layer.LoadParameters(tensors, c.Layout, "model.layers.3.self_attn."))!;
            Assert.That(e.Message, Does.Contain("unexpected: model.layers.3.self_attn.q_norm.weight"));
        }
        finally
        {
            foreach (var t in tensors.Values)
            {
                t.Dispose();
            }
        }
    }

    [TestCase("llama", "mla", "llama holds mha/gqa/mqa weights, not mla")]
    [TestCase("deepseek", "gqa", "deepseek holds mla weights, not gqa")]
    [TestCase("transnormer", "tpa", "transnormer holds transnormer weights, not tpa")]
    public void A_layout_of_another_variant_is_refused(string layoutName, string variant, string expected)
    {
        var config = variant switch
        {
            "mla" => LayerConfig.Parse("mla", """{"d_model": 16, "n_heads": 2, "q_lora_rank": 0, "kv_lora_rank": 8, "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 4}"""),
            "gqa" => LayerConfig.Parse("gqa", """{"d_model": 16, "n_heads": 2, "n_kv_heads": 1, "head_dim": 4}"""),
            _ => LayerConfig.Parse("tpa", """{"d_model": 16, "n_heads": 2, "head_dim": 4, "q_rank": 2, "k_rank": 2, "v_rank": 2}"""),
        };
        using var layer = AttentionLayer.Create(config, Backend.Cpu, DType.F32);
        var e = Assert.Throws<ArgumentException>(() => layer.LoadParameters(new Dictionary<string, Tensor>(), CheckpointLayout.Get(layoutName)))!;
        Assert.That(e.Message, Does.Contain(expected));
    }

    [Test]
    public void A_config_without_the_layouts_conventions_is_refused_and_WithConventions_fixes_it()
    {
        var config = LayerConfig.Parse("mla", """{"d_model": 16, "n_heads": 2, "q_lora_rank": 0, "kv_lora_rank": 8, "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 4}""");
        using var half = AttentionLayer.Create(config, Backend.Cpu, DType.F32);
        var e = Assert.Throws<ArgumentException>(() => half.LoadParameters(new Dictionary<string, Tensor>(), CheckpointLayout.DeepSeek))!;
        Assert.That(e.Message, Does.Contain("rope_style interleaved"));
        Assert.That(((MlaConfig)CheckpointLayout.DeepSeek.WithConventions(config)).RopeStyle, Is.EqualTo(Attention.Native.Ops.RopeStyle.Interleaved));
        Assert.That(CheckpointLayout.DeepSeek.Misfits(CheckpointLayout.DeepSeek.WithConventions(config)), Is.Empty);
        var tpa = LayerConfig.Parse("tpa", """{"d_model": 16, "n_heads": 2, "head_dim": 4, "q_rank": 2, "k_rank": 2, "v_rank": 3}""");
        Assert.That(CheckpointLayout.T6.Misfits(tpa), Has.Some.Contains("k_rank = v_rank"));
        Assert.That(CheckpointLayout.Spec.Misfits(tpa), Is.Empty);
    }

    [Test]
    public void Unknown_layout_names_list_the_known_ones()
    {
        var e = Assert.Throws<ArgumentException>(() => CheckpointLayout.Get("mistral"))!;
        Assert.That(e.Message, Does.Contain("expected one of spec, llama, deepseek, t6, sas, transnormer, step3").And.Contain("actual 'mistral'"));
    }

    internal static void LoadOfficial(AttentionLayer layer, CheckpointLayout layout, IReadOnlyDictionary<string, double[]> official, DType dtype = DType.F64)
    {
        var tensors = LayoutCase.Tensors(layout, layer, official, dtype);
        try
        {
            layer.LoadParameters(tensors, layout);
        }
        finally
        {
            foreach (var t in tensors.Values)
            {
                t.Dispose();
            }
        }
    }

    // Central difference of f at 0 with step 1e-5: truncation ~1e-10·|f'''|, rounding ~1e-16·|f|/1e-5.
    private static double Directional(Func<double, double> f)
    {
        const double h = 1e-5;
        return (f(h) - f(-h)) / (2 * h);
    }

    private static byte[] Bytes(Tensor t)
    {
        var bytes = new byte[t.ByteCount];
        t.CopyToBytes(bytes);
        return bytes;
    }
}

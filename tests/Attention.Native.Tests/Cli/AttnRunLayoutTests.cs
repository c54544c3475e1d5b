using Attention.Native.IO;
using Attention.Native.Tests.Runtime;
using Attention.Native.Tests.Support;
using Attention.Native.Tests.Variants;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Cli;

/// <summary>
/// <c>attn run --layout</c>: an official checkpoint (the layer's tensors of a whole-model file, under a prefix) and the official
/// config file, as they are, give the official module's y (<see cref="OfficialModules"/>) and its gradients under the official
/// names (against the official module's directional derivative).
/// </summary>
public class AttnRunLayoutTests
{
    private const string Prefix = "model.layers.1.attn.";

    private static IEnumerable<string> Cases() => LayoutCase.All().Select(c => c.Name);

    [TestCaseSource(nameof(Cases))]
    public void Official_files_as_they_are_give_the_official_outputs_and_gradients(string name)
    {
        var c = LayoutCase.All().Single(l => l.Name == name);
        using var dir = new TempDirectory();
        using var layer = AttentionLayer.Create(c.Config(), Backend.Cpu, DType.F64);
        var official = LayoutCase.Draw(c.Layout, layer);
        int dm = layer.Config.DModel, batch = LayoutCase.Batch, tokens = LayoutCase.Tokens;
        var x = TestData.Normal(61, batch * tokens * dm);
        var dy = TestData.Normal(62, x.Length);
        string config = Path.Combine(dir.Path, "config.json"), weights = Path.Combine(dir.Path, "model.safetensors");
        string input = Path.Combine(dir.Path, "x.safetensors"), grad = Path.Combine(dir.Path, "dy.safetensors"), output = Path.Combine(dir.Path, "out.safetensors");
        File.WriteAllText(config, c.OfficialConfig);
        var tensors = LayoutCase.Tensors(c.Layout, layer, official).Select(p => new KeyValuePair<string, Tensor>(Prefix + p.Key, p.Value)).ToList();
        tensors.Add(new("model.layers.0.attn.other.weight", Backend.Cpu.Zeros(new Shape(3))));
        using (var tx = Backend.Cpu.FromArray(x, new Shape(batch, tokens, dm), DType.F64))
        using (var tdy = Backend.Cpu.FromArray(dy, tx.Shape, DType.F64))
        {
            SafeTensors.Write(weights, tensors);
            SafeTensors.Write(input, [new("x", tx)]);
            SafeTensors.Write(grad, [new("dy", tdy)]);
        }
        foreach (var (_, t) in tensors)
        {
            t.Dispose();
        }

        var (code, _, error) = AttnRunTests.Run("run", "--layout", c.Layout.Name, "--prefix", Prefix, "--layer-index", c.LayerIndex.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--config", config, "--weights", weights, "--input", input, "--grad", grad, "--out", output, "--backend", "cpu");
        Assert.That(code, Is.EqualTo(0), error);
        using var results = SafeTensors.Read(output);
        FormulaKit.AssertMatches(results["y"].ToDoubleArray(), c.Official(official, x, batch, tokens), $"{name}: y");
        var learnable = c.Layout.OfficialSpecs(layer).Where(s => s.Learnable).Select(s => s.Name).ToList();
        Assert.That(results.Tensors.Keys.Where(k => k.StartsWith("grad.", StringComparison.Ordinal)).Order(StringComparer.Ordinal),
            Is.EqualTo(learnable.Select(n => $"grad.{Prefix}{n}").Order(StringComparer.Ordinal)), "gradients under the checkpoint's own names");

        // One directional derivative of Σ y·dy along a random direction of every official tensor and x at once.
        var directions = learnable.ToDictionary(n => n, n => TestData.Normal(n.Length * 31, official[n].Length), StringComparer.Ordinal);
        var dxDirection = TestData.Normal(63, x.Length);
        double Loss(double h)
        {
            var w = new Dictionary<string, double[]>(official, StringComparer.Ordinal);
            foreach (var (n, d) in directions)
            {
                w[n] = official[n].Zip(d, (a, b) => a + (h * b)).ToArray();
            }
            return c.Official(w, x.Zip(dxDirection, (a, b) => a + (h * b)).ToArray(), batch, tokens).Zip(dy, (a, b) => a * b).Sum();
        }
        const double step = 1e-5;
        double derivative = (Loss(step) - Loss(-step)) / (2 * step);
        double analytic = results["dx"].ToDoubleArray().Zip(dxDirection, (g, d) => g * d).Sum()
            + directions.Sum(p => results[$"grad.{Prefix}{p.Key}"].ToDoubleArray().Zip(p.Value, (g, d) => g * d).Sum());
        Assert.That(analytic, Is.EqualTo(derivative).Within(1e-6 * (1 + Math.Abs(derivative))), $"{name}: directional derivative of Σ y·dy");
    }

    [Test]
    public void A_spec_config_with_a_layout_takes_its_conventions_and_refuses_a_contradiction()
    {
        using var files = new AttnRunTests.Files("mla");
        var spec = """{"d_model": 64, "n_heads": 4, "q_lora_rank": 32, "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16}""";
        var official = CheckpointLayout.DeepSeek.Export(files.Layer);
        string weights = Path.Combine(files.Dir, "official.safetensors");
        SafeTensors.Write(weights, official);
        foreach (var t in official.Values)
        {
            t.Dispose();
        }
        File.WriteAllText(files.Config, spec);
        var (code, _, error) = AttnRunTests.Run("run", "--layout", "deepseek", "--config", files.Config, "--weights", weights, "--input", files.Input, "--out", files.Out, "--backend", "cpu");
        Assert.That(code, Is.EqualTo(0), error);
        using (var results = SafeTensors.Read(files.Out))
        {
            Assert.That(results.Metadata["variant"], Is.EqualTo("mla"));
            Assert.That(results.Metadata["layout"], Is.EqualTo("deepseek"));
        }
        File.WriteAllText(files.Config, spec.Replace("}", ", \"rope_style\": \"half\"}", StringComparison.Ordinal));
        (code, _, error) = AttnRunTests.Run("run", "--layout", "deepseek", "--config", files.Config, "--weights", weights, "--input", files.Input, "--out", files.Out, "--backend", "cpu");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(error.TrimEnd().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(error, Does.Contain("rope_style: expected interleaved (the deepseek layout's convention) or no rope_style key, actual half"));
    }
}

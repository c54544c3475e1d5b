using System.Text.RegularExpressions;
using Attention.Native.IO;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Core;

/// <summary>The README's API example runs, and the README shows exactly this code.</summary>
public partial class ReadmeExampleTests
{
    [Test]
    public void The_readme_example_runs()
    {
        // README-BEGIN
        var backend = Backend.Cpu;                            // or Backend.Default: CUDA when a device, NVRTC and cuBLAS load
        var config = LayerConfig.Parse("gqa", """{"d_model": 64, "n_heads": 4, "n_kv_heads": 2, "head_dim": 16}""");
        using var layer = AttentionLayer.Create(config, backend, DType.F32);
        layer.InitializeParameters(seed: 1);                  // or: using var w = SafeTensors.Read("w.safetensors"); layer.LoadParameters(w.Tensors);

        using var x = backend.FromArray(new float[2 * 10 * 64], new Shape(2, 10, 64));   // [B, T, d_model]
        using var y = layer.Forward(x);                       // inference

        using var pass = layer.ForwardForTraining(x);         // training: keeps what the backward needs
        using var dy = backend.Zeros(pass.Output.Shape);
        using var grads = pass.Backward(dy);                  // grads.Input = dx; grads.Parameters["w_q"], …

        var causal = (CausalAttentionLayer)layer;             // mha, gqa, mqa, mla, tpa, sas, transnormer, mfa
        using var cache = causal.CreateCache(batch: 2, new CacheOptions(MaxLength: 4096));  // or grow by doubling
        using var prompt = cache.Prefill(x);                  // outputs of the prompt, cache filled
        using var next = cache.DecodeStep(backend.Zeros(new Shape(2, 1, 64)));              // one token; equals the full forward's row
        // README-END
        Assert.That(next.Shape, Is.EqualTo(new Shape(2, 1, 64)));
        Assert.That(cache.Length, Is.EqualTo(11));
        Assert.That(grads.Parameters.Keys, Is.EquivalentTo(new[] { "w_q", "w_k", "w_v", "w_o" }));
        _ = typeof(SafeTensors);
    }

    [Test]
    public void The_readme_shows_this_example()
    {
        string root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "Attention.Native.sln")))
        {
            root = Path.GetDirectoryName(root) ?? throw new AssertionException("repository root not found");
        }
        string readme = File.ReadAllText(Path.Combine(root, "README.md"));
        string source = File.ReadAllText(Path.Combine(root, "tests", "Attention.Native.Tests", "Core", "ReadmeExampleTests.cs"));
        var block = ApiBlock().Match(readme).Groups[1].Value;
        var example = source[(source.IndexOf("// README-BEGIN", StringComparison.Ordinal) + 15)..source.IndexOf("// README-END", StringComparison.Ordinal)];
        static string[] Lines(string text) => text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith("using Attention", StringComparison.Ordinal)).ToArray();
        Assert.That(Lines(block), Is.EqualTo(Lines(example)));
    }

    [GeneratedRegex("## The API in short\\s+```csharp\\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex ApiBlock();
}

using System.Text.RegularExpressions;
using Attention.Native.Inference;
using Attention.Native.IO;
using Attention.Native.Ops;
using Attention.Native.Tests.Support;
using Attention.Native.Tests.TorchReference;
using Attention.Native.Torch;
using TorchSharp;
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
    public void The_readme_serving_example_runs()
    {
        var backend = Backend.Cpu;
        using var layer = (CausalAttentionLayer)AttentionLayer.Create(LayerConfig.Parse("gqa", """{"d_model": 64, "n_heads": 4, "n_kv_heads": 2, "head_dim": 16}"""), backend, DType.F32);
        layer.InitializeParameters(seed: 1);
        Tensor Tokens(int n) => backend.FromArray(new float[n * 64], new Shape(1, n, 64));
        // SERVING-BEGIN
        using var pool = new ServingPool(layer, new ServingPoolOptions(TokenBudget: 4096, PageSize: 16));
        var active = new List<SequenceId>();
        for (int step = 0; step < 40; step++)
        {
            if (step % 10 == 0)                                // admissions while others decode
            {
                var id = pool.Admit();
                using var prompt = Tokens(100 + step);         // [1, T, d_model]
                using var _ = pool.Prefill(id, prompt, chunkSize: 64);   // chunked prefill
                active.Add(id);
            }
            if (step == 25)
            {
                active.Add(pool.Fork(active[0]));              // shares its pages; a shared page is copied on write
            }
            using var x = backend.Zeros(new Shape(active.Count, 1, 64));  // the next token of each active sequence
            using var y = pool.Decode([.. active], x);         // one call for sequences of different lengths
            if (step == 30)
            {
                pool.Release(active[1]);                       // its pages return to the free list
                active.RemoveAt(1);
            }
        }
        // SERVING-END
        Assert.That(active, Has.Count.EqualTo(4));
        Assert.That(pool.Length(active[0]), Is.EqualTo(140));
        Assert.That(pool.FreePages, Is.EqualTo(pool.PageCount - active.Sum(id => pool.PagesOf(id)) + 7), "the fork shares the 7 full pages it was forked with; the partly full one was copied on write");
    }

    [Test]
    public void The_readme_zero_copy_example_runs()
    {
        float[] qkv = TestData.NormalSingle(3, 3 * 1 * 8 * 2 * 16);
        // ZEROCOPY-BEGIN
        var memory = qkv.AsMemory();                          // the caller's [3, B, T, H, d] array
        int n = 1 * 8 * 2 * 16;
        using var q = Backend.Cpu.Wrap(memory[..n], new Shape(1, 8, 2, 16));   // views of it, no copy
        using var k = Backend.Cpu.Wrap(memory[n..(2 * n)], new Shape(1, 8, 2, 16));
        using var v = Backend.Cpu.Wrap(memory[(2 * n)..], new Shape(1, 8, 2, 16));
        var o = new float[n];
        var lse = new float[1 * 2 * 8];
        using (var ot = Backend.Cpu.Wrap(o.AsMemory(), new Shape(1, 8, 2, 16)))
        using (var lt = Backend.Cpu.Wrap(lse.AsMemory(), new Shape(1, 2, 8)))
        {
            SoftmaxAttention.Forward(q, k, v, new AttentionOptions(0.25, Causal: true), null, ot, lt);  // o written in place
        }
        // ZEROCOPY-END
        using var qc = Backend.Cpu.FromArray(qkv.AsSpan(0, n), new Shape(1, 8, 2, 16));
        using var kc = Backend.Cpu.FromArray(qkv.AsSpan(n, n), new Shape(1, 8, 2, 16));
        using var vc = Backend.Cpu.FromArray(qkv.AsSpan(2 * n, n), new Shape(1, 8, 2, 16));
        using var copy = SoftmaxAttention.Forward(qc, kc, vc, new AttentionOptions(0.25, Causal: true));
        Assert.That(o, Is.EqualTo(copy.ToArray()));
    }

    [Test]
    public void The_readme_shows_the_zero_copy_example()
    {
        AssertReadmeShows(ZeroCopyBlock(), "ZEROCOPY");
    }

    [GeneratedRegex("### Your memory, your stream.*?```csharp\\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex ZeroCopyBlock();

    [Test]
    public void The_readme_torchsharp_example_runs()
    {
        TorchRuntime.Require();
        RunTorchSharpExample();
    }

    // Separate, so that a test bundle without TorchSharp skips (above) before this is compiled.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void RunTorchSharpExample()
    {
        using var scope = TorchSharp.torch.NewDisposeScope();
        // TORCHSHARP-BEGIN
        var config = new GqaConfig { Kind = "gqa", DModel = 64, Heads = 4, KvHeads = 2, HeadDim = 16, Causal = true, Rope = true };
        using var attention = new AttentionModule(config, CheckpointLayout.Llama);  // q_proj.weight, k_proj.weight, …
        var optimizer = torch.optim.AdamW(attention.parameters());
        var y = attention.call(torch.randn(2, 10, 64));     // the forward, on the parameters' own memory
        y.pow(2).mean().backward();                          // the backward, inside torch's autograd
        optimizer.step();                                    // seen by the next call: nothing to copy back

        var q = torch.randn(2, 4, 10, 16, requires_grad: true);  // torch's [B, H, T, d]
        var k = torch.randn(2, 2, 10, 16, requires_grad: true);  // 2 KV heads for 4 query heads
        var v = torch.randn(2, 2, 10, 16, requires_grad: true);
        var o = AttentionFunctions.ScaledDotProductAttention(q, k, v, isCausal: true);
        o.sum().backward();                                  // q.grad, k.grad, v.grad
        // TORCHSHARP-END
        Assert.That(attention.state_dict().Keys, Is.EquivalentTo(new[] { "q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight" }));
        Assert.That(y.shape, Is.EqualTo(new long[] { 2, 10, 64 }));
        Assert.That(o.shape, Is.EqualTo(new long[] { 2, 4, 10, 16 }));
        Assert.That(k.grad!.shape, Is.EqualTo(k.shape));
    }

    [Test]
    public void The_readme_shows_the_torchsharp_example()
    {
        AssertReadmeShows(TorchSharpBlock(), "TORCHSHARP");
    }

    [GeneratedRegex("### TorchSharp.*?```csharp\\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex TorchSharpBlock();

    [Test]
    public void The_readme_shows_the_serving_example()
    {
        AssertReadmeShows(ServingBlock(), "SERVING");
    }

    [Test]
    public void The_readme_vision_example_runs()
    {
        var backend = Backend.Cpu;
        // VISION-BEGIN
        var config = LayerConfig.Parse("agent", """{"d_model": 64, "n_heads": 1, "n_agents": 49, "grid_size": 56, "qkv_bias": true}""");
        using var layer = AttentionLayer.Create(config, backend, DType.F32);     // AgentVisionLayer: Agent-PVT's module, its names
        layer.InitializeParameters(seed: 1);            // or layer.LoadParameters(checkpoint, CheckpointLayout.AgentPvt, prefix: "…attn.")
        using var image = backend.Zeros(new Shape(2, 56, 56, 64));              // [B, H, W, C]: the grid the biases are made for
        using var y = layer.Forward(image);                                     // [B, H, W, C]
        using var larger = backend.Zeros(new Shape(2, 40, 64, 64));             // another grid: the position biases are resized
        using var y2 = layer.Forward(larger);
        var swin = CheckpointLayout.AgentSwin.ReadConfig("""{"dim": 64, "window_size": 7, "num_heads": 2, "agent_num": 9}""");  // [B, H, W, C] in 7×7 windows
        // VISION-END
        Assert.That(y.Shape, Is.EqualTo(image.Shape));
        Assert.That(y2.Shape, Is.EqualTo(larger.Shape));
        Assert.That(swin, Is.TypeOf<AgentVisionConfig>().And.Property("Form").EqualTo("swin"));
        AssertReadmeShows(VisionBlock(), "VISION");
    }

    [GeneratedRegex("### Vision forms.*?```csharp\\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex VisionBlock();

    // The README's block (the regex's first group) is, line for line, the code between this file's // <marker>-BEGIN and -END.
    private static void AssertReadmeShows(Regex readmeBlock, string marker)
    {
        string readme = File.ReadAllText(Path.Combine(Root(), "README.md"));
        string source = File.ReadAllText(Path.Combine(Root(), "tests", "Attention.Native.Tests", "Core", "ReadmeExampleTests.cs"));
        var block = readmeBlock.Match(readme).Groups[1].Value;
        string begin = $"// {marker}-BEGIN";
        var example = source[(source.IndexOf(begin, StringComparison.Ordinal) + begin.Length)..source.IndexOf($"// {marker}-END", StringComparison.Ordinal)];
        static string[] Lines(string text) => text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
        Assert.That(Lines(block), Is.Not.Empty, "the README block");
        Assert.That(Lines(block), Is.EqualTo(Lines(example)));
    }

    private static string Root()
    {
        string root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "Attention.Native.sln")))
        {
            root = Path.GetDirectoryName(root) ?? throw new AssertionException("repository root not found");
        }
        return root;
    }

    [GeneratedRegex("### Serving.*?```csharp\\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex ServingBlock();

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

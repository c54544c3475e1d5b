using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Attention.Native.Variants;
using Spectre.Console;

namespace Attention.Cli;

/// <summary>
/// <c>attn demo</c>: every variant of variants.md as a layer, forward and backward, on the chosen backend. On the CPU the
/// layers are sized to run in seconds on two cores; on a GPU they run at the benchmark configs. The table gives each
/// layer's parameter count, its KV-cache bytes per token in bf16 beside MHA's of the same width, and its times.
/// </summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var backendOption = AttnCli.BackendOption();
        var tokensOption = new Option<int>("--tokens") { Description = "sequence length T (agent and flatten use it as seq_len)", DefaultValueFactory = _ => 0 };
        var variantsOption = new Option<string[]>("--variant") { Description = "run only these variants (repeatable)", AllowMultipleArgumentsPerToken = true };
        var command = new Command("demo", "Run every attention variant forward and backward and print parameters, cache size and time.");
        command.Options.Add(backendOption);
        command.Options.Add(tokensOption);
        command.Options.Add(variantsOption);
        command.SetAction(result =>
        {
            var error = result.InvocationConfiguration.Error;
            int tokens = result.GetValue(tokensOption);
            if (tokens < 0)
            {
                error.WriteLine($"--tokens: expected ≥ 1, actual {tokens}");
                return 2;
            }
            var only = result.GetValue(variantsOption) ?? [];
            var unknown = only.Where(v => !LayerConfig.Variants.Contains(v)).ToList();
            if (unknown.Count > 0)
            {
                error.WriteLine($"--variant: expected one of {string.Join(", ", LayerConfig.Variants)}, actual {string.Join(", ", unknown)}");
                return 2;
            }
            return AttnCli.Guard("demo", error, () =>
            {
                var backend = AttnCli.SelectBackend(result.GetValue(backendOption)!);
                Run(AttnCli.Console(result.InvocationConfiguration.Output), backend, tokens, only);
                return 0;
            });
        });
        return command;
    }

    private sealed record Row(string Variant, string Config, long Parameters, string Cache, string VersusMha, string Forward, string Backward);

    public static void Run(IAnsiConsole console, Backend backend, int tokens, IReadOnlyCollection<string> only)
    {
        bool gpu = backend.Kind == BackendKind.Cuda;
        var dtype = gpu ? DType.BF16 : DType.F32;
        int batch = gpu ? 1 : 2;
        int t = tokens > 0 ? tokens : gpu ? 2048 : 256;
        console.MarkupLine($"[bold]Attention.Native demo[/] on [green]{Markup.Escape(backend.Name)}[/]");
        if (ReferenceEquals(backend, Backend.Default))
        {
            console.MarkupLine($"  backend choice: {Markup.Escape(Backend.DefaultReason)}");
        }
        console.MarkupLine(Markup.Escape($"  x [{batch}, {t}, d_model] {dtype}; {(gpu ? "benchmark configs of variants.md" : "CPU demo configs")}; times are medians of 3 runs after 2 warm-ups; backward includes its forward"));
        var configs = (gpu ? BenchmarkConfigs(t) : DemoConfigs(t)).Where(c => only.Count == 0 || only.Contains(c.Variant)).ToList();
        var rows = new List<Row>();
        console.Progress().AutoClear(true).Start(progress =>
        {
            var task = progress.AddTask("variants", maxValue: configs.Count);
            foreach (var config in configs)
            {
                task.Description = config.Variant;
                rows.Add(Measure(backend, dtype, batch, t, config));
                task.Increment(1);
            }
        });
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumn("variant").AddColumn("config").AddColumn(new TableColumn("parameters").RightAligned())
            .AddColumn(new TableColumn("KV cache B/token (bf16)").RightAligned()).AddColumn(new TableColumn("vs MHA same width").RightAligned())
            .AddColumn(new TableColumn("forward ms").RightAligned()).AddColumn(new TableColumn("backward ms").RightAligned());
        foreach (var r in rows)
        {
            table.AddRow(r.Variant, Markup.Escape(r.Config), r.Parameters.ToString("N0", CultureInfo.InvariantCulture), Markup.Escape(r.Cache), Markup.Escape(r.VersusMha), r.Forward, r.Backward);
        }
        console.Write(table);
    }

    private static Row Measure(Backend backend, DType dtype, int batch, int tokens, LayerConfig config)
    {
        string description = Describe(config);
        long mhaBytes = 2L * config.DModel * 2;
        string cache, versus;
        switch (config.CacheElementsPerToken)
        {
            case null:
                cache = "none (non-causal)";
                versus = "—";
                break;
            case 0:
                // The state is F32 in a 16-bit layer (Lightning.StateDType).
                long state = ((TransNormerConfig)config).StateElements * 4;
                cache = $"0 (state {state:N0} B/seq)";
                versus = "constant";
                break;
            case long elements:
                cache = (elements * 2).ToString("N0", CultureInfo.InvariantCulture);
                versus = $"{elements * 2.0 / mhaBytes:P1} of {mhaBytes:N0} B";
                break;
        }
        try
        {
            using var layer = AttentionLayer.Create(config, backend, dtype);
            layer.InitializeParameters(7);
            var random = new Random(3);
            var shape = new Shape(batch, tokens, config.DModel);
            float[] Values() => Enumerable.Range(0, (int)shape.ElementCount).Select(_ => (float)((random.NextDouble() * 2) - 1)).ToArray();
            using var x = backend.FromArray(Values(), shape, dtype);
            using var dy = backend.FromArray(Values(), shape, dtype);
            double forward = Time(backend, () => layer.Forward(x).Dispose());
            double backward = Time(backend, () =>
            {
                using var pass = layer.ForwardForTraining(x);
                pass.Backward(dy).Dispose();
            });
            return new Row(config.Variant, description, layer.ParameterCount, cache, versus, Ms(forward), Ms(backward));
        }
        catch (NotSupportedException e)
        {
            string why = e.Message.Split(':')[0];
            return new Row(config.Variant, description, 0, cache, versus, $"n/a ({why} not on this backend yet)", "n/a");
        }
    }

    // Median of 3 timed runs after two warm-ups (the JIT's tiering, and compiling kernels on CUDA). Backward includes its forward.
    private static double Time(Backend backend, Action action)
    {
        action();
        action();
        backend.Synchronize();
        var samples = new double[3];
        for (int i = 0; i < samples.Length; i++)
        {
            var sw = Stopwatch.StartNew();
            action();
            backend.Synchronize();
            samples[i] = sw.Elapsed.TotalMilliseconds;
        }
        Array.Sort(samples);
        return samples[1];
    }

    /// <summary>Sizes that run in seconds on two CPU cores (width 256, 8 heads).</summary>
    internal static IReadOnlyList<LayerConfig> DemoConfigs(int tokens) =>
    [
        new GqaConfig { Kind = "mha", DModel = 256, Heads = 8, KvHeads = 8, HeadDim = 32 },
        new GqaConfig { Kind = "gqa", DModel = 256, Heads = 8, KvHeads = 2, HeadDim = 32 },
        new GqaConfig { Kind = "mqa", DModel = 256, Heads = 8, KvHeads = 1, HeadDim = 32 },
        new MlaConfig { DModel = 256, Heads = 8, QLoraRank = 128, KvLoraRank = 64, QkNopeHeadDim = 32, QkRopeHeadDim = 16, VHeadDim = 32 },
        new TpaConfig { DModel = 256, Heads = 8, HeadDim = 32, QRank = 6, KRank = 2, VRank = 2 },
        new SasConfig { DModel = 256, Heads = 8, HeadDim = 32, SimHeads = 16, SimHeadDim = 64, KernelSize = 3 },
        new AgentConfig { DModel = 256, Heads = 8, Agents = 16, SeqLen = tokens },
        new FlattenConfig { DModel = 256, Heads = 8, SeqLen = tokens, FocusingFactor = 3 },
        new TransNormerConfig { DModel = 256, Heads = 8, HeadDim = 32, LayerIndex = 0, NumLayers = 2 },
        new MfaConfig { DModel = 256, Heads = 8, HeadDim = 64, QLoraDim = 128 },
    ];

    /// <summary>The benchmark configs of variants.md (agent and flatten at their own seq_len 3136).</summary>
    internal static IReadOnlyList<LayerConfig> BenchmarkConfigs(int tokens) =>
    [
        new GqaConfig { Kind = "mha", DModel = 2048, Heads = 16, KvHeads = 16, HeadDim = 128 },
        new GqaConfig { Kind = "gqa", DModel = 2048, Heads = 16, KvHeads = 4, HeadDim = 128 },
        new GqaConfig { Kind = "mqa", DModel = 2048, Heads = 16, KvHeads = 1, HeadDim = 128 },
        new MlaConfig { DModel = 2048, Heads = 16, QLoraRank = 1536, KvLoraRank = 512, QkNopeHeadDim = 128, QkRopeHeadDim = 64, VHeadDim = 128 },
        new TpaConfig { DModel = 2048, Heads = 32, HeadDim = 64, QRank = 6, KRank = 2, VRank = 2 },
        new SasConfig { DModel = 2048, Heads = 16, HeadDim = 128, SimHeads = 32, SimHeadDim = 256, KernelSize = 3 },
        new AgentConfig { DModel = 512, Heads = 8, Agents = 49, SeqLen = tokens == 2048 ? 3136 : tokens },
        new FlattenConfig { DModel = 512, Heads = 8, SeqLen = tokens == 2048 ? 3136 : tokens, FocusingFactor = 3 },
        new TransNormerConfig { DModel = 2048, Heads = 16, HeadDim = 128, LayerIndex = 0, NumLayers = 24 },
        new MfaConfig { DModel = 4096, Heads = 64, HeadDim = 256, QLoraDim = 2048 },
    ];

    internal static string Describe(LayerConfig config) => config switch
    {
        GqaConfig c => $"d {c.DModel}, H {c.Heads}, G {c.KvHeads}, d_h {c.HeadDim}",
        MlaConfig c => $"d {c.DModel}, H {c.Heads}, d_c' {c.QLoraRank}, d_c {c.KvLoraRank}, {c.QkNopeHeadDim}+{c.QkRopeHeadDim}/{c.VHeadDim}",
        TpaConfig c => $"d {c.DModel}, H {c.Heads}, d_h {c.HeadDim}, ranks {c.QRank}/{c.KRank}/{c.VRank}",
        SasConfig c => $"d {c.DModel}, H {c.Heads}→{c.SimHeads}, D {c.HeadDim}→{c.SimHeadDim}, k {c.KernelSize}",
        AgentConfig c => $"d {c.DModel}, h {c.Heads}, n {c.Agents}, T {c.SeqLen}",
        FlattenConfig c => $"d {c.DModel}, h {c.Heads}, T {c.SeqLen}, p {c.FocusingFactor}",
        TransNormerConfig c => $"d {c.DModel}, H {c.Heads}, d_h {c.HeadDim}, l {c.LayerIndex}/{c.NumLayers}",
        MfaConfig c => $"d {c.DModel}, H {c.Heads}, G 1, d_h {c.HeadDim}, C_q {c.QLoraDim}",
        _ => config.Variant,
    };

    private static string Ms(double ms) => ms.ToString(ms < 1 ? "F3" : "F1", CultureInfo.InvariantCulture);
}

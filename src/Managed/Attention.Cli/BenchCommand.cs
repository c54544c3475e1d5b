using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Attention.Native.Ops;
using Spectre.Console;

namespace Attention.Cli;

/// <summary>
/// <c>attn bench</c>: throughput of the compute cores on the chosen backend. Softmax attention at B=1, H=8, T=1024, d=64
/// (forward and backward; FLOPs counted as FlashAttention does: forward 4·T²·d·H, halved when causal, backward 2.5× the
/// forward) and <c>Linear</c> at 1024×1024×1024 (forward 2·m·n·k, backward 4·m·n·k for dx and dW). Median of the timed runs
/// after a warm-up. <c>--sweep</c> measures every kernel and variant (<see cref="BenchSweep"/>), <c>--serving</c> a
/// continuous-batching trace (<see cref="BenchServing"/>).
/// </summary>
internal static class BenchCommand
{
    private static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true };
    private static readonly bool[] CausalModes = [false, true];

    public static Command Create()
    {
        var backendOption = AttnCli.BackendOption();
        var repeats = new Option<int>("--repeats") { Description = "timed runs per measurement (median reported; not --serving, whose trace runs once)", DefaultValueFactory = _ => 5 };
        var json = new Option<FileInfo?>("--json") { Description = "also write the rows as JSON to this file" };
        var sweep = new Option<bool>("--sweep") { Description = "the full sweep: every kernel and variant over T at B·T = --tokens (bf16 on CUDA; a reduced sweep on the CPU)" };
        var tokens = new Option<int>("--tokens") { Description = "sweep: B·T of each measurement", DefaultValueFactory = _ => 16384 };
        var lengths = new Option<int[]>("--lengths") { Description = "sweep: the sequence lengths T", DefaultValueFactory = _ => [512, 1024, 2048, 4096, 8192, 16384], AllowMultipleArgumentsPerToken = true };
        var variants = new Option<string[]>("--variant") { Description = "sweep, serving: only these variants' layers (default: all; serving: the causal ones)", AllowMultipleArgumentsPerToken = true };
        var peers = new Option<FileInfo?>("--peers") { Description = "sweep: JSON of bench/peers/torch_peers.py from the same run, joined row by row" };
        var vision = new Option<bool>("--vision") { Description = "the 2-D (vision) forms of agent and flatten at their papers' stage-1 shapes beside the 1-D forms and softmax attention; writes <device>-<yyyymmdd>-vision.json/.md" };
        var visionBatch = new Option<int?>("--vision-batch") { Description = "vision: the batch (default 8 on CUDA, 1 on the CPU)" };
        var results = new Option<DirectoryInfo?>("--results") { Description = "sweep, serving: folder for <device>-<yyyymmdd>.json/.md/.svg (serving: <device>-<yyyymmdd>-serving.json/.md; default: bench/results below the current folder, else the current folder)" };
        var serving = new Option<bool>("--serving")
        {
            Description = "a synthetic continuous-batching trace through each causal variant's serving pool (paged cache): admit while pages allow, "
                + "prefill in chunks, decode every active sequence each step, release when done; reports prefill and decode tokens/s, decode-step "
                + "latency p50/p99 and peak cache memory against contiguous caches (bf16 on CUDA, f32 on the CPU unless --dtype; on the CPU, "
                + "options not given take the reduced trace's values)",
        };
        var full = BenchServing.Trace.Full;
        var cpu = BenchServing.Trace.Cpu;
        var sequences = new Option<int?>("--sequences") { Description = $"serving: sequences in the trace (default {full.Sequences}; CPU {cpu.Sequences})" };
        var promptMin = new Option<int?>("--prompt-min") { Description = $"serving: shortest prompt in tokens (default {full.PromptMin}; CPU {cpu.PromptMin})" };
        var promptMax = new Option<int?>("--prompt-max") { Description = $"serving: longest prompt in tokens; prompts are drawn uniformly between the two (default {full.PromptMax}; CPU {cpu.PromptMax})" };
        var generate = new Option<int?>("--generate") { Description = $"serving: tokens each sequence generates, one decode step each (default {full.Generate}; CPU {cpu.Generate})" };
        var pageSize = new Option<int?>("--page-size") { Description = $"serving: tokens per cache page (default {full.PageSize})" };
        var tokenBudget = new Option<int?>("--token-budget") { Description = $"serving: tokens the pool's pages hold across all sequences (default {full.TokenBudget}; CPU {cpu.TokenBudget})" };
        var maxBatch = new Option<int?>("--max-batch") { Description = $"serving: most sequences active at once (default {full.MaxBatch}; CPU {cpu.MaxBatch})" };
        var prefillChunk = new Option<int?>("--prefill-chunk") { Description = $"serving: most prompt tokens per prefill step (default {full.PrefillChunk}; CPU {cpu.PrefillChunk})" };
        var seed = new Option<int?>("--seed") { Description = $"serving: seed of the prompt lengths (default {full.Seed})" };
        var dtypeOption = new Option<string?>("--dtype") { Description = "serving: bf16, f16, f32 or f64 (default bf16 on CUDA, f32 on the CPU)" };
        dtypeOption.AcceptOnlyFromAmong("bf16", "f16", "f32", "f64");
        var command = new Command("bench", "Measure GFLOP/s of softmax attention and Linear, forward and backward; --sweep for every kernel and variant against the PyTorch peers; --serving for a continuous-batching trace.");
        command.Options.Add(backendOption);
        command.Options.Add(repeats);
        command.Options.Add(json);
        command.Options.Add(sweep);
        command.Options.Add(tokens);
        command.Options.Add(lengths);
        command.Options.Add(variants);
        command.Options.Add(peers);
        command.Options.Add(results);
        command.Options.Add(vision);
        command.Options.Add(visionBatch);
        foreach (var option in new Option[] { serving, sequences, promptMin, promptMax, generate, pageSize, tokenBudget, maxBatch, prefillChunk, seed, dtypeOption })
        {
            command.Options.Add(option);
        }
        command.SetAction(result =>
        {
            int n = result.GetValue(repeats);
            var error = result.InvocationConfiguration.Error;
            if (n < 1)
            {
                error.WriteLine($"--repeats: expected ≥ 1, actual {n}");
                return 2;
            }
            return AttnCli.Guard("bench", error, () => Bench(result, AttnCli.SelectBackend(result.GetValue(backendOption)!), n));
        });
        return command;

        int Bench(ParseResult result, Backend backend, int n)
        {
            var error = result.InvocationConfiguration.Error;
            if (result.GetValue(serving))
            {
                if (result.GetValue(sweep))
                {
                    throw new ArgumentException("--serving: expected either --serving or --sweep, actual both");
                }
                var preset = backend.Kind == BackendKind.Cuda ? BenchServing.Trace.Full : BenchServing.Trace.Cpu;
                var trace = new BenchServing.Trace(
                    result.GetValue(sequences) ?? preset.Sequences, result.GetValue(promptMin) ?? preset.PromptMin, result.GetValue(promptMax) ?? preset.PromptMax,
                    result.GetValue(generate) ?? preset.Generate, result.GetValue(pageSize) ?? preset.PageSize, result.GetValue(tokenBudget) ?? preset.TokenBudget,
                    result.GetValue(maxBatch) ?? preset.MaxBatch, result.GetValue(prefillChunk) ?? preset.PrefillChunk, result.GetValue(seed) ?? preset.Seed);
                return Serving(result, backend, trace, result.GetValue(dtypeOption));
            }
            if (result.GetValue(vision))
            {
                if (result.GetValue(sweep) || result.GetValue(serving))
                {
                    throw new ArgumentException("--vision: expected --vision alone, actual with --sweep or --serving");
                }
                int batch = result.GetValue(visionBatch) ?? (backend.Kind == BackendKind.Cuda ? 8 : 1);
                if (batch < 1)
                {
                    error.WriteLine($"--vision-batch: expected ≥ 1, actual {batch}");
                    return 2;
                }
                var console = AttnCli.Console(result.InvocationConfiguration.Output);
                var visionRows = BenchVision.Run(console, backend, n, batch);
                string device = DevicePeaks.Name(backend);
                console.Write(new Text(BenchVision.Markdown(visionRows, device)));
                string path = BenchVision.Write(ResultsFolder(result), device, DateTime.UtcNow, visionRows);
                console.MarkupLine(Markup.Escape($"wrote {path} (and .md): {visionRows.Count} rows"));
                return 0;
            }
            if (result.GetValue(sweep))
            {
                var options = new BenchSweep.Options(result.GetValue(tokens), result.GetValue(lengths) ?? [], n, result.GetValue(variants) ?? []);
                if (options.Tokens < 1 || options.Lengths.Length == 0 || options.Lengths.Any(t => t < 1))
                {
                    error.WriteLine($"--tokens/--lengths: expected positive values, actual {options.Tokens} / [{string.Join(", ", options.Lengths)}]");
                    return 2;
                }
                var unknown = options.Variants.Except(Attention.Native.Variants.LayerConfig.Variants).ToList();
                if (unknown.Count > 0)
                {
                    error.WriteLine($"--variant: expected one of {string.Join(", ", Attention.Native.Variants.LayerConfig.Variants)}, actual {string.Join(", ", unknown)}");
                    return 2;
                }
                IReadOnlyList<BenchReport.Measurement> peerRows = [];
                if (result.GetValue(peers) is { } peerFile)
                {
                    try
                    {
                        peerRows = BenchReport.ReadPeers(File.ReadAllText(peerFile.FullName));
                    }
                    catch (Exception e) when (e is IOException or InvalidDataException or JsonException or InvalidOperationException or FormatException)
                    {
                        error.WriteLine($"--peers: {peerFile.FullName}: {e.Message}");
                        return 2;
                    }
                }
                var console = AttnCli.Console(result.InvocationConfiguration.Output);
                if (backend.Kind != BackendKind.Cuda)
                {
                    options = BenchSweep.CpuOptions(options);
                    console.MarkupLine(Markup.Escape($"no CUDA device: the reduced CPU sweep (B·T = {options.Tokens}, T ∈ {{{string.Join(", ", options.Lengths)}}})"));
                }
                var ours = BenchSweep.Run(console, backend, options);
                var joined = BenchReport.Join(ours, peerRows);
                string device = DevicePeaks.Name(backend);
                string folder = ResultsFolder(result);
                console.Write(new Text(BenchReport.Markdown(joined, device)));
                string path = BenchReport.Write(folder, device, DateTime.UtcNow, joined);
                console.MarkupLine(Markup.Escape($"wrote {path} (and .md, .svg): {joined.Count} rows, {joined.Count(r => r.Peer is not null)} beside a peer"));
                return 0;
            }
            var rows = Run(AttnCli.Console(result.InvocationConfiguration.Output), backend, n);
            if (result.GetValue(json) is { } file)
            {
                File.WriteAllText(file.FullName, JsonSerializer.Serialize(new
                {
                    backend = backend.Name,
                    processors = Environment.ProcessorCount,
                    date = DateTime.UtcNow.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture),
                    rows = rows.Select(r => new { kernel = r.Kernel, shape = r.Shape, pass = r.Pass, ms = r.Ms, gflops = r.Gflops }),
                }, JsonOptions));
            }
            return 0;
        }

        string ResultsFolder(ParseResult result) => result.GetValue(results)?.FullName
            ?? (Directory.Exists(Path.Combine("bench", "results")) ? Path.Combine("bench", "results") : Directory.GetCurrentDirectory());

        int Serving(ParseResult result, Backend backend, BenchServing.Trace trace, string? dtypeName)
        {
            trace.Check();
            var configs = BenchServing.Configs(result.GetValue(variants) ?? []);
            var dtype = dtypeName switch
            {
                "bf16" => DType.BF16,
                "f16" => DType.F16,
                "f32" => DType.F32,
                "f64" => DType.F64,
                _ => backend.Kind == BackendKind.Cuda ? DType.BF16 : DType.F32,
            };
            string type = dtype.ToString().ToLowerInvariant();
            string device = DevicePeaks.Name(backend);
            var console = AttnCli.Console(result.InvocationConfiguration.Output);
            console.MarkupLine(Markup.Escape(string.Create(CultureInfo.InvariantCulture,
                $"attn bench --serving on {backend.Name}, {type}: {trace.Sequences} sequences, prompts {trace.PromptMin}–{trace.PromptMax}, {trace.Generate} generated, pages of {trace.PageSize}, pool of {trace.TokenBudget} tokens, at most {trace.MaxBatch} active, prefill chunks of {trace.PrefillChunk}")));
            var rows = new List<BenchServing.Result>();
            string folder = ResultsFolder(result), path = "";
            var date = DateTime.UtcNow;
            foreach (var config in configs)
            {
                rows.Add(BenchServing.Run(backend, config, dtype, trace));
                var r = rows[^1];
                console.MarkupLine(Markup.Escape(string.Create(CultureInfo.InvariantCulture,
                    $"{r.Variant}: prefill {r.PrefillTokensPerSecond:F0} tok/s, decode {r.DecodeTokensPerSecond:F0} tok/s, decode step p50 {r.DecodeP50Ms:F3} ms p99 {r.DecodeP99Ms:F3} ms, peak cache {r.PeakBytesInUse} B of {r.ContiguousBytes} B contiguous")));
                // Written after every variant: a later variant's failure keeps the rows measured so far.
                path = BenchServing.Write(folder, device, backend.Name, date, type, trace, rows);
            }
            console.Write(new Text(BenchServing.Markdown(device, type, trace, rows)));
            console.MarkupLine(Markup.Escape($"wrote {path} (and .md): {rows.Count} variants"));
            return 0;
        }
    }

    internal sealed record Row(string Kernel, string Shape, string Pass, double Ms, double Gflops);

    public static IReadOnlyList<Row> Run(IAnsiConsole console, Backend backend, int repeats)
    {
        var dtype = backend.Kind == BackendKind.Cuda ? DType.BF16 : DType.F32;
        console.MarkupLine(Markup.Escape($"attn bench on {backend.Name}, {dtype}, {Environment.ProcessorCount} logical processors"));
        var rows = new List<Row>();
        console.Progress().AutoClear(true).Start(progress =>
        {
            var task = progress.AddTask("measuring", maxValue: 6);
            const int b = 1, h = 8, t = 1024, d = 64;
            var random = new Random(1);
            float[] Values(long count) => Enumerable.Range(0, (int)count).Select(_ => (float)((random.NextDouble() * 2) - 1)).ToArray();
            var shape = new Shape(b, t, h, d);
            using var q = backend.FromArray(Values(shape.ElementCount), shape, dtype);
            using var k = backend.FromArray(Values(shape.ElementCount), shape, dtype);
            using var v = backend.FromArray(Values(shape.ElementCount), shape, dtype);
            using var dO = backend.FromArray(Values(shape.ElementCount), shape, dtype);
            using var o = backend.Zeros(shape, dtype);
            using var dq = backend.Zeros(shape, dtype);
            using var dk = backend.Zeros(shape, dtype);
            using var dv = backend.Zeros(shape, dtype);
            using var lse = backend.Zeros(new Shape(b, h, t), dtype == DType.F64 ? DType.F64 : DType.F32);
            foreach (bool causal in CausalModes)
            {
                var options = new AttentionOptions(1 / Math.Sqrt(d), causal);
                double flops = 4.0 * t * t * d * h * b * (causal ? 0.5 : 1.0);
                string label = $"B={b} H={h} T={t} d={d}{(causal ? " causal" : "")}";
                double fwd = Time(backend, repeats, () => SoftmaxAttention.Forward(q, k, v, options, null, o, lse));
                rows.Add(new("softmax attention", label, "forward", fwd, flops / fwd / 1e6));
                task.Increment(1);
                double bwd = Time(backend, repeats, () => SoftmaxAttention.Backward(q, k, v, options, null, o, lse, dO, dq, dk, dv));
                rows.Add(new("softmax attention", label, "backward", bwd, 2.5 * flops / bwd / 1e6));
                task.Increment(1);
            }
            const int m = 1024, n = 1024, kk = 1024;
            using var x = backend.FromArray(Values((long)m * kk), new Shape(m, kk), dtype);
            using var w = backend.FromArray(Values((long)n * kk), new Shape(n, kk), dtype);
            using var y = backend.Zeros(new Shape(m, n), dtype);
            using var dy = backend.FromArray(Values((long)m * n), new Shape(m, n), dtype);
            using var dx = backend.Zeros(x.Shape, dtype);
            using var dw = backend.Zeros(w.Shape, dtype);
            double lf = Time(backend, repeats, () => Linear.Forward(x, w, null, y));
            rows.Add(new("Linear", "1024×1024×1024", "forward", lf, 2.0 * m * n * kk / lf / 1e6));
            task.Increment(1);
            double lb = Time(backend, repeats, () => Linear.Backward(x, w, dy, dx, dw, null));
            rows.Add(new("Linear", "1024×1024×1024", "backward", lb, 4.0 * m * n * kk / lb / 1e6));
            task.Increment(1);
        });
        var table = new Table().Border(TableBorder.Rounded).AddColumn("kernel").AddColumn("shape").AddColumn("pass")
            .AddColumn(new TableColumn("ms").RightAligned()).AddColumn(new TableColumn("GFLOP/s").RightAligned());
        foreach (var r in rows)
        {
            table.AddRow(Markup.Escape(r.Kernel), Markup.Escape(r.Shape), r.Pass, r.Ms.ToString("F2", CultureInfo.InvariantCulture), r.Gflops.ToString("F1", CultureInfo.InvariantCulture));
        }
        console.Write(table);
        return rows;
    }

    private static double Time(Backend backend, int repeats, Action action) => new BenchTimer(backend, repeats).Median(action);
}

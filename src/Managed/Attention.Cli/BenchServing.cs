using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Attention.Native.Inference;
using Attention.Native.Ops;
using Attention.Native.Variants;

namespace Attention.Cli;

/// <summary>
/// <c>attn bench --serving</c>: a synthetic continuous-batching trace through one layer's <see cref="ServingPool"/>. Prompt
/// lengths are drawn uniformly (seeded) from a range, and every sequence then generates the same number of tokens. The
/// scheduler admits sequences in order while fewer than the most active are alive and the pages they will need at their full
/// length (prompt + generated) fit beside the pages the active ones will need at theirs, so no step ever runs out of pages;
/// each round it runs one prefill step (up to a chunk of prompt tokens, packed from the sequences still prefilling, oldest
/// first) and one decode step (the next token of every sequence whose prompt is in), then releases the sequences that are
/// done. Prefill and decode steps are timed apart (synchronised), so their tokens/s are separate, and every decode step's
/// time is a latency sample. Cache memory is the pool's peak bytes in use against contiguous caches of the longest sequence
/// for every sequence (vLLM's comparison). Inputs are random; their values do not change the work.
/// </summary>
internal static class BenchServing
{
    /// <summary>The trace's shape and the pool's and scheduler's limits.</summary>
    internal sealed record Trace(int Sequences, int PromptMin, int PromptMax, int Generate, int PageSize, int TokenBudget, int MaxBatch, int PrefillChunk, int Seed)
    {
        /// <summary>The full trace (on CUDA): 64 sequences of 128 to 8k prompt tokens generating 256 each, a 128k-token pool.</summary>
        public static Trace Full { get; } = new(64, 128, 8192, 256, 16, 131072, 64, 2048, 1);

        /// <summary>The trace the CPU runs by default: the same scheduling in a few seconds.</summary>
        public static Trace Cpu { get; } = new(8, 16, 64, 8, 16, 256, 8, 64, 1);

        /// <summary>The longest a sequence can get: the longest prompt and its generated tokens.</summary>
        public long LongestPossible => (long)PromptMax + Generate;

        /// <summary>The prompt lengths, uniform in [<see cref="PromptMin"/>, <see cref="PromptMax"/>], the same for the same seed.</summary>
        public int[] Prompts()
        {
            var random = new Random(Seed);
            return [.. Enumerable.Range(0, Sequences).Select(_ => random.Next(PromptMin, PromptMax + 1))];
        }

        /// <summary>Refuses a trace that cannot run, naming the option with the expected and actual values.</summary>
        public void Check()
        {
            foreach (var (value, option) in new[] { (Sequences, "--sequences"), (PromptMin, "--prompt-min"), (Generate, "--generate"), (PageSize, "--page-size"), (MaxBatch, "--max-batch"), (PrefillChunk, "--prefill-chunk") })
            {
                if (value < 1)
                {
                    throw new ArgumentException($"{option}: expected a value ≥ 1, actual {value}");
                }
            }
            if (PromptMax < PromptMin || PromptMax == int.MaxValue)
            {
                throw new ArgumentException($"--prompt-max: expected a value in [--prompt-min = {PromptMin}, {int.MaxValue - 1}], actual {PromptMax}");
            }
            if (LongestPossible > int.MaxValue)
            {
                throw new ArgumentException($"--generate: expected at most {int.MaxValue - PromptMax} tokens (a sequence's length must fit an int), actual {Generate}");
            }
            long pages = (LongestPossible + PageSize - 1) / PageSize;
            if (TokenBudget < pages * PageSize)
            {
                throw new ArgumentException($"--token-budget: expected at least the longest sequence's {LongestPossible} tokens (--prompt-max + --generate) in whole pages of {PageSize}, {pages * PageSize}, actual {TokenBudget}");
            }
        }
    }

    /// <summary>One variant's run of the trace.</summary>
    internal sealed record Result(
        string Variant, string Config, int Sequences, long PromptTokens, long GeneratedTokens,
        long PrefillTokens, int PrefillSteps, double PrefillSeconds,
        long DecodeTokens, int DecodeSteps, double DecodeSeconds, double DecodeP50Ms, double DecodeP99Ms,
        long CachedTokens, int MaxActive, int AdmittedWhileDecoding,
        long BytesPerToken, long BytesPerSequence, int LongestSequence, long PeakBytesInUse, long PoolBytes)
    {
        /// <summary>Contiguous caches of the longest sequence for every sequence (plus each one's fixed state, if any).</summary>
        public long ContiguousBytes => Sequences * ((LongestSequence * BytesPerToken) + BytesPerSequence);

        public double? PrefillTokensPerSecond => PrefillSeconds > 0 ? PrefillTokens / PrefillSeconds : null;

        public double? DecodeTokensPerSecond => DecodeSeconds > 0 ? DecodeTokens / DecodeSeconds : null;

        public double MeanDecodeBatch => DecodeSteps == 0 ? 0 : (double)DecodeTokens / DecodeSteps;
    }

    /// <summary>The configs the trace runs: the causal ones of the variants.md benchmark configs, or those of <paramref name="only"/> in its order.</summary>
    public static IReadOnlyList<LayerConfig> Configs(IReadOnlyCollection<string> only)
    {
        var causal = DemoCommand.BenchmarkConfigs(2048).Where(c => c.CacheElementsPerToken is not null).ToList();
        var refused = only.Where(v => !causal.Any(c => c.Variant == v)).ToList();
        if (refused.Count > 0)
        {
            throw new ArgumentException($"--variant: expected causal variants with --serving ({string.Join(", ", causal.Select(c => c.Variant))}), actual {string.Join(", ", refused)}");
        }
        return only.Count == 0 ? causal : [.. only.Distinct().Select(v => causal.First(c => c.Variant == v))];
    }

    /// <summary>Runs the trace through a fresh layer (random parameters) and pool of <paramref name="config"/>.</summary>
    public static Result Run(Backend backend, LayerConfig config, DType dtype, Trace trace)
    {
        using var layer = (CausalAttentionLayer)AttentionLayer.Create(config, backend, dtype);
        layer.InitializeParameters(1);
        using var pool = new ServingPool(layer, new ServingPoolOptions(trace.TokenBudget, trace.PageSize, trace.MaxBatch));
        int width = config.DModel;
        // One block of random rows, sliced for every step (a copy on the device, made before the clock starts).
        int rows = Math.Max(trace.PrefillChunk, trace.MaxBatch);
        using var source = RandomRows(backend, rows, width, dtype);
        Tensor Input(int tokens) => Columns.Slice(source, 0, tokens * width);
        double Timed(Func<Tensor> step)
        {
            backend.Synchronize();
            var clock = Stopwatch.StartNew();
            using var y = step();
            backend.Synchronize();
            return clock.Elapsed.TotalSeconds;
        }

        // Warm-up (kernels compiled, code jitted) with one sequence, which also shows a sequence's fixed bytes: a fresh
        // sequence holds no page, only its state slot if the variant keeps one.
        var warm = pool.Admit();
        long bytesPerSequence = pool.BytesInUse;
        int warmPrompt = Math.Min(trace.PromptMin, trace.PrefillChunk);
        using (var x = Input(warmPrompt))
        {
            Timed(() => pool.Step([warm], x.Reshape(new Shape(1, warmPrompt, width)), SequenceLayout.FromLengths(warmPrompt)));
        }
        using (var x = Input(1))
        {
            Timed(() => pool.Decode([warm], x.Reshape(new Shape(1, 1, width))));
            Timed(() => pool.Decode([warm], x.Reshape(new Shape(1, 1, width))));
        }
        pool.Release(warm);

        var prompts = trace.Prompts();
        int PagesAtEnd(int prompt) => pool.PageCount == 0 ? 0 : (prompt + trace.Generate + trace.PageSize - 1) / trace.PageSize;
        var active = new List<Live>();
        var latencies = new List<double>();
        int next = 0, reserved = 0, maxActive = 0, admittedWhileDecoding = 0, prefillSteps = 0;
        long prefillTokens = 0, decodeTokens = 0, cachedTokens = 0, peak = 0;
        double prefillSeconds = 0;
        while (next < prompts.Length || active.Count > 0)
        {
            bool decoding = active.Any(s => s.Prefilled == s.Prompt);
            while (next < prompts.Length && active.Count < trace.MaxBatch && reserved + PagesAtEnd(prompts[next]) <= pool.PageCount)
            {
                active.Add(new Live(pool.Admit(), prompts[next]));
                reserved += PagesAtEnd(prompts[next]);
                admittedWhileDecoding += decoding ? 1 : 0;
                next++;
            }
            if (active.Count == 0)
            {
                // Trace.Check makes the longest sequence fit an empty pool; this would be a scheduler bug, not a slow run.
                throw new InvalidOperationException($"serving trace: sequence {next} ({prompts[next]} + {trace.Generate} tokens) cannot be admitted to an empty pool of {pool.PageCount} pages");
            }
            maxActive = Math.Max(maxActive, active.Count);

            var filling = new List<(Live Sequence, int Tokens)>();
            int room = trace.PrefillChunk;
            foreach (var s in active.Where(s => s.Prefilled < s.Prompt))
            {
                if (room == 0)
                {
                    break;
                }
                int n = Math.Min(s.Prompt - s.Prefilled, room);
                filling.Add((s, n));
                room -= n;
            }
            if (filling.Count > 0)
            {
                int tokens = trace.PrefillChunk - room;
                using var x = Input(tokens);
                var packed = x.Reshape(new Shape(1, tokens, width));
                SequenceId[] ids = [.. filling.Select(f => f.Sequence.Id)];
                var layout = SequenceLayout.FromLengths([.. filling.Select(f => f.Tokens)]);
                prefillSeconds += Timed(() => pool.Step(ids, packed, layout));
                prefillSteps++;
                prefillTokens += tokens;
                foreach (var (s, n) in filling)
                {
                    s.Prefilled += n;
                }
                peak = Math.Max(peak, pool.BytesInUse);
            }

            var decoders = active.Where(s => s.Prefilled == s.Prompt && s.Generated < trace.Generate).ToList();
            if (decoders.Count > 0)
            {
                using var x = Input(decoders.Count);
                var packed = x.Reshape(new Shape(1, decoders.Count, width));
                SequenceId[] ids = [.. decoders.Select(s => s.Id)];
                latencies.Add(Timed(() => pool.Decode(ids, packed)));
                decodeTokens += decoders.Count;
                foreach (var s in decoders)
                {
                    s.Generated++;
                }
                peak = Math.Max(peak, pool.BytesInUse);
            }

            foreach (var done in active.Where(s => s.Generated == trace.Generate).ToList())
            {
                cachedTokens += pool.Length(done.Id);
                pool.Release(done.Id);
                reserved -= PagesAtEnd(done.Prompt);
                active.Remove(done);
            }
        }

        var sorted = latencies.Order().ToArray();
        return new Result(
            config.Variant, DemoCommand.Describe(config), trace.Sequences, prompts.Sum(p => (long)p), (long)trace.Sequences * trace.Generate,
            prefillTokens, prefillSteps, prefillSeconds,
            decodeTokens, latencies.Count, latencies.Sum(), Percentile(sorted, 0.50) * 1e3, Percentile(sorted, 0.99) * 1e3,
            cachedTokens, maxActive, admittedWhileDecoding,
            pool.BytesPerToken, bytesPerSequence, prompts.Max() + trace.Generate, peak, pool.ByteCount);
    }

    /// <summary>The nearest-rank percentile of <paramref name="sorted"/> (ascending): the smallest sample with at least a fraction <paramref name="q"/> of them at or below it.</summary>
    internal static double Percentile(double[] sorted, double q) =>
        sorted.Length == 0 ? 0 : sorted[Math.Clamp((int)Math.Ceiling(q * sorted.Length) - 1, 0, sorted.Length - 1)];

    private static Tensor RandomRows(Backend backend, int rows, int width, DType dtype)
    {
        var random = new Random(2);
        var values = new float[(long)rows * width];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = (float)((random.NextDouble() * 2) - 1);
        }
        return backend.FromArray(values, new Shape(1, rows * width), dtype);
    }

    /// <summary>
    /// The report: <c>{"device", "backend", "date", "dtype", "trace": {…, "prompt_lengths"}, "rows": [{"variant", "config",
    /// "sequences", "prompt_tokens", "generated_tokens", "prefill_tokens", "decode_tokens", "cached_tokens", "prefill_steps",
    /// "prefill_s", "prefill_tokens_per_s", "decode_steps", "decode_s", "decode_tokens_per_s", "decode_p50_ms", "decode_p99_ms",
    /// "mean_decode_batch", "max_active", "admitted_while_decoding", "bytes_per_token", "bytes_per_sequence",
    /// "longest_sequence", "peak_bytes_in_use", "pool_bytes", "contiguous_bytes", "peak_over_contiguous"}]}</c>.
    /// </summary>
    public static JsonObject Json(string device, string backend, DateTime date, string dtype, Trace trace, IReadOnlyList<Result> rows) => new()
    {
        ["device"] = device,
        ["backend"] = backend,
        ["date"] = date.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture),
        ["dtype"] = dtype,
        ["trace"] = new JsonObject
        {
            ["sequences"] = trace.Sequences,
            ["prompt_min"] = trace.PromptMin,
            ["prompt_max"] = trace.PromptMax,
            ["generate"] = trace.Generate,
            ["seed"] = trace.Seed,
            ["page_size"] = trace.PageSize,
            ["token_budget"] = trace.TokenBudget,
            ["max_batch"] = trace.MaxBatch,
            ["prefill_chunk"] = trace.PrefillChunk,
            ["prompt_lengths"] = new JsonArray([.. trace.Prompts().Select(p => (JsonNode)p)]),
        },
        ["rows"] = new JsonArray([.. rows.Select(r => (JsonNode)new JsonObject
        {
            ["variant"] = r.Variant,
            ["config"] = r.Config,
            ["sequences"] = r.Sequences,
            ["prompt_tokens"] = r.PromptTokens,
            ["generated_tokens"] = r.GeneratedTokens,
            ["prefill_tokens"] = r.PrefillTokens,
            ["decode_tokens"] = r.DecodeTokens,
            ["cached_tokens"] = r.CachedTokens,
            ["prefill_steps"] = r.PrefillSteps,
            ["prefill_s"] = r.PrefillSeconds,
            ["prefill_tokens_per_s"] = r.PrefillTokensPerSecond,
            ["decode_steps"] = r.DecodeSteps,
            ["decode_s"] = r.DecodeSeconds,
            ["decode_tokens_per_s"] = r.DecodeTokensPerSecond,
            ["decode_p50_ms"] = r.DecodeP50Ms,
            ["decode_p99_ms"] = r.DecodeP99Ms,
            ["mean_decode_batch"] = r.MeanDecodeBatch,
            ["max_active"] = r.MaxActive,
            ["admitted_while_decoding"] = r.AdmittedWhileDecoding,
            ["bytes_per_token"] = r.BytesPerToken,
            ["bytes_per_sequence"] = r.BytesPerSequence,
            ["longest_sequence"] = r.LongestSequence,
            ["peak_bytes_in_use"] = r.PeakBytesInUse,
            ["pool_bytes"] = r.PoolBytes,
            ["contiguous_bytes"] = r.ContiguousBytes,
            ["peak_over_contiguous"] = r.ContiguousBytes > 0 ? (double)r.PeakBytesInUse / r.ContiguousBytes : null,
        })]),
    };

    public static string Markdown(string device, string dtype, Trace trace, IReadOnlyList<Result> rows)
    {
        var prompts = trace.Prompts();
        var sb = new StringBuilder();
        sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
            $"Serving trace on {device}, {dtype}: {trace.Sequences} sequences, prompts of {trace.PromptMin}–{trace.PromptMax} tokens (seed {trace.Seed}; {prompts.Sum(p => (long)p)} in all, mean {prompts.Average():F0}), {trace.Generate} generated each; "
            + $"pages of {trace.PageSize} tokens, a pool of {trace.TokenBudget} tokens, at most {trace.MaxBatch} sequences active, prefill chunks of {trace.PrefillChunk} tokens."));
        sb.AppendLine();
        sb.AppendLine("| variant | config | prefill tok/s | decode tok/s | decode step p50 ms | p99 ms | mean batch | max active | admitted while decoding | peak cache MiB | contiguous MiB | peak / contiguous |");
        sb.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in rows)
        {
            double? fraction = r.ContiguousBytes > 0 ? (double)r.PeakBytesInUse / r.ContiguousBytes : null;
            sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {r.Variant} | {r.Config} | {F(r.PrefillTokensPerSecond, "F0")} | {F(r.DecodeTokensPerSecond, "F0")} | {r.DecodeP50Ms:F3} | {r.DecodeP99Ms:F3} | {r.MeanDecodeBatch:F1} | {r.MaxActive} | {r.AdmittedWhileDecoding} | {Mib(r.PeakBytesInUse)} | {Mib(r.ContiguousBytes)} | {F(fraction * 100, "F1")} % |"));
        }
        sb.AppendLine();
        sb.AppendLine("Prefill and decode steps are timed apart (each synchronised); contiguous = sequences × (longest prompt + generated) × cache bytes per token (+ a state per sequence).");
        return sb.ToString();
    }

    /// <summary>Writes <c>&lt;device&gt;-&lt;yyyymmdd&gt;-serving</c> .json and .md into <paramref name="folder"/>; returns the JSON path.</summary>
    public static string Write(string folder, string device, string backend, DateTime date, string dtype, Trace trace, IReadOnlyList<Result> rows)
    {
        Directory.CreateDirectory(folder);
        string stem = Path.Combine(folder, $"{BenchReport.Slug(device)}-{date:yyyyMMdd}-serving");
        File.WriteAllText(stem + ".json", Json(device, backend, date, dtype, trace, rows).ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        File.WriteAllText(stem + ".md", Markdown(device, dtype, trace, rows));
        return stem + ".json";
    }

    private static string Mib(long bytes) => (bytes / (1024.0 * 1024.0)).ToString("F1", CultureInfo.InvariantCulture);

    private static string F(double? value, string format) => value is { } v ? v.ToString(format, CultureInfo.InvariantCulture) : "—";

    /// <summary>A sequence of the trace while it is admitted: prompt tokens in so far, tokens generated so far.</summary>
    private sealed class Live(SequenceId id, int prompt)
    {
        public SequenceId Id { get; } = id;

        public int Prompt { get; } = prompt;

        public int Prefilled { get; set; }

        public int Generated { get; set; }
    }
}

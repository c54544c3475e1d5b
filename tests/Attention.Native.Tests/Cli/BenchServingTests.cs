using System.Text.Json.Nodes;
using Attention.Cli;
using Attention.Native.Tests.Runtime;

namespace Attention.Native.Tests.Cli;

/// <summary><c>attn bench --serving</c> end to end on the CPU backend with a reduced trace: the report's fields agree with each other and with the trace.</summary>
public class BenchServingTests
{
    private static (int Code, string Output, string Error) Run(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = AttnCli.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Test]
    public void A_reduced_trace_reports_consistent_throughput_latency_and_memory()
    {
        using var dir = new TempDirectory();
        const int Sequences = 6, PromptMin = 8, PromptMax = 40, Generate = 5, PageSize = 8, Budget = 128, MaxBatch = 4;
        var (code, output, error) = Run("bench", "--serving", "--backend", "cpu", "--variant", "gqa", "--sequences", $"{Sequences}", "--prompt-min", $"{PromptMin}",
            "--prompt-max", $"{PromptMax}", "--generate", $"{Generate}", "--page-size", $"{PageSize}", "--token-budget", $"{Budget}", "--max-batch", $"{MaxBatch}",
            "--prefill-chunk", "32", "--seed", "7", "--results", dir.Path);
        Assert.That(code, Is.Zero, error);

        string json = Directory.GetFiles(dir.Path, "cpu-*-serving.json").Single();
        string markdown = File.ReadAllText(Path.ChangeExtension(json, ".md"));
        var report = JsonNode.Parse(File.ReadAllText(json))!;
        var trace = report["trace"]!;
        var prompts = trace["prompt_lengths"]!.AsArray().Select(p => (int)p!).ToArray();
        var row = report["rows"]!.AsArray().Single()!;
        long L(string name) => (long)row[name]!;
        double D(string name) => (double)row[name]!;
        Assert.Multiple(() =>
        {
            Assert.That(((string)report["dtype"]!, (string)row["variant"]!), Is.EqualTo(("f32", "gqa")));
            Assert.That(((int)trace["sequences"]!, (int)trace["generate"]!, (int)trace["page_size"]!, (int)trace["token_budget"]!, (int)trace["seed"]!),
                Is.EqualTo((Sequences, Generate, PageSize, Budget, 7)), "the options as given");
            Assert.That(prompts, Has.Length.EqualTo(Sequences).And.All.InRange(PromptMin, PromptMax));

            // Tokens: every prompt token prefilled once, every generated token decoded once, all of them cached at release.
            Assert.That(L("prompt_tokens"), Is.EqualTo(prompts.Sum()));
            Assert.That(L("generated_tokens"), Is.EqualTo(Sequences * Generate));
            Assert.That(L("prefill_tokens"), Is.EqualTo(L("prompt_tokens")));
            Assert.That(L("decode_tokens"), Is.EqualTo(L("generated_tokens")));
            Assert.That(L("cached_tokens"), Is.EqualTo(L("prompt_tokens") + L("generated_tokens")));

            // Steps: each sequence decodes in Generate steps of its own; a step holds at most MaxBatch sequences.
            Assert.That(L("decode_steps"), Is.InRange(Math.Max(Generate, (long)Math.Ceiling(Sequences * Generate / (double)MaxBatch)), Sequences * Generate));
            Assert.That(L("prefill_steps"), Is.GreaterThanOrEqualTo((long)Math.Ceiling(prompts.Sum() / 32.0)), "at most a chunk of 32 prompt tokens a step");
            Assert.That(D("mean_decode_batch"), Is.EqualTo((double)L("decode_tokens") / L("decode_steps")).Within(1e-9));
            Assert.That(L("max_active"), Is.InRange(2, MaxBatch));
            Assert.That(L("admitted_while_decoding"), Is.Positive, "the budget holds a few sequences at a time: later ones join while others decode");

            // Throughput and latency.
            Assert.That(D("prefill_tokens_per_s"), Is.EqualTo(L("prefill_tokens") / D("prefill_s")).Within(1e-6).Percent);
            Assert.That(D("decode_tokens_per_s"), Is.EqualTo(L("decode_tokens") / D("decode_s")).Within(1e-6).Percent);
            Assert.That(D("decode_p50_ms"), Is.Positive);
            Assert.That(D("decode_p99_ms"), Is.GreaterThanOrEqualTo(D("decode_p50_ms")));
            Assert.That(D("decode_p99_ms"), Is.LessThanOrEqualTo(D("decode_s") * 1e3), "no step longer than all of them");

            // Memory: gqa's K and V of 4 heads of 128 in f32; whole pages of the pool in use, the longest sequence's at least.
            long perToken = 2 * 4 * 128 * 4, page = PageSize * perToken, longest = prompts.Max() + Generate;
            Assert.That(L("bytes_per_token"), Is.EqualTo(perToken));
            Assert.That(L("longest_sequence"), Is.EqualTo(longest));
            Assert.That(L("contiguous_bytes"), Is.EqualTo(Sequences * longest * perToken));
            Assert.That(L("pool_bytes"), Is.EqualTo(Budget * perToken));
            Assert.That(L("peak_bytes_in_use") % page, Is.Zero, "whole pages");
            Assert.That(L("peak_bytes_in_use"), Is.GreaterThanOrEqualTo((longest + PageSize - 1) / PageSize * page));
            Assert.That(L("peak_bytes_in_use"), Is.LessThanOrEqualTo(L("pool_bytes")));
            Assert.That(L("peak_bytes_in_use"), Is.LessThanOrEqualTo(L("contiguous_bytes")));
            Assert.That(D("peak_over_contiguous"), Is.EqualTo((double)L("peak_bytes_in_use") / L("contiguous_bytes")).Within(1e-12));

            Assert.That(markdown, Does.Contain("| gqa |").And.Contain($"{Sequences} sequences"));
            Assert.That(output, Does.Contain("wrote ").And.Contain("-serving.json"));
        });
    }

    [Test]
    public void The_prompt_lengths_are_drawn_from_the_seed()
    {
        var trace = BenchServing.Trace.Full;
        var prompts = trace.Prompts();
        var again = trace.Prompts();
        Assert.That(again, Is.EqualTo(prompts));
        Assert.That((trace with { Seed = 2 }).Prompts(), Is.Not.EqualTo(prompts));
        Assert.That(prompts, Has.Length.EqualTo(64).And.All.InRange(128, 8192));
        Assert.That(prompts.Max() - prompts.Min(), Is.GreaterThan(4096), "spread over the range, not bunched");
    }

    [Test]
    public void Percentiles_are_nearest_rank()
    {
        var samples = Enumerable.Range(1, 100).Select(i => (double)i).ToArray();
        Assert.That((BenchServing.Percentile(samples, 0.5), BenchServing.Percentile(samples, 0.99), BenchServing.Percentile(samples, 1)), Is.EqualTo((50.0, 99.0, 100.0)));
        Assert.That(BenchServing.Percentile([3.0], 0.99), Is.EqualTo(3.0));
    }

    [TestCase("--prompt-min", "50", "--prompt-max: expected a value in [--prompt-min = 50, 2147483646], actual 40")]
    [TestCase("--generate", "2147483640", "--generate: expected at most 2147483607 tokens (a sequence's length must fit an int), actual 2147483640")]
    [TestCase("--generate", "0", "--generate: expected a value ≥ 1, actual 0")]
    [TestCase("--page-size", "0", "--page-size: expected a value ≥ 1, actual 0")]
    [TestCase("--token-budget", "40", "--token-budget: expected at least the longest sequence's 45 tokens (--prompt-max + --generate) in whole pages of 16, 48, actual 40")]
    [TestCase("--variant", "agent", "--variant: expected causal variants with --serving (mha, gqa, mqa, mla, tpa, sas, transnormer, mfa), actual agent")]
    [TestCase("--sweep", null, "--serving: expected either --serving or --sweep, actual both")]
    public void Bad_serving_options_exit_2_with_one_line_naming_the_option(string option, string? value, string message)
    {
        // A small trace, with the option under test given instead of its value here.
        var options = new Dictionary<string, string?> { ["--prompt-max"] = "40", ["--generate"] = "5", [option] = value };
        string[] args = ["bench", "--serving", "--backend", "cpu", .. options.SelectMany(o => o.Value is null ? new[] { o.Key } : [o.Key, o.Value])];
        var (code, _, error) = Run(args);
        Assert.That(code, Is.EqualTo(2), error);
        Assert.That(error.TrimEnd().Split('\n'), Has.Length.EqualTo(1), error);
        Assert.That(error, Does.Contain(message));
    }
}

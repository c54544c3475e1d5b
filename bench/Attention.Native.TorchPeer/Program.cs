// The CPU backend against libtorch (TorchSharp-cpu) on identical shapes, interleaved in one process:
//   dotnet bench/Attention.Native.TorchPeer/bin/Release/net10.0/Attention.Native.TorchPeer.dll [--quick] [--results DIR] [--readme README.md]
// (./build.sh --target=BenchTorch runs it). Writes <results>/cpu-<n>-threads-<date>-torchsharp.md/.json and, with --readme,
// the ratio table between the README's torchsharp-peer markers.
using System.Diagnostics;
using System.Globalization;
using System.Runtime.Intrinsics;
using System.Text;
using System.Text.Json;
using Attention.Native;
using Attention.Native.Ops;
using Attention.Native.TorchSupport;
using TorchSharp;
using TT = TorchSharp.torch.Tensor;
using F = TorchSharp.torch.nn.functional;

const string Policy = "OMP_WAIT_POLICY";
// libgomp reads OMP_WAIT_POLICY once, when it loads, from the process's native environment, which .NET's
// Environment.SetEnvironmentVariable does not change: so the process restarts itself with it set. Without it libtorch's
// worker threads spin after each parallel region and take the cores from our side's threads.
if (Environment.GetEnvironmentVariable(Policy) is null)
{
    var start = new ProcessStartInfo(Environment.ProcessPath!) { UseShellExecute = false };
    start.Environment[Policy] = "PASSIVE";
    foreach (var arg in Environment.GetCommandLineArgs().Skip(Environment.ProcessPath!.EndsWith("dotnet", StringComparison.Ordinal) ? 0 : 1))
    {
        start.ArgumentList.Add(arg);
    }
    using var child = Process.Start(start)!;
    child.WaitForExit();
    return child.ExitCode;
}

bool quick = args.Contains("--quick");
string? Option(string name) => Array.IndexOf(args, name) is int i && i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
string resultsDir = Option("--results") ?? "bench/results";
string? readme = Option("--readme");

if (TorchNativeLoader.Load("run tests/torchsharp/prepare.sh (./build.sh --target=BenchTorch runs it)") is { } problem)
{
    Console.Error.WriteLine($"torch peer: libtorch does not run here: {problem}");
    return 2;
}
int threads = Environment.ProcessorCount; // our CPU backend parallelises over every core
torch.set_num_threads(threads);
var inv = CultureInfo.InvariantCulture;
Console.WriteLine($"libtorch {torch.__version__}, {torch.get_num_threads()} threads; ours {threads} threads; {Policy}={Environment.GetEnvironmentVariable(Policy)}");

double idleCpuMs = IdleCpu();
Console.WriteLine($"CPU time the process burns in 500 ms idle after a libtorch parallel op: {idleCpuMs:F1} ms (with OMP_WAIT_POLICY=ACTIVE its {threads - 1} spinning OpenMP worker(s) burn ~{500 * (threads - 1)} ms)");
// --check-policy: only the idle check above (run once with OMP_WAIT_POLICY=ACTIVE to see that it tells the two apart).
if (args.Contains("--check-policy"))
{
    return 0;
}

var (peak1, peakAll) = (FmaPeak(1), FmaPeak(threads));
double ghz = peak1 / FmaFlopsPerCycle();
Console.WriteLine($"FMA peak measured: {peak1:F1} GFLOP/s on 1 thread ({ghz:F2} GHz × {FmaFlopsPerCycle()} FLOP/cycle), {peakAll:F1} GFLOP/s on {threads}");

var rows = new List<Row>();
var cpu = Backend.Cpu;
int[] lengths = quick ? [512] : [512, 1024, 2048, 4096];
const int B = 1, H = 8;
// Every op once at a small size first, unrecorded: the JIT's tiering (tier 0, then optimised code after ~30 calls and a
// background compile) would otherwise land in the first shape's timings.
bool warming = true;
foreach (int d in new[] { 64, 128 })
{
    Attention(256, d, false);
    Attention(256, d, true);
}
Decode(256, 128);
LinearOp(256, 1024, 1024);
warming = false;
foreach (int d in new[] { 64, 128 })
{
    foreach (bool causal in new[] { false, true })
    {
        foreach (int t in lengths)
        {
            Attention(t, d, causal);
        }
    }
}
foreach (int t in lengths)
{
    Decode(t, 128);
}
foreach (int t in quick ? new[] { 512 } : new[] { 512, 2048 })
{
    LinearOp(t, 1024, 1024);
}

string device = $"cpu-{threads}-threads";
string date = DateTime.UtcNow.ToString("yyyyMMdd", inv);
Directory.CreateDirectory(resultsDir);
string stem = Path.Combine(resultsDir, $"{device}-{date}-torchsharp");
var report = new Report(device, DateTime.UtcNow.ToString("u", inv), CpuModel(), torch.__version__, threads,
    Environment.GetEnvironmentVariable(Policy) ?? "", idleCpuMs, peak1, peakAll, ghz, rows);
File.WriteAllText(stem + ".json", JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true }));
string table = Markdown(report);
File.WriteAllText(stem + ".md", table);
Console.WriteLine(table);
Console.WriteLine($"wrote {stem}.md and .json");
if (readme is not null)
{
    const string begin = "<!-- torchsharp-peer:begin -->", end = "<!-- torchsharp-peer:end -->";
    string text = File.ReadAllText(readme);
    int a = text.IndexOf(begin, StringComparison.Ordinal), b = text.IndexOf(end, StringComparison.Ordinal);
    if (a < 0 || b < a)
    {
        Console.Error.WriteLine($"{readme}: no {begin} … {end} block to fill");
        return 1;
    }
    File.WriteAllText(readme, string.Concat(text.AsSpan(0, a + begin.Length), "\n", table, text.AsSpan(b)));
    Console.WriteLine($"updated {readme}");
}
return 0;

void Attention(int t, int d, bool causal)
{
    var shape = new Shape(B, t, H, d);
    float[] qv = Values(shape, 1), kv = Values(shape, 2), vv = Values(shape, 3), gv = Values(shape, 4);
    using var q = cpu.FromArray(qv, shape);
    using var k = cpu.FromArray(kv, shape);
    using var v = cpu.FromArray(vv, shape);
    using var dO = cpu.FromArray(gv, shape);
    using var o = cpu.Zeros(shape);
    using var dq = cpu.Zeros(shape);
    using var dk = cpu.Zeros(shape);
    using var dv = cpu.Zeros(shape);
    using var lse = cpu.Zeros(new Shape(B, H, t));
    var options = new AttentionOptions(1 / Math.Sqrt(d), causal);
    // libtorch in its own layout [B, H, T, d] (contiguous), the one its SDPA kernels take without a copy.
    using TT tq = Torch(qv, B, t, H, d), tk = Torch(kv, B, t, H, d), tv = Torch(vv, B, t, H, d), tdo = Torch(gv, B, t, H, d);
    using TT gq = tq.detach().requires_grad_(true), gk = tk.detach().requires_grad_(true), gvv = tv.detach().requires_grad_(true);
    // The graph whose backward is timed alone (retained between runs); its forward also checks the two sides agree.
    using TT graph = F.scaled_dot_product_attention(gq, gk, gvv, is_casual: causal);
    SoftmaxAttention.Forward(q, k, v, options, null, o, lse);
    double diff = MaxDiff(o, graph, B, t, H, d);
    double flops = 4.0 * B * H * t * (double)t * d * (causal ? 0.5 : 1.0);
    string label = $"B {B}, H {H}, T {t}, d {d}{(causal ? ", causal" : "")}";

    var ftime = Interleaved(
        () => SoftmaxAttention.Forward(q, k, v, options, null, o, lse),
        () =>
        {
            using var scope = torch.NewDisposeScope();
            F.scaled_dot_product_attention(tq, tk, tv, is_casual: causal);
        });
    Add("attention forward", label, ftime, flops, 1.2, diff);
    var btime = Interleaved(
        () => SoftmaxAttention.Backward(q, k, v, options, null, o, lse, dO, dq, dk, dv),
        () =>
        {
            using var scope = torch.NewDisposeScope();
            torch.autograd.grad([graph], [gq, gk, gvv], [tdo], retain_graph: true);
        });
    Add("attention backward", label, btime, 2.5 * flops, 1.2, null);
}

void Decode(int t, int d)
{
    var qShape = new Shape(1, 1, H, d);
    var kShape = new Shape(1, t, H, d);
    float[] qv = Values(qShape, 5), kv = Values(kShape, 6), vv = Values(kShape, 7);
    using var q = cpu.FromArray(qv, qShape);
    using var k = cpu.FromArray(kv, kShape);
    using var v = cpu.FromArray(vv, kShape);
    using var o = cpu.Zeros(qShape);
    using var lse = cpu.Zeros(new Shape(1, H, 1));
    // One new token against a cache of t keys: every key is visible, as for the last position of a causal sequence.
    var options = new AttentionOptions(1 / Math.Sqrt(d), false);
    using TT tq = Torch(qv, 1, 1, H, d), tk = Torch(kv, 1, t, H, d), tv = Torch(vv, 1, t, H, d);
    SoftmaxAttention.Forward(q, k, v, options, null, o, lse);
    using (var check = F.scaled_dot_product_attention(tq, tk, tv))
    {
        double diff = MaxDiff(o, check, 1, 1, H, d);
        var mtime = Interleaved(
            () => SoftmaxAttention.Forward(q, k, v, options, null, o, lse),
            () =>
            {
                using var scope = torch.NewDisposeScope();
                F.scaled_dot_product_attention(tq, tk, tv);
            });
        Add("decode step", $"H {H}, 1 query, cache T {t}, d {d}", mtime, 4.0 * H * t * d, null, diff);
    }
}

void LinearOp(int t, int input, int output)
{
    float[] xv = Values(new Shape(t, input), 8), wv = Values(new Shape(output, input), 9), dyv = Values(new Shape(t, output), 10);
    using var x = cpu.FromArray(xv, new Shape(t, input));
    using var w = cpu.FromArray(wv, new Shape(output, input));
    using var y = cpu.Zeros(new Shape(t, output));
    using var dy = cpu.FromArray(dyv, new Shape(t, output));
    using var dx = cpu.Zeros(x.Shape);
    using var dw = cpu.Zeros(w.Shape);
    using TT tx = torch.tensor(xv, [t, input]), tw = torch.tensor(wv, [output, input]), tdy = torch.tensor(dyv, [t, output]);
    using TT gx = tx.detach().requires_grad_(true), gw = tw.detach().requires_grad_(true);
    using TT graph = F.linear(gx, gw);
    Linear.Forward(x, w, null, y);
    double diff = y.ToArray().Zip(graph.detach().data<float>().ToArray(), (p, r) => (double)Math.Abs(p - r)).Max();
    double flops = 2.0 * t * input * output;
    string label = $"[{t}, {input}] × [{output}, {input}]ᵀ";
    var ftime = Interleaved(
        () => Linear.Forward(x, w, null, y),
        () =>
        {
            using var scope = torch.NewDisposeScope();
            F.linear(tx, tw);
        });
    Add("Linear forward", label, ftime, flops, 1.0, diff);
    var btime = Interleaved(
        () => Linear.Backward(x, w, dy, dx, dw, null),
        () =>
        {
            using var scope = torch.NewDisposeScope();
            torch.autograd.grad([graph], [gx, gw], [tdy], retain_graph: true);
        });
    Add("Linear backward (dx, dW)", label, btime, 2 * flops, 1.0, null);
}

void Add(string op, string shape, Timing timing, double flops, double? target, double? diff)
{
    var (ours, theirs, repeats) = (timing.Ours, timing.Theirs, timing.Repeats);
    if (warming)
    {
        return;
    }
    double gflops = flops / (ours * 1e-3) / 1e9;
    var row = new Row(op, shape, ours, theirs, theirs / ours, gflops, flops / (theirs * 1e-3) / 1e9, gflops / peakAll, target, repeats, diff,
        timing.OursMin, timing.OursMax, timing.TheirsMin, timing.TheirsMax);
    rows.Add(row);
    Console.WriteLine($"{op,-26} {shape,-32} ours {ours,9:F3} ms  libtorch {theirs,9:F3} ms  ×{row.Ratio:F2}  {gflops,6:F1} GFLOP/s ({row.FractionOfPeak:P0} of peak)  n={repeats}{(diff is { } x ? $"  max|Δo| {x:E1}" : "")}");
}

// Warms both sides, then alternates them (the order flipping every round, so neither always runs on the caches the other
// left) and returns each side's median in ms.
static Timing Interleaved(Action ours, Action theirs)
{
    static double Warm(Action action)
    {
        var clock = Stopwatch.StartNew();
        double best = double.MaxValue;
        for (int i = 0; i < 2 || (clock.Elapsed.TotalSeconds < 0.3 && i < 50); i++)
        {
            best = Math.Min(best, Time(action));
        }
        return best;
    }
    double a = Warm(ours), b = Warm(theirs);
    int repeats = Math.Clamp((int)Math.Ceiling(2000 / (a + b)), 7, 41);
    var mine = new double[repeats];
    var other = new double[repeats];
    for (int i = 0; i < repeats; i++)
    {
        if (i % 2 == 0)
        {
            mine[i] = Time(ours);
            other[i] = Time(theirs);
        }
        else
        {
            other[i] = Time(theirs);
            mine[i] = Time(ours);
        }
    }
    return new Timing(Median(mine), Median(other), repeats, mine.Min(), mine.Max(), other.Min(), other.Max());
}

static double Time(Action action)
{
    long start = Stopwatch.GetTimestamp();
    action();
    return Stopwatch.GetElapsedTime(start).TotalMilliseconds;
}

static double Median(double[] values)
{
    var sorted = values.Order().ToArray();
    int n = sorted.Length;
    return n % 2 == 1 ? sorted[n / 2] : (sorted[(n / 2) - 1] + sorted[n / 2]) / 2;
}

static float[] Values(Shape shape, int seed)
{
    var random = new Random(seed);
    var values = new float[shape.ElementCount];
    for (int i = 0; i < values.Length; i++)
    {
        values[i] = (float)((random.NextDouble() * 2) - 1);
    }
    return values;
}

// [B, T, H, d] values as a contiguous [B, H, T, d] torch tensor.
static TT Torch(float[] values, int b, int t, int h, int d)
{
    using var tokenMajor = torch.tensor(values, [b, t, h, d]);
    using var view = tokenMajor.permute(0, 2, 1, 3);
    return view.contiguous();
}

static double MaxDiff(Tensor ours, TT theirs, int b, int t, int h, int d)
{
    using var view = theirs.detach().permute(0, 2, 1, 3);
    using var tokenMajor = view.contiguous();
    return ours.ToArray().Zip(tokenMajor.data<float>().ToArray(), (p, r) => (double)Math.Abs(p - r)).Max();
}

// CPU time the process spends while its threads should all sleep, right after a libtorch op that ran on every thread.
static double IdleCpu()
{
    using (var a = torch.rand(512, 512))
    using (var m = a.matmul(a))
    {
    }
    var process = Process.GetCurrentProcess();
    process.Refresh();
    var before = process.TotalProcessorTime;
    Thread.Sleep(500);
    process.Refresh();
    return (process.TotalProcessorTime - before).TotalMilliseconds;
}

// FP32 FLOPs one core retires per cycle at the vector width .NET uses here, with two FMA pipes (Zen 4/5, Intel server cores).
static int FmaFlopsPerCycle() => 2 * 2 * (Vector512.IsHardwareAccelerated ? 16 : Vector256.IsHardwareAccelerated ? 8 : 4);

// Best of three: independent FMA chains (more than latency × pipes in flight) on `threads` threads at once.
static double FmaPeak(int threads)
{
    const long iterations = 20_000_000;
    double best = 0;
    for (int round = 0; round < 3; round++)
    {
        var clock = Stopwatch.StartNew();
        Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, i => Sink.Value += Chains(iterations));
        double seconds = clock.Elapsed.TotalSeconds;
        best = Math.Max(best, threads * iterations * 12.0 * 2 * Vector512<float>.Count / seconds / 1e9);
    }
    return best;
}

static float Chains(long iterations)
{
    var m = Vector512.Create(0.9999999f);
    var c = Vector512.Create(1e-7f);
    Vector512<float> x0 = Vector512.Create(0.1f), x1 = Vector512.Create(0.2f), x2 = Vector512.Create(0.3f), x3 = Vector512.Create(0.4f);
    Vector512<float> x4 = Vector512.Create(0.5f), x5 = Vector512.Create(0.6f), x6 = Vector512.Create(0.7f), x7 = Vector512.Create(0.8f);
    Vector512<float> x8 = Vector512.Create(0.9f), x9 = Vector512.Create(1.0f), x10 = Vector512.Create(1.1f), x11 = Vector512.Create(1.2f);
    for (long i = 0; i < iterations; i++)
    {
        x0 = Vector512.FusedMultiplyAdd(x0, m, c); x1 = Vector512.FusedMultiplyAdd(x1, m, c); x2 = Vector512.FusedMultiplyAdd(x2, m, c);
        x3 = Vector512.FusedMultiplyAdd(x3, m, c); x4 = Vector512.FusedMultiplyAdd(x4, m, c); x5 = Vector512.FusedMultiplyAdd(x5, m, c);
        x6 = Vector512.FusedMultiplyAdd(x6, m, c); x7 = Vector512.FusedMultiplyAdd(x7, m, c); x8 = Vector512.FusedMultiplyAdd(x8, m, c);
        x9 = Vector512.FusedMultiplyAdd(x9, m, c); x10 = Vector512.FusedMultiplyAdd(x10, m, c); x11 = Vector512.FusedMultiplyAdd(x11, m, c);
    }
    return Vector512.Sum(x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7 + x8 + x9 + x10 + x11);
}

static string CpuModel()
{
    try
    {
        return File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "unknown";
    }
    catch (IOException)
    {
        return "unknown";
    }
}

static string Markdown(Report r)
{
    var inv = CultureInfo.InvariantCulture;
    var s = new StringBuilder();
    s.AppendLine(inv, $"Measured {r.Date} by `./build.sh --target=BenchTorch`: {r.Cpu}, {r.Threads} threads on both sides, F32, libtorch {r.Libtorch} (TorchSharp-cpu) with OMP_WAIT_POLICY={r.WaitPolicy}; each shape interleaved (medians of n alternating runs after warm-up). Ratio = libtorch ms / ours ms (> 1: ours faster). GFLOP/s as FlashAttention counts (forward 4·T²·d·H, halved when causal; backward 2.5× forward); % of peak against the FMA peak measured in the same run, {r.PeakAll:F0} GFLOP/s on {r.Threads} threads (independent vector FMA chains, whatever the core's vector width and clock give). Backward timed alone: ours from a saved o and lse, libtorch's `autograd.grad` on a retained SDPA graph.");
    s.AppendLine();
    s.AppendLine("| op | shape | ours ms | libtorch ms | ratio | ours GFLOP/s | libtorch GFLOP/s | ours % of peak | target |");
    s.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|---|");
    foreach (var row in r.Rows)
    {
        string target = row.Target is { } t ? $"≥ {t:F1}× {(row.Ratio >= t ? "met" : "**missed**")}" : "–";
        s.AppendLine(inv, $"| {row.Op} | {row.Shape} | {row.OursMs:F3} | {row.TorchMs:F3} | {row.Ratio:F2} | {row.OursGflops:F1} | {row.TorchGflops:F1} | {row.FractionOfPeak * 100:F0} % | {target} |");
    }
    s.AppendLine();
    var missed = r.Rows.Where(x => x.Target is { } t && x.Ratio < t).ToList();
    s.AppendLine(inv, $"Ratio targets (attention ≥ 1.2×, `Linear` ≥ 1.0×): {r.Rows.Count(x => x.Target is not null) - missed.Count} of {r.Rows.Count(x => x.Target is not null)} met{(missed.Count == 0 ? "" : "; missed: " + string.Join("; ", missed.Select(x => $"{x.Op}, {x.Shape} ({x.Ratio:F2}×)")))}.");
    var attention = r.Rows.Where(x => x.Op.StartsWith("attention", StringComparison.Ordinal)).ToList();
    int half = attention.Count(x => x.FractionOfPeak >= 0.5);
    s.AppendLine(inv, $"Attention at ≥ 50 % of the FMA peak: {half} of {attention.Count} rows (ours {attention.Min(x => x.FractionOfPeak) * 100:F0}–{attention.Max(x => x.FractionOfPeak) * 100:F0} %).");
    return s.ToString();
}

internal sealed record Row(string Op, string Shape, double OursMs, double TorchMs, double Ratio, double OursGflops, double TorchGflops,
    double FractionOfPeak, double? Target, int Repeats, double? MaxAbsDiff, double OursMinMs, double OursMaxMs, double TorchMinMs, double TorchMaxMs);

/// <summary>Medians of the interleaved runs, and each side's fastest and slowest run.</summary>
internal sealed record Timing(double Ours, double Theirs, int Repeats, double OursMin, double OursMax, double TheirsMin, double TheirsMax);

internal sealed record Report(string Device, string Date, string Cpu, string Libtorch, int Threads, string WaitPolicy, double IdleCpuMs,
    double PeakOneThread, double PeakAll, double Ghz, List<Row> Rows);

internal static class Sink
{
    public static float Value;
}

using System.Diagnostics;
using System.Globalization;
using Attention.Native.Ops;
using Attention.Native.Runtime;
using Attention.Native.Variants;
using Spectre.Console;

namespace Attention.Cli;

/// <summary>
/// <c>attn bench --sweep</c>: issue 5's measurements, each a median of timed runs after warm-up (CUDA events on the GPU).
/// <list type="bullet">
/// <item>the softmax-attention core (H 16, d 128), forward and backward, causal and not, at B·T = <c>tokens</c>;</item>
/// <item>the Lightning Attention-2 core (H 16, d 128), forward + backward;</item>
/// <item>GQA decode (H 16, G 4, d 128) against a 32k cache, the cache read at GB/s, and (GPU) a device-to-device copy's GB/s,
/// the yardstick the report relates every decode row to;</item>
/// <item>every variant's layer at its variants.md benchmark config: forward and backward at B·T = <c>tokens</c>, and
/// (causal variants) one decode step against a cache of T tokens.</item>
/// </list>
/// TFLOP/s is counted as FlashAttention does (2·T²·H·(d_qk + d_v) per sequence, halved when causal; backward 2.5×), for
/// layers the attention core only; decode GB/s counts the cache and parameter bytes a step must read.
/// </summary>
internal static class BenchSweep
{
    /// <summary>What to sweep.</summary>
    internal sealed record Options(int Tokens, int[] Lengths, int Repeats, IReadOnlyCollection<string> Variants, int DecodeCache = 32768);

    /// <summary>The reduced sweep the CPU backend runs (the full one would take hours there).</summary>
    internal static Options CpuOptions(Options full) => full with { Tokens = 128, Lengths = [64, 128], Repeats = Math.Min(full.Repeats, 3), DecodeCache = 256 };

    private const int CoreHeads = 16, CoreWidth = 128;
    private static readonly bool[] CausalModes = [false, true];

    public static List<BenchReport.Measurement> Run(IAnsiConsole console, Backend backend, Options options)
    {
        var dtype = backend.Kind == BackendKind.Cuda ? DType.BF16 : DType.F32;
        string type = dtype == DType.BF16 ? "bf16" : "f32";
        var rows = new List<BenchReport.Measurement>();
        var configs = DemoCommand.BenchmarkConfigs(2048).Where(c => options.Variants.Count == 0 || options.Variants.Contains(c.Variant)).ToList();
        int steps = (options.Lengths.Length * 5) + 2 + configs.Sum(c => 3 * (c is AgentConfig or FlattenConfig ? 1 : options.Lengths.Length));
        console.MarkupLine(Markup.Escape($"attn bench --sweep on {backend.Name}, {type}, B·T = {options.Tokens}, T ∈ {{{string.Join(", ", options.Lengths)}}}, median of {options.Repeats}"));
        console.Progress().AutoClear(false).Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn()).Start(progress =>
        {
            var task = progress.AddTask("measuring", maxValue: steps);
            void Step(string what)
            {
                task.Description = Markup.Escape(what);
                task.Increment(1);
            }
            var timer = new BenchTimer(backend, options.Repeats);
            foreach (int t in options.Lengths)
            {
                int b = Math.Max(1, options.Tokens / t);
                foreach (bool causal in CausalModes)
                {
                    var (fwd, bwd) = Core(backend, timer, dtype, b, t, causal);
                    double flops = AttentionFlops(b, t, CoreHeads, CoreWidth, CoreWidth, causal);
                    rows.Add(new("forward", "mha", type, causal, t, fwd, Tflops(flops, fwd), null));
                    Step($"core T={t}{(causal ? " causal" : "")} forward");
                    rows.Add(new("backward", "mha", type, causal, t, bwd, Tflops(2.5 * flops, bwd), null));
                    Step($"core T={t}{(causal ? " causal" : "")} backward");
                }
                rows.Add(new("forward+backward", "transnormer", type, true, t, LightningCore(backend, timer, dtype, b, t), null, null));
                Step($"lightning T={t}");
            }
            var (decodeMs, cacheBytes) = GqaDecodeCore(backend, timer, dtype, options.DecodeCache);
            rows.Add(new("decode", "gqa", type, true, options.DecodeCache, decodeMs, null, cacheBytes / (decodeMs * 1e-3) / 1e9));
            Step("gqa decode core");
            if (backend is CudaBackend gpu)
            {
                // The yardstick of decode's GB/s: this device's own device-to-device copy, in this run.
                var (copyMs, copyBytes) = DeviceCopy(gpu, timer);
                rows.Add(new("copy", "device-to-device", type, false, 0, copyMs, null, copyBytes / (copyMs * 1e-3) / 1e9));
            }
            Step("device-to-device copy");
            foreach (var config in configs)
            {
                // agent and flatten have their sequence length in the config (3136): one length, the batch filling B·T.
                bool fixedLength = config is AgentConfig or FlattenConfig;
                foreach (int t in fixedLength ? [FixedLength(config)] : options.Lengths)
                {
                    int b = Math.Max(1, options.Tokens / t);
                    var (fwd, bwd) = Layer(backend, timer, config, dtype, b, t);
                    bool causal = config is not (AgentConfig or FlattenConfig);
                    double? flops = CoreFlops(config, b, t, causal);
                    rows.Add(new("layer forward", config.Variant, type, causal, t, fwd, flops is { } f ? Tflops(f, fwd) : null, null));
                    Step($"{config.Variant} T={t} forward");
                    rows.Add(new("layer backward", config.Variant, type, causal, t, bwd, flops is { } g ? Tflops(2.5 * g, bwd) : null, null));
                    Step($"{config.Variant} T={t} backward");
                    if (config.CacheElementsPerToken is not null)
                    {
                        var (ms, bytes) = LayerDecode(backend, timer, config, dtype, t);
                        rows.Add(new("layer decode", config.Variant, type, true, t, ms, null, bytes / (ms * 1e-3) / 1e9));
                    }
                    Step($"{config.Variant} T={t} decode");
                }
            }
            task.Value = task.MaxValue;
        });
        return rows;
    }

    /// <summary>FlashAttention's count for one softmax attention: 2·T²·H·(d_qk + d_v) per sequence, halved when causal.</summary>
    internal static double AttentionFlops(int batch, int t, int heads, int dqk, int dv, bool causal) =>
        2.0 * batch * heads * (double)t * t * (dqk + dv) * (causal ? 0.5 : 1.0);

    /// <summary>The attention-core FLOPs of a layer's forward, for the softmax variants; null for the linear ones.</summary>
    internal static double? CoreFlops(LayerConfig config, int batch, int t, bool causal) => config switch
    {
        GqaConfig c => AttentionFlops(batch, t, c.Heads, c.HeadDim, c.HeadDim, causal),
        MlaConfig c => AttentionFlops(batch, t, c.Heads, c.QkNopeHeadDim + c.QkRopeHeadDim, c.VHeadDim, causal),
        TpaConfig c => AttentionFlops(batch, t, c.Heads, c.HeadDim, c.HeadDim, causal),
        SasConfig c => AttentionFlops(batch, t, c.SimHeads, c.SimHeadDim, c.HeadDim, causal),
        MfaConfig c => AttentionFlops(batch, t, c.Heads, c.HeadDim, c.HeadDim, causal),
        _ => null,
    };

    private static double Tflops(double flops, double ms) => flops / (ms * 1e-3) / 1e12;

    private static int FixedLength(LayerConfig config) => config switch
    {
        AgentConfig a => a.SeqLen,
        FlattenConfig f => f.SeqLen,
        _ => throw new ArgumentException($"config: expected agent or flatten, actual {config.Variant}", nameof(config)),
    };

    internal static Tensor Random(Backend backend, Shape shape, DType dtype, int seed, double scale = 1.0)
    {
        var random = new Random(seed);
        var values = new float[shape.ElementCount];
        for (int i = 0; i < values.Length; i++)
        {
            values[i] = (float)(((random.NextDouble() * 2) - 1) * scale);
        }
        return backend.FromArray(values, shape, dtype);
    }

    private static (double Forward, double Backward) Core(Backend backend, BenchTimer timer, DType dtype, int b, int t, bool causal)
    {
        var shape = new Shape(b, t, CoreHeads, CoreWidth);
        using var q = Random(backend, shape, dtype, 1);
        using var k = Random(backend, shape, dtype, 2);
        using var v = Random(backend, shape, dtype, 3);
        using var dO = Random(backend, shape, dtype, 4);
        using var o = backend.Zeros(shape, dtype);
        using var dq = backend.Zeros(shape, dtype);
        using var dk = backend.Zeros(shape, dtype);
        using var dv = backend.Zeros(shape, dtype);
        using var lse = backend.Zeros(new Shape(b, CoreHeads, t), DType.F32);
        var options = new AttentionOptions(1 / Math.Sqrt(CoreWidth), causal);
        double fwd = timer.Median(() => SoftmaxAttention.Forward(q, k, v, options, null, o, lse));
        double bwd = timer.Median(() => SoftmaxAttention.Backward(q, k, v, options, null, o, lse, dO, dq, dk, dv));
        return (fwd, bwd);
    }

    private static double LightningCore(Backend backend, BenchTimer timer, DType dtype, int b, int t)
    {
        var shape = new Shape(b, t, CoreHeads, CoreWidth);
        // Scaled as the peer's: q, k of unit-ish norm keep the decayed sums in range.
        double scale = 1 / Math.Sqrt(CoreWidth);
        using var q = Random(backend, shape, dtype, 5, scale);
        using var k = Random(backend, shape, dtype, 6, scale);
        using var v = Random(backend, shape, dtype, 7, scale);
        using var dO = Random(backend, shape, dtype, 8);
        using var o = backend.Zeros(shape, dtype);
        using var dq = backend.Zeros(shape, dtype);
        using var dk = backend.Zeros(shape, dtype);
        using var dv = backend.Zeros(shape, dtype);
        // TransNormerLLM's decay for layer 0 (variants.md), as the peer uses.
        var decay = Enumerable.Range(0, CoreHeads).Select(h => Math.Exp(-Math.Pow(2, -8.0 * (h + 1) / CoreHeads))).ToArray();
        return timer.Median(() =>
        {
            Lightning.Forward(q, k, v, decay, o, null, null);
            Lightning.Backward(q, k, v, decay, dO, dq, dk, dv);
        });
    }

    private static (double Ms, double Bytes) GqaDecodeCore(Backend backend, BenchTimer timer, DType dtype, int cache)
    {
        const int kvHeads = 4;
        using var q = Random(backend, new Shape(1, 1, CoreHeads, CoreWidth), dtype, 9);
        using var k = Random(backend, new Shape(1, cache, kvHeads, CoreWidth), dtype, 10);
        using var v = Random(backend, new Shape(1, cache, kvHeads, CoreWidth), dtype, 11);
        using var o = backend.Zeros(q.Shape, dtype);
        using var lse = backend.Zeros(new Shape(1, CoreHeads, 1), DType.F32);
        var options = new AttentionOptions(1 / Math.Sqrt(CoreWidth), true);
        double ms = timer.Median(() => SoftmaxAttention.Forward(q, k, v, options, null, o, lse));
        return (ms, 2.0 * k.Shape.ElementCount * dtype.SizeInBytes());
    }

    /// <summary>A 256 MiB device-to-device copy (past any L2), as the peers' torch copy; bytes read plus bytes written.</summary>
    private static (double Ms, double Bytes) DeviceCopy(CudaBackend gpu, BenchTimer timer)
    {
        const long size = 1L << 28;
        using var source = gpu.Context.Allocate<byte>(size);
        using var destination = gpu.Context.Allocate<byte>(size);
        source.Zero(gpu.Stream);
        double ms = timer.Median(() => source.CopyTo(destination, gpu.Stream));
        return (ms, 2.0 * size);
    }

    internal static (double Forward, double Backward) Layer(Backend backend, BenchTimer timer, LayerConfig config, DType dtype, int b, int t)
    {
        using var layer = AttentionLayer.Create(config, backend, dtype);
        layer.InitializeParameters(1);
        using var x = Random(backend, new Shape(b, t, config.DModel), dtype, 12);
        using var dy = Random(backend, x.Shape, dtype, 13);
        double fwd = timer.Median(() => layer.Forward(x).Dispose());
        // A pass runs its backward once: each timed backward gets a fresh training forward, run before the clock starts.
        double bwd = timer.Median(() =>
        {
            var pass = layer.ForwardForTraining(x);
            return () =>
            {
                pass.Backward(dy).Dispose();
                pass.Dispose();
            };
        });
        return (fwd, bwd);
    }

    private static (double Ms, double Bytes) LayerDecode(Backend backend, BenchTimer timer, LayerConfig config, DType dtype, int t)
    {
        using var layer = (CausalAttentionLayer)AttentionLayer.Create(config, backend, dtype);
        layer.InitializeParameters(1);
        int steps = timer.Repeats + 2; // one warm-up step, the timed ones, and one to spare
        using var cache = layer.CreateCache(1, new CacheOptions(MaxLength: t + steps));
        using (var prompt = Random(backend, new Shape(1, t, config.DModel), dtype, 14))
        {
            cache.Prefill(prompt).Dispose();
        }
        using var token = Random(backend, new Shape(1, 1, config.DModel), dtype, 15);
        // Each step appends a token: the cache grows from T by at most `steps` (≪ T) while timing.
        double ms = timer.Median(() => cache.DecodeStep(token).Dispose(), warmups: 1, warmSeconds: 0);
        double bytes = ((config.CacheElementsPerToken ?? 0) * (double)t + layer.ParameterCount) * dtype.SizeInBytes();
        return (ms, bytes);
    }
}

/// <summary>Peak figures of the devices the benchmark knows (vendor spec sheets: dense bf16 tensor TFLOP/s, HBM GB/s).</summary>
internal static class DevicePeaks
{
    public static (double? Tflops, double? Gbps) Of(string device) => device switch
    {
        _ when device.Contains("H200", StringComparison.OrdinalIgnoreCase) => (989.4, 4800),
        _ when device.Contains("H100", StringComparison.OrdinalIgnoreCase) && device.Contains("PCIe", StringComparison.OrdinalIgnoreCase) => (756.0, 2000),
        _ when device.Contains("H100", StringComparison.OrdinalIgnoreCase) => (989.4, 3350),
        _ when device.Contains("A100", StringComparison.OrdinalIgnoreCase) => (312.0, 2039),
        _ => (null, null),
    };

    /// <summary>A row's fraction of the device's peak: TFLOP/s over peak TFLOP/s, else GB/s over peak GB/s.</summary>
    public static double? Fraction(string device, double? tflops, double? gbps)
    {
        var (peakTflops, peakGbps) = Of(device);
        return tflops is { } t && peakTflops is { } pt ? t / pt : gbps is { } g && peakGbps is { } pg ? g / pg : null;
    }

    public static string Name(Backend backend) => backend is CudaBackend gpu ? gpu.Device.Name : $"cpu-{Environment.ProcessorCount}-threads";
}

/// <summary>
/// Median milliseconds of timed runs after a warm-up of at least three runs and a quarter second (so tier-1 JIT code and
/// compiled kernels are what gets measured): CUDA events around each run on the GPU, a stopwatch after a synchronise on the CPU.
/// </summary>
internal sealed class BenchTimer(Backend backend, int repeats)
{
    /// <summary>Timed runs per measurement.</summary>
    public int Repeats => repeats;

    public double Median(Action action, int warmups = 3, double warmSeconds = 0.25) => Median(() => action, warmups, warmSeconds);

    /// <summary>As <see cref="Median(Action, int, double)"/>, with untimed set-up before each run: <paramref name="prepare"/>
    /// does it and returns the action to time.</summary>
    public double Median(Func<Action> prepare, int warmups = 3, double warmSeconds = 0.25)
    {
        var warm = Stopwatch.StartNew();
        for (int i = 0; i < warmups || (warm.Elapsed.TotalSeconds < warmSeconds && i < 100); i++)
        {
            prepare()();
        }
        backend.Synchronize();
        var samples = new double[repeats];
        if (backend is CudaBackend gpu)
        {
            using var start = new CudaEvent(gpu.Context);
            using var end = new CudaEvent(gpu.Context);
            for (int i = 0; i < repeats; i++)
            {
                var action = prepare();
                start.Record(gpu.Stream);
                action();
                end.Record(gpu.Stream);
                end.Synchronize();
                samples[i] = CudaEvent.ElapsedMilliseconds(start, end);
            }
        }
        else
        {
            for (int i = 0; i < repeats; i++)
            {
                var action = prepare();
                backend.Synchronize();
                var sw = Stopwatch.StartNew();
                action();
                backend.Synchronize();
                samples[i] = sw.Elapsed.TotalMilliseconds;
            }
        }
        Array.Sort(samples);
        return samples[repeats / 2];
    }
}

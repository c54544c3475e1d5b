using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Attention.Native.Ops;
using Spectre.Console;

namespace Attention.Cli;

/// <summary>
/// <c>attn demo</c>: the ops end to end on the chosen backend. A small attention prologue (normalise,
/// project, rotate) runs forward and backward; each op is timed, and on CUDA each result is compared
/// with the CPU reference.
/// </summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var backendOption = AttnCli.BackendOption();
        var tokensOption = new Option<int>("--tokens") { Description = "sequence length T", DefaultValueFactory = _ => 256 };
        var command = new Command("demo", "Run Linear, RoPE and RMSNorm forward and backward on the chosen backend and report time and accuracy.");
        command.Options.Add(backendOption);
        command.Options.Add(tokensOption);
        command.SetAction(result =>
        {
            var output = result.InvocationConfiguration.Output;
            var backend = AttnCli.SelectBackend(result.GetValue(backendOption)!);
            int tokens = result.GetValue(tokensOption);
            if (tokens < 1)
            {
                result.InvocationConfiguration.Error.WriteLine($"--tokens: expected ≥ 1, actual {tokens}");
                return 2;
            }
            Run(AttnCli.Console(output), backend, tokens);
            return 0;
        });
        return command;
    }

    private sealed record Row(string Op, string Shape, double ForwardMs, double BackwardMs, string Check);

    public static void Run(IAnsiConsole console, Backend backend, int tokens)
    {
        const int batch = 2, dModel = 512, heads = 8, headDim = 64;
        console.MarkupLine($"[bold]Attention.Native demo[/] on [green]{Markup.Escape(backend.Name)}[/]");
        if (ReferenceEquals(backend, Backend.Default))
        {
            console.MarkupLine($"  backend choice: {Markup.Escape(Backend.DefaultReason)}");
        }
        var dtype = backend.Kind == BackendKind.Cuda ? DType.BF16 : DType.F32;
        console.MarkupLine(Markup.Escape($"  x [{batch}, {tokens}, {dModel}] {dtype} → RMSNorm(gain) → Linear → [{batch}, {tokens}, {heads}, {headDim}] → RoPE (half)"));

        var rows = new List<Row>();
        using var inputs = new DemoTensors(backend, dtype, batch, tokens, dModel, heads * headDim);
        var x = inputs.X;
        using var h = backend.Empty(x.Shape, dtype);
        using var q = backend.Empty(new Shape(batch, tokens, heads * headDim), dtype);
        using var dq = backend.Empty(q.Shape, dtype);
        using var dh = backend.Empty(h.Shape, dtype);
        using var dx = backend.Empty(x.Shape, dtype);
        using var dw = backend.Empty(inputs.W.Shape, dtype);
        using var dg = backend.Empty(inputs.G.Shape, dtype);
        var q4 = q.Reshape(new Shape(batch, tokens, heads, headDim));
        var dq4 = dq.Reshape(q4.Shape);

        double f1 = Time(backend, () => RmsNorm.Forward(x, inputs.G, h));
        double f2 = Time(backend, () => Linear.Forward(h, inputs.W, null, q));
        double f3 = Time(backend, () => Rope.Forward(q4, q4, default, 0));
        inputs.Dy.CopyToTensor(dq);
        double b3 = Time(backend, () => Rope.Backward(dq4, dq4, default, 0));
        double b2 = Time(backend, () => Linear.Backward(h, inputs.W, dq, dh, dw, null));
        double b1 = Time(backend, () => RmsNorm.Backward(x, inputs.G, dh, dx, dg));

        string[] checks = backend.Kind == BackendKind.Cuda
            ? CompareWithCpu(inputs, q, dx, dw, dg, batch, tokens, heads, headDim)
            : ["reference", "reference", "reference"];
        rows.Add(new Row("RMSNorm", $"[{batch}, {tokens}, {dModel}]", f1, b1, checks[2]));
        rows.Add(new Row("Linear", $"{dModel} → {heads * headDim}", f2, b2, checks[1]));
        rows.Add(new Row("RoPE", $"[{batch}, {tokens}, {heads}, {headDim}]", f3, b3, checks[0]));

        var table = new Table().Border(TableBorder.Rounded)
            .AddColumn("op").AddColumn("shape").AddColumn(new TableColumn("forward ms").RightAligned())
            .AddColumn(new TableColumn("backward ms").RightAligned()).AddColumn("vs CPU reference");
        foreach (var r in rows)
        {
            table.AddRow(r.Op, Markup.Escape(r.Shape), Ms(r.ForwardMs), Ms(r.BackwardMs), Markup.Escape(r.Check));
        }
        console.Write(table);
        console.MarkupLine($"  checksum of y: {Checksum(q):G6}");
    }

    // Median of 5 timed runs after one warm-up (which also compiles kernels on CUDA).
    private static double Time(Backend backend, Action action)
    {
        action();
        backend.Synchronize();
        var samples = new double[5];
        for (int i = 0; i < samples.Length; i++)
        {
            var sw = Stopwatch.StartNew();
            action();
            backend.Synchronize();
            samples[i] = sw.Elapsed.TotalMilliseconds;
        }
        Array.Sort(samples);
        return samples[samples.Length / 2];
    }

    // Runs the same chain on the CPU from the same inputs and reports max |Δ| relative to (1 + max|ref|).
    private static string[] CompareWithCpu(DemoTensors gpuInputs, Tensor q, Tensor dx, Tensor dw, Tensor dg, int batch, int tokens, int heads, int headDim)
    {
        var cpu = Backend.Cpu;
        using var x = cpu.FromArray(gpuInputs.X.ToArray(), gpuInputs.X.Shape);
        using var g = cpu.FromArray(gpuInputs.G.ToArray(), gpuInputs.G.Shape);
        using var w = cpu.FromArray(gpuInputs.W.ToArray(), gpuInputs.W.Shape);
        using var h = RmsNorm.Forward(x, g);
        using var qq = Linear.Forward(h, w);
        var q4 = qq.Reshape(new Shape(batch, tokens, heads, headDim));
        Rope.Forward(q4, q4);
        using var dq = cpu.FromArray(gpuInputs.Dy.Values, qq.Shape);
        var dq4 = dq.Reshape(q4.Shape);
        Rope.Backward(dq4, dq4);
        using var dh = cpu.Zeros(h.Shape);
        using var dwc = cpu.Zeros(w.Shape);
        Linear.Backward(h, w, dq, dh, dwc, null);
        using var dxc = cpu.Zeros(x.Shape);
        using var dgc = cpu.Zeros(g.Shape);
        RmsNorm.Backward(x, g, dh, dxc, dgc);
        return
        [
            $"y {Error(qq, q)}",
            $"y {Error(qq, q)}; dW {Error(dwc, dw)}",
            $"dx {Error(dxc, dx)}; dgain {Error(dgc, dg)}",
        ];
    }

    private static string Error(Tensor reference, Tensor actual)
    {
        var r = reference.ToArray();
        var a = actual.ToArray();
        double maxRef = 0, maxErr = 0;
        for (int i = 0; i < r.Length; i++)
        {
            maxRef = Math.Max(maxRef, Math.Abs(r[i]));
            maxErr = Math.Max(maxErr, Math.Abs(r[i] - a[i]));
        }
        return (maxErr / (1 + maxRef)).ToString("E1", CultureInfo.InvariantCulture);
    }

    private static double Checksum(Tensor t) => t.ToArray().Sum(v => (double)v);

    private static string Ms(double ms) => ms.ToString(ms < 1 ? "F3" : "F2", CultureInfo.InvariantCulture);

    /// <summary>Deterministic demo inputs on the chosen backend.</summary>
    private sealed class DemoTensors : IDisposable
    {
        public DemoTensors(Backend backend, DType dtype, int batch, int tokens, int dModel, int outFeatures)
        {
            var random = new Random(2024);
            float[] Values(long n, double scale) => Enumerable.Range(0, (int)n).Select(_ => (float)((random.NextDouble() - 0.5) * 2 * scale)).ToArray();
            X = backend.FromArray(Values((long)batch * tokens * dModel, 1), new Shape(batch, tokens, dModel), dtype);
            G = backend.FromArray(Values(dModel, 1), new Shape(dModel), dtype);
            W = backend.FromArray(Values((long)outFeatures * dModel, 1 / Math.Sqrt(dModel)), new Shape(outFeatures, dModel), dtype);
            Dy = new HostValues(Values((long)batch * tokens * outFeatures, 1), dtype);
        }

        public Tensor X { get; }

        public Tensor G { get; }

        public Tensor W { get; }

        public HostValues Dy { get; }

        public void Dispose()
        {
            X.Dispose();
            G.Dispose();
            W.Dispose();
        }
    }

    /// <summary>Values rounded to the run's dtype, so the CPU check sees exactly what the GPU saw.</summary>
    private sealed class HostValues(float[] values, DType dtype)
    {
        public float[] Values { get; } = Round(values, dtype);

        public void CopyToTensor(Tensor t) => t.CopyFrom(Values);

        private static float[] Round(float[] values, DType dtype)
        {
            using var t = Backend.Cpu.FromArray(values, new Shape(values.Length), dtype);
            return t.ToArray();
        }
    }
}

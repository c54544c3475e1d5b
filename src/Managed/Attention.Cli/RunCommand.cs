using System.CommandLine;
using System.Globalization;
using Attention.Native.IO;
using Attention.Native.Ops;
using Attention.Native.Runtime;
using Attention.Native.Variants;

namespace Attention.Cli;

/// <summary>
/// <c>attn run</c>: one layer on files, the way users check this library against a PyTorch model. Reads the config
/// (JSON), the weights and <c>x</c> (safetensors), writes <c>y</c> — and with <c>--grad</c> also <c>dx</c> and
/// <c>grad.&lt;name&gt;</c> for every learnable parameter — into one safetensors file. The computation runs in the dtype of
/// <c>x</c>; weights are converted to it. On bad input: one line on stderr, exit code 2, and no output file.
/// </summary>
internal static class RunCommand
{
    /// <summary>The largest config file read: a config is a few hundred bytes, and the limit stops <c>/dev/urandom</c>-like inputs early.</summary>
    internal const int MaxConfigBytes = 1 << 20;

    public static Command Create()
    {
        var variant = new Option<string>("--variant") { Description = $"one of {string.Join(", ", LayerConfig.Variants)}", Required = true };
        // Paths are strings, not FileInfo: an empty one is then our one-line error rather than a parse failure with the help text.
        var config = new Option<string>("--config") { Description = "JSON file of the variant's config keys", Required = true };
        var weights = new Option<string>("--weights") { Description = "safetensors file of the layer's parameters", Required = true };
        var input = new Option<string>("--input") { Description = "safetensors file holding x [B, T, d_model]", Required = true };
        var output = new Option<string>("--out") { Description = "safetensors file to write (y; with --grad also dx and grad.<parameter>)", Required = true };
        var grad = new Option<string?>("--grad") { Description = "safetensors file holding dy [B, T, d_model]: also run the backward" };
        var decode = new Option<bool>("--decode") { Description = "compute y token by token through the KV cache (causal variants)" };
        var backendOption = AttnCli.BackendOption();
        var command = new Command("run", "Run one attention layer from a config, weights and input files; write its output (and gradients).");
        foreach (var option in new Option[] { variant, config, weights, input, output, grad, decode, backendOption })
        {
            command.Options.Add(option);
        }
        command.SetAction(result => AttnCli.Guard("run", result.InvocationConfiguration.Error, () =>
        {
            var files = new RunFiles(result.GetValue(config)!, result.GetValue(weights)!, result.GetValue(input)!, result.GetValue(output)!, result.GetValue(grad));
            files.Check();
            var backend = AttnCli.SelectBackend(result.GetValue(backendOption)!);
            Run(result.GetValue(variant)!, files, result.GetValue(decode), backend);
            return 0;
        }));
        return command;
    }

    /// <summary>The paths of one run, by option name.</summary>
    internal sealed record RunFiles(string Config, string Weights, string Input, string Out, string? Grad)
    {
        private IEnumerable<(string Path, string Option)> Inputs =>
            new[] { (Config, "--config"), (Weights, "--weights"), (Input, "--input"), (Grad, "--grad") }.Where(p => p.Item1 is not null)!;

        /// <summary>
        /// Refuses, before anything is read or written: a missing or empty path, an input that is not (a link to) a regular file
        /// (a FIFO would block, a device never end), an <c>--out</c> that exists and is not a regular file (the rename would
        /// replace a FIFO, device or link), and an <c>--out</c> that is one of the inputs (it would be silently replaced).
        /// </summary>
        public void Check()
        {
            foreach (var (path, option) in Inputs.Append((Out, "--out")))
            {
                if (string.IsNullOrEmpty(path))
                {
                    throw new ArgumentException($"{option}: expected a file path, actual an empty string", option);
                }
            }
            foreach (var (path, option) in Inputs)
            {
                LocalFile.RequireRegular(path, option);
            }
            string target = Path.GetFullPath(Out);
            var kind = LocalFile.Kind(target, followLinks: false);
            if (kind is not (UnixFileKind.Missing or UnixFileKind.Regular))
            {
                throw new ArgumentException($"--out: expected a regular file to replace or a new name, actual {LocalFile.Describe(kind)}: {target}", "--out");
            }
            if (!Directory.Exists(Path.GetDirectoryName(target)))
            {
                throw new ArgumentException($"--out: expected a path in an existing folder, actual {target}", "--out");
            }
            foreach (var (path, option) in Inputs)
            {
                // By device and inode, so another spelling, a link or a hard link of an input is caught too.
                if (kind == UnixFileKind.Regular && LocalFile.SameFile(target, path))
                {
                    throw new ArgumentException($"--out: expected a file other than the inputs, actual the same file as {option}: {target}", "--out");
                }
            }
        }
    }

    public static void Run(string variant, RunFiles files, bool decode, Backend backend)
    {
        var config = LayerConfig.Parse(variant, ReadConfig(files.Config));
        // Headers only: the run is sized, and refused if it cannot fit, before any tensor data is read.
        var x = Single(SafeTensors.ReadHeader(files.Input), "x", files.Input);
        if (files.Grad is not null)
        {
            var dy = Single(SafeTensors.ReadHeader(files.Grad), "dy", files.Grad);
            if (dy.Shape != x.Shape)
            {
                throw new ArgumentException($"--grad: expected dy of shape {x.Shape} (as x), actual {dy.Shape}");
            }
        }
        long parameterElements = SafeTensors.ReadHeader(files.Weights).Entries.Sum(e => e.Shape.ElementCount);
        // With both --decode and --grad, y is decoded and then a training pass runs: each must fit.
        var modes = new[] { decode ? RunMode.Decode : RunMode.Forward }.Concat(files.Grad is not null ? [RunMode.Training] : []);
        foreach (var mode in modes)
        {
            CheckMemory(config, x, mode, parameterElements, backend);
        }

        using var weights = SafeTensors.Read(files.Weights);
        using var inputs = SafeTensors.Read(files.Input);
        var xFile = inputs["x"];
        using var layer = AttentionLayer.Create(config, backend, xFile.DType);
        if (decode && layer is not CausalAttentionLayer { IsCausal: true })
        {
            throw new ArgumentException($"--decode: expected a causal variant (mha, gqa, mqa, mla, tpa, sas, transnormer with causal: true), actual {variant}{(layer is CausalAttentionLayer ? " with causal: false" : "")}");
        }
        layer.LoadParameters(weights.Tensors);
        using var xd = xFile.To(backend);
        var results = new List<KeyValuePair<string, Tensor>>();
        try
        {
            results.Add(new("y", decode ? Decode((CausalAttentionLayer)layer, xd) : layer.Forward(xd)));
            if (files.Grad is not null)
            {
                using var grads = SafeTensors.Read(files.Grad);
                using var dy = Convert(grads["dy"], backend, xFile.DType);
                using var pass = layer.ForwardForTraining(xd);
                var gradients = pass.Backward(dy);
                results.Add(new("dx", gradients.Input));
                foreach (var (name, tensor) in gradients.Parameters)
                {
                    results.Add(new($"grad.{name}", tensor));
                }
            }
            SafeTensors.Write(Path.GetFullPath(files.Out), results, new Dictionary<string, string>
            {
                ["variant"] = variant,
                ["backend"] = backend.Name,
                ["mode"] = decode ? "decode" : "forward",
            });
        }
        finally
        {
            foreach (var (_, tensor) in results)
            {
                tensor.Dispose();
            }
        }
    }

    /// <summary>The config file's text, refused past <see cref="MaxConfigBytes"/> without reading further.</summary>
    private static string ReadConfig(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        var buffer = new byte[MaxConfigBytes + 1];
        int read = stream.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
        if (read > MaxConfigBytes)
        {
            throw new ArgumentException($"--config: expected a JSON file of at most {MaxConfigBytes} bytes (1 MiB), actual {Math.Max(stream.Length, read)} bytes: {Path.GetFullPath(path)}");
        }
        using var reader = new StreamReader(new MemoryStream(buffer, 0, read), System.Text.Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
        return reader.ReadToEnd();
    }

    /// <summary>
    /// Refuses a run whose estimated peak working memory (<see cref="WorkingMemory"/>) exceeds what the machine has: on the
    /// CPU the memory available to this process, on CUDA the device's free memory (and the host's for file contents).
    /// </summary>
    private static void CheckMemory(LayerConfig config, SafeTensorsEntry x, RunMode mode, long parameterElements, Backend backend)
    {
        var estimate = WorkingMemory.Estimate(config, x.Shape[0], x.Shape[1], x.DType, mode, parameterElements, backend.Kind == BackendKind.Cpu);
        double host = AvailableHostBytes();
        string run = $"{config.Variant} {mode.ToString().ToLowerInvariant()} of x {x.Shape} {x.DType}";
        if (backend is CudaBackend cuda)
        {
            double free = cuda.Context.MemoryInfo().Free;
            Refuse(estimate.Backend, free, $"free memory on {backend.Name}");
            Refuse(estimate.Host, host, "host memory available now");
        }
        else
        {
            Refuse(estimate.Total, host, "memory available now");
        }

        void Refuse(double needed, double limit, string what)
        {
            if (needed > limit)
            {
                throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                    $"--input: expected a run that fits in the {Gib(limit)} of {what}, actual an estimated {Gib(needed)} for the {run} (parameters, activations and their gradients, caches, score blocks); use a shorter or smaller input"));
            }
        }
    }

    /// <summary>
    /// Host memory a run can still get: the process's limit (container-aware), and on Linux at most MemAvailable, since on a
    /// shared machine other processes hold part of it (the OOM killer counts what is free, not what is installed).
    /// </summary>
    private static double AvailableHostBytes()
    {
        double limit = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        try
        {
            var line = File.Exists("/proc/meminfo") ? File.ReadLines("/proc/meminfo").FirstOrDefault(l => l.StartsWith("MemAvailable:", StringComparison.Ordinal)) : null;
            var fields = line?.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields is [_, var kib, "kB"] && long.TryParse(kib, NumberStyles.None, CultureInfo.InvariantCulture, out long available))
            {
                limit = Math.Min(limit, available * 1024.0);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // No /proc to ask: the process limit alone.
        }
        return limit;
    }

    private static string Gib(double bytes) => string.Create(CultureInfo.InvariantCulture, $"{bytes / (1L << 30):F1} GiB");

    // y of a causal layer computed one token at a time through its cache.
    private static Tensor Decode(CausalAttentionLayer layer, Tensor x)
    {
        int batch = x.Shape[0], tokens = x.Shape[1], width = x.Shape[2];
        using var cache = layer.CreateCache(batch, new CacheOptions(MaxLength: tokens));
        var host = Backend.Cpu;
        using var xHost = x.To(host);
        var xs = xHost.ToDoubleArray();
        var ys = new double[xs.Length];
        var step = new double[batch * width];
        for (int t = 0; t < tokens; t++)
        {
            for (int b = 0; b < batch; b++)
            {
                Array.Copy(xs, ((b * tokens) + t) * width, step, b * width, width);
            }
            using var xt = layer.Backend.FromArray(step, new Shape(batch, 1, width), layer.DType);
            using var yt = cache.DecodeStep(xt);
            var values = yt.ToDoubleArray();
            for (int b = 0; b < batch; b++)
            {
                Array.Copy(values, b * width, ys, ((b * tokens) + t) * width, width);
            }
        }
        return layer.Backend.FromArray(ys, x.Shape, layer.DType);
    }

    private static SafeTensorsEntry Single(SafeTensorsHeader header, string name, string path)
    {
        var entry = header.Entries.FirstOrDefault(e => e.Name == name);
        if (entry is null)
        {
            var names = header.Entries.Select(e => e.Name).ToList();
            throw new ArgumentException($"{Path.GetFileName(path)}: expected a tensor named '{name}', actual names: {(names.Count == 0 ? "none" : Check.Listing(names))}");
        }
        if (entry.Shape.Rank != 3)
        {
            throw new ArgumentException($"{Path.GetFileName(path)}: expected '{name}' of shape [B, T, d_model], actual {entry.Shape}");
        }
        return entry;
    }

    private static Tensor Convert(Tensor tensor, Backend backend, DType dtype) =>
        tensor.DType == dtype ? tensor.To(backend) : backend.FromArray(tensor.ToDoubleArray(), tensor.Shape, dtype);
}

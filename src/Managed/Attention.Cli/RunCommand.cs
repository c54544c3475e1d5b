using System.CommandLine;
using System.Globalization;
using Attention.Native.Inference;
using Attention.Native.IO;
using Attention.Native.Ops;
using Attention.Native.Runtime;
using Attention.Native.Variants;

namespace Attention.Cli;

/// <summary>
/// <c>attn run</c>: one layer on files, the way users check this library against a PyTorch model. Reads the config
/// (JSON), the weights and <c>x</c> (safetensors), writes <c>y</c> — and with <c>--grad</c> also <c>dx</c> and
/// <c>grad.&lt;name&gt;</c> for every learnable parameter — into one safetensors file. The computation runs in the dtype of
/// <c>x</c>; weights are converted to it. With <c>--lengths</c>, x <c>[1, N, d_model]</c> is a ragged batch (sequences of those
/// lengths packed along the tokens), and with <c>--decode</c> too its tokens go through a <see cref="ServingPool"/>. On bad
/// input: one line on stderr, exit code 2, and no output file.
/// </summary>
internal static class RunCommand
{
    /// <summary>The largest config file read: a config is a few hundred bytes, and the limit stops <c>/dev/urandom</c>-like inputs early.</summary>
    internal const int MaxConfigBytes = 1 << 20;

    public static Command Create()
    {
        var variant = new Option<string?>("--variant") { Description = $"one of {string.Join(", ", LayerConfig.Variants)} (optional with a --layout of one variant, or an official config)" };
        var layout = new Option<string>("--layout") { Description = $"checkpoint layout of --weights: {string.Join(", ", CheckpointLayout.All.Select(l => l.Name))}", DefaultValueFactory = _ => "spec" };
        var prefix = new Option<string>("--prefix") { Description = "read only the weights whose names start with this (e.g. model.layers.0.self_attn.)", DefaultValueFactory = _ => "" };
        var layerIndex = new Option<int>("--layer-index") { Description = "the layer's index, for an official config whose layers differ (transnormer's decay and LRPE)", DefaultValueFactory = _ => 0 };
        // Paths are strings, not FileInfo: an empty one is then our one-line error rather than a parse failure with the help text.
        var config = new Option<string>("--config") { Description = "JSON file of the variant's config keys (variants.md), or with --layout the official config (e.g. HF config.json)", Required = true };
        var weights = new Option<string>("--weights") { Description = "safetensors file of the layer's parameters", Required = true };
        var input = new Option<string>("--input") { Description = "safetensors file holding x [B, T, d_model]", Required = true };
        var output = new Option<string>("--out") { Description = "safetensors file to write (y; with --grad also dx and grad.<parameter name in the layout>)", Required = true };
        var grad = new Option<string?>("--grad") { Description = "safetensors file holding dy [B, T, d_model]: also run the backward" };
        var decode = new Option<bool>("--decode") { Description = "compute y token by token through the KV cache (causal variants); with --lengths, through a paged serving pool" };
        // Strings, parsed here: a bad value is then our one-line error naming the option rather than a parse failure with the help text.
        var lengths = new Option<string?>("--lengths")
        {
            Description = "a ragged batch: x is [1, N, d_model], the sequences of these comma-separated lengths (each ≥ 1, summing to N) "
                + "packed one after another; y (and with --grad dx and the gradients) are those of the sequences run apart; with --decode "
                + "every sequence is admitted to a serving pool and decoded token by token in shared steps (not agent, flatten)",
        };
        var pageSize = new Option<string?>("--page-size") { Description = $"with --decode --lengths: tokens per page of the serving pool (default {DefaultPageSize}); the pool holds each sequence's length rounded up to whole pages" };
        var backendOption = AttnCli.BackendOption();
        var command = new Command("run", "Run one attention layer from a config, weights and input files; write its output (and gradients).");
        foreach (var option in new Option[] { variant, layout, prefix, layerIndex, config, weights, input, output, grad, decode, lengths, pageSize, backendOption })
        {
            command.Options.Add(option);
        }
        command.SetAction(result => AttnCli.Guard("run", result.InvocationConfiguration.Error, () =>
        {
            var files = new RunFiles(result.GetValue(config)!, result.GetValue(weights)!, result.GetValue(input)!, result.GetValue(output)!, result.GetValue(grad));
            var batch = Ragged.Parse(result.GetValue(lengths), result.GetValue(pageSize), result.GetValue(decode));
            files.Check();
            var backend = AttnCli.SelectBackend(result.GetValue(backendOption)!);
            var checkpoint = new Checkpoint(CheckpointLayout.Get(result.GetValue(layout)!), result.GetValue(prefix)!, result.GetValue(layerIndex));
            Run(result.GetValue(variant), files, result.GetValue(decode), backend, checkpoint, batch);
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

    /// <summary>How the weights file is laid out: the layout, the name prefix of the layer's tensors, and the layer's index.</summary>
    internal sealed record Checkpoint(CheckpointLayout Layout, string Prefix, int LayerIndex)
    {
        public static Checkpoint Spec { get; } = new(CheckpointLayout.Spec, "", 0);
    }

    /// <summary>The page size of <c>--decode --lengths</c>' serving pool when <c>--page-size</c> is not given (vLLM's).</summary>
    internal const int DefaultPageSize = 16;

    /// <summary>
    /// <c>--lengths</c> (and <c>--page-size</c>): the sequences x packs, each ≥ 1 token. <see cref="Parse"/> checks what the
    /// options alone say; <see cref="Check"/> checks them against x's header.
    /// </summary>
    internal sealed record Ragged(int[] Lengths, int PageSize)
    {
        public SequenceLayout Layout => SequenceLayout.FromLengths(Lengths);

        public string Text => string.Join(",", Lengths.Select(l => l.ToString(CultureInfo.InvariantCulture)));

        /// <summary>Null without <c>--lengths</c>; refuses a bad list, a bad page size, and a page size without <c>--decode --lengths</c>.</summary>
        public static Ragged? Parse(string? lengths, string? pageSize, bool decode)
        {
            if (pageSize is not null && (lengths is null || !decode))
            {
                throw new ArgumentException($"--page-size: expected only with --decode and --lengths (the serving pool's pages), actual --page-size {pageSize} without {(lengths is null ? "--lengths" : "--decode")}");
            }
            if (lengths is null)
            {
                return null;
            }
            if (string.IsNullOrWhiteSpace(lengths))
            {
                throw new ArgumentException("--lengths: expected comma-separated sequence lengths (e.g. 5,1,9), actual an empty value");
            }
            var items = lengths.Split(',');
            var values = new int[items.Length];
            long total = 0;
            for (int i = 0; i < items.Length; i++)
            {
                if (!int.TryParse(items[i].Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out values[i]))
                {
                    throw new ArgumentException($"--lengths: expected comma-separated integers in [1, {int.MaxValue}], actual '{items[i]}' (item {i + 1} of '{lengths}')");
                }
                if (values[i] < 1)
                {
                    throw new ArgumentException($"--lengths: expected every length ≥ 1 (a sequence holds a token), actual {values[i]} (item {i + 1} of '{lengths}')");
                }
                total += values[i];
            }
            if (total > int.MaxValue)
            {
                throw new ArgumentException($"--lengths: expected at most {int.MaxValue} tokens in all, actual {total}");
            }
            int page = DefaultPageSize;
            if (pageSize is not null && (!int.TryParse(pageSize.Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out page) || page < 1))
            {
                throw new ArgumentException($"--page-size: expected an integer ≥ 1 (tokens per page), actual '{pageSize}'");
            }
            return new Ragged(values, page);
        }

        /// <summary>
        /// The tokens the serving pool holds: each sequence's length rounded up to whole pages (a page belongs to one sequence,
        /// so N rounded up is too few when sequences end inside pages), enough for all of them at once.
        /// </summary>
        public long PoolTokens => Lengths.Sum(l => ((long)l + PageSize - 1) / PageSize * PageSize);

        /// <summary>Refuses lengths that do not describe x: x must be one packed batch [1, N, d_model] with N their sum.</summary>
        public void Check(Shape x, bool decode)
        {
            long total = Lengths.Sum(l => (long)l);
            if (x[0] != 1)
            {
                throw new ArgumentException($"--lengths: expected x of shape [1, N, d_model] (the sequences packed into one batch), actual {x}");
            }
            if (total != x[1])
            {
                throw new ArgumentException($"--lengths: expected lengths summing to x's N = {x[1]}, actual {Text}, which sum to {total}");
            }
            if (decode && PoolTokens > int.MaxValue)
            {
                throw new ArgumentException($"--page-size: expected a page size at which the sequences' whole pages hold at most {int.MaxValue} tokens, actual {PageSize} ({PoolTokens} tokens)");
            }
        }
    }

    public static void Run(string? variant, RunFiles files, bool decode, Backend backend, Checkpoint? checkpoint = null, Ragged? ragged = null)
    {
        checkpoint ??= Checkpoint.Spec;
        if (checkpoint.LayerIndex < 0)
        {
            throw new ArgumentException($"--layer-index: expected a layer index ≥ 0, actual {checkpoint.LayerIndex}");
        }
        var config = ReadLayerConfig(variant, ReadConfig(files.Config), checkpoint);
        variant = config.Variant;
        // Headers only: the run is sized, and refused if it cannot fit, before any tensor data is read.
        var x = Single(SafeTensors.ReadHeader(files.Input), "x", files.Input);
        ragged?.Check(x.Shape, decode);
        if (files.Grad is not null)
        {
            var dy = Single(SafeTensors.ReadHeader(files.Grad), "dy", files.Grad);
            if (dy.Shape != x.Shape)
            {
                throw new ArgumentException($"--grad: expected dy of shape {x.Shape} (as x), actual {dy.Shape}");
            }
        }
        long parameterElements = SafeTensors.ReadHeader(files.Weights).Entries
            .Where(e => e.Name.StartsWith(checkpoint.Prefix, StringComparison.Ordinal)).Sum(e => e.Shape.ElementCount);
        // With both --decode and --grad, y is decoded and then a training pass runs: each must fit.
        var modes = new[] { decode ? RunMode.Decode : RunMode.Forward }.Concat(files.Grad is not null ? [RunMode.Training] : []);
        foreach (var mode in modes)
        {
            // The serving pool caches each sequence rounded up to whole pages.
            // A 2-D form's x may be a grid [B, H, W, C]: its tokens are H·W.
            long rowTokens = x.Shape.Rank == 4 ? (long)x.Shape[1] * x.Shape[2] : x.Shape[1];
            long tokens = mode == RunMode.Decode && ragged is not null ? Math.Max(ragged.PoolTokens, rowTokens) : rowTokens;
            CheckMemory(config, x, mode, parameterElements, backend, tokens);
        }

        using var weights = SafeTensors.Read(files.Weights);
        using var inputs = SafeTensors.Read(files.Input);
        var xFile = inputs["x"];
        using var layer = AttentionLayer.Create(config, backend, xFile.DType);
        if (decode && layer is not CausalAttentionLayer { IsCausal: true })
        {
            throw new ArgumentException($"--decode: expected a causal variant (mha, gqa, mqa, mla, tpa, sas, transnormer, mfa with causal: true), actual {variant}{(layer is CausalAttentionLayer ? " with causal: false" : "")}");
        }
        if (ragged is not null && !layer.AcceptsSequences)
        {
            throw new ArgumentException($"--lengths: expected a variant that takes a ragged batch (any but agent and flatten, whose seq_len is fixed), actual {variant}");
        }
        layer.LoadParameters(weights.Tensors, checkpoint.Layout, checkpoint.Prefix);
        using var xd = xFile.To(backend);
        var results = new List<KeyValuePair<string, Tensor>>();
        try
        {
            var sequences = ragged?.Layout;
            var y = (decode, sequences) switch
            {
                (true, null) => Decode((CausalAttentionLayer)layer, xd),
                (true, { } s) => DecodeServing((CausalAttentionLayer)layer, xd, s, ragged!),
                (false, null) => layer.Forward(xd),
                (false, { } s) => layer.Forward(xd, s),
            };
            results.Add(new("y", y));
            if (files.Grad is not null)
            {
                using var grads = SafeTensors.Read(files.Grad);
                using var dy = Convert(grads["dy"], backend, xFile.DType);
                using var pass = sequences is null ? layer.ForwardForTraining(xd) : layer.ForwardForTraining(xd, sequences);
                var gradients = pass.Backward(dy);
                results.Add(new("dx", gradients.Input));
                // Under the checkpoint's own names (and prefix), so they line up with the official module's parameters.
                foreach (var (name, tensor) in checkpoint.Layout.ExportGradients(layer, gradients.Parameters))
                {
                    results.Add(new($"grad.{checkpoint.Prefix}{name}", tensor));
                }
                foreach (var tensor in gradients.Parameters.Values)
                {
                    tensor.Dispose();
                }
            }
            var metadata = new Dictionary<string, string>
            {
                ["variant"] = variant,
                ["backend"] = backend.Name,
                ["mode"] = decode ? "decode" : "forward",
                ["layout"] = checkpoint.Layout.Name,
            };
            if (ragged is not null)
            {
                metadata["lengths"] = ragged.Text;
                if (decode)
                {
                    metadata["page_size"] = ragged.PageSize.ToString(CultureInfo.InvariantCulture);
                }
            }
            SafeTensors.Write(Path.GetFullPath(files.Out), results, metadata);
        }
        finally
        {
            foreach (var (_, tensor) in results)
            {
                tensor.Dispose();
            }
        }
    }

    /// <summary>
    /// The layer config: variants.md's keys (with a layout, its conventions fill the keys the file leaves out, and a key that
    /// contradicts them is refused), or with a layout and no <c>d_model</c> key, the official config read by the layout.
    /// </summary>
    internal static LayerConfig ReadLayerConfig(string? variant, string json, Checkpoint checkpoint)
    {
        var layout = checkpoint.Layout;
        bool specKeys;
        var stated = new HashSet<string>(StringComparer.Ordinal);
        using (var document = ParseJson(json))
        {
            var root = document.RootElement;
            specKeys = root.ValueKind != System.Text.Json.JsonValueKind.Object || root.TryGetProperty("d_model", out _);
            if (root.ValueKind == System.Text.Json.JsonValueKind.Object)
            {
                stated.UnionWith(root.EnumerateObject().Select(p => p.Name));
            }
        }
        if (!specKeys && layout != CheckpointLayout.Spec)
        {
            var official = layout.ReadConfig(json, checkpoint.LayerIndex);
            if (variant is not null && variant != official.Variant)
            {
                throw new ArgumentException($"--variant: expected {official.Variant} (what the {layout.Name} config describes) or none, actual {variant}");
            }
            return official;
        }
        variant ??= layout.Variants.Count == 1 && layout != CheckpointLayout.Spec
            ? layout.Variants[0]
            : throw new ArgumentException($"--variant: expected one of {string.Join(", ", layout.Variants)}, actual none");
        var config = LayerConfig.Parse(variant, json);
        var conventional = layout.WithConventions(config);
        var before = config.Keys().ToDictionary(k => k.Key, k => k.Value);
        foreach (var (key, value) in conventional.Keys())
        {
            if (stated.Contains(key) && !Equals(before[key], value))
            {
                throw new ArgumentException($"--config: {key}: expected {Format(value)} (the {layout.Name} layout's convention) or no {key} key, actual {Format(before[key])}");
            }
        }
        return conventional;

        static string Format(object value) => value is bool b ? (b ? "true" : "false") : System.Convert.ToString(value, CultureInfo.InvariantCulture)!;
    }

    private static System.Text.Json.JsonDocument ParseJson(string json)
    {
        try
        {
            return System.Text.Json.JsonDocument.Parse(json);
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new ArgumentException($"--config: expected a JSON object, actual invalid JSON ({e.Message})", e);
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
    private static void CheckMemory(LayerConfig config, SafeTensorsEntry x, RunMode mode, long parameterElements, Backend backend, long tokens)
    {
        var estimate = WorkingMemory.Estimate(config, x.Shape[0], tokens, x.DType, mode, parameterElements, backend.Kind == BackendKind.Cpu);
        double host = AvailableHostBytes();
        string run = $"{config.Variant} {mode.ToString().ToLowerInvariant()} of x {x.Shape} {x.DType}{(tokens != x.Shape[1] && x.Shape.Rank == 3 ? $" through a pool of {tokens} tokens" : "")}";
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

    /// <summary>
    /// y of a ragged batch computed through a <see cref="ServingPool"/>: every sequence admitted, then step t feeds token t of
    /// every sequence longer than t in one call (step 0 a one-token prefill of each, later steps a multi-sequence decode); a
    /// sequence is released once its last token is in.
    /// </summary>
    private static Tensor DecodeServing(CausalAttentionLayer layer, Tensor x, SequenceLayout sequences, Ragged ragged)
    {
        int width = x.Shape[2], count = sequences.Count;
        var options = new ServingPoolOptions(checked((int)ragged.PoolTokens), ragged.PageSize, count);
        using var pool = new ServingPool(layer, options);
        var ids = Enumerable.Range(0, count).Select(_ => pool.Admit()).ToArray();
        using var xHost = x.To(Backend.Cpu);
        var xs = xHost.ToDoubleArray();
        var ys = new double[xs.Length];
        for (int t = 0; t < sequences.MaxLength; t++)
        {
            var active = Enumerable.Range(0, count).Where(s => sequences.Length(s) > t).ToArray();
            var step = new double[active.Length * width];
            for (int i = 0; i < active.Length; i++)
            {
                Array.Copy(xs, (sequences.Start(active[i]) + t) * width, step, i * width, width);
            }
            var stepIds = active.Select(s => ids[s]).ToArray();
            using var xt = layer.Backend.FromArray(step, new Shape(1, active.Length, width), layer.DType);
            using var yt = t == 0 ? pool.Step(stepIds, xt, SequenceLayout.FromLengths([.. active.Select(_ => 1)])) : pool.Decode(stepIds, xt);
            var values = yt.ToDoubleArray();
            for (int i = 0; i < active.Length; i++)
            {
                Array.Copy(values, i * width, ys, (sequences.Start(active[i]) + t) * width, width);
                if (sequences.Length(active[i]) == t + 1)
                {
                    pool.Release(ids[active[i]]);
                }
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

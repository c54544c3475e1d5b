using System.CommandLine;
using Attention.Native.IO;
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
    public static Command Create()
    {
        var variant = new Option<string>("--variant") { Description = $"one of {string.Join(", ", LayerConfig.Variants)}", Required = true };
        var config = new Option<FileInfo>("--config") { Description = "JSON file of the variant's config keys", Required = true };
        var weights = new Option<FileInfo>("--weights") { Description = "safetensors file of the layer's parameters", Required = true };
        var input = new Option<FileInfo>("--input") { Description = "safetensors file holding x [B, T, d_model]", Required = true };
        var output = new Option<FileInfo>("--out") { Description = "safetensors file to write (y; with --grad also dx and grad.<parameter>)", Required = true };
        var grad = new Option<FileInfo?>("--grad") { Description = "safetensors file holding dy [B, T, d_model]: also run the backward" };
        var decode = new Option<bool>("--decode") { Description = "compute y token by token through the KV cache (causal variants)" };
        var backendOption = AttnCli.BackendOption();
        var command = new Command("run", "Run one attention layer from a config, weights and input files; write its output (and gradients).");
        foreach (var option in new Option[] { variant, config, weights, input, output, grad, decode, backendOption })
        {
            command.Options.Add(option);
        }
        command.SetAction(result =>
        {
            var error = result.InvocationConfiguration.Error;
            try
            {
                var backend = AttnCli.SelectBackend(result.GetValue(backendOption)!);
                Run(result.GetValue(variant)!, result.GetValue(config)!, result.GetValue(weights)!, result.GetValue(input)!, result.GetValue(output)!,
                    result.GetValue(grad), result.GetValue(decode), backend);
                return 0;
            }
            catch (Exception e) when (e is ArgumentException or InvalidDataException or IOException or KeyNotFoundException
                or InvalidOperationException or NotSupportedException or UnauthorizedAccessException or Attention.Native.Interop.CudaException or Attention.Native.Interop.NvrtcException or Attention.Native.Interop.CublasException)
            {
                // ArgumentException appends " (Parameter 'name')"; the message already starts with the name.
                string message = e is ArgumentException { ParamName: { } name } ? e.Message.Replace($" (Parameter '{name}')", "", StringComparison.Ordinal) : e.Message;
                error.WriteLine($"attn run: {OneLine(message)}");
                return 2;
            }
        });
        return command;
    }

    public static void Run(string variant, FileInfo configFile, FileInfo weightsFile, FileInfo inputFile, FileInfo outFile, FileInfo? gradFile, bool decode, Backend backend)
    {
        foreach (var (file, name) in new[] { (configFile, "--config"), (weightsFile, "--weights"), (inputFile, "--input"), (gradFile, "--grad") })
        {
            if (file is not null && !file.Exists)
            {
                throw new FileNotFoundException($"{name}: file not found: {file.FullName}");
            }
        }
        var config = LayerConfig.Parse(variant, File.ReadAllText(configFile.FullName));
        using var weights = SafeTensors.Read(weightsFile.FullName);
        using var inputs = SafeTensors.Read(inputFile.FullName);
        var x = Single(inputs, "x", inputFile);
        using var layer = AttentionLayer.Create(config, backend, x.DType);
        if (decode && layer is not CausalAttentionLayer { IsCausal: true })
        {
            throw new ArgumentException($"--decode: expected a causal variant (mha, gqa, mqa, mla, tpa, sas, transnormer with causal: true), actual {variant}{(layer is CausalAttentionLayer ? " with causal: false" : "")}");
        }
        layer.LoadParameters(weights.Tensors);
        using var xd = x.To(backend);
        var results = new List<KeyValuePair<string, Tensor>>();
        try
        {
            results.Add(new("y", decode ? Decode((CausalAttentionLayer)layer, xd) : layer.Forward(xd)));
            if (gradFile is not null)
            {
                using var grads = SafeTensors.Read(gradFile.FullName);
                var dyFile = Single(grads, "dy", gradFile);
                if (dyFile.Shape != x.Shape)
                {
                    throw new ArgumentException($"--grad: expected dy of shape {x.Shape} (as x), actual {dyFile.Shape}");
                }
                using var dy = Convert(dyFile, backend, x.DType);
                using var pass = layer.ForwardForTraining(xd);
                var gradients = pass.Backward(dy);
                results.Add(new("dx", gradients.Input));
                foreach (var (name, tensor) in gradients.Parameters)
                {
                    results.Add(new($"grad.{name}", tensor));
                }
            }
            SafeTensors.Write(outFile.FullName, results, new Dictionary<string, string>
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

    private static Tensor Single(SafeTensorsContent content, string name, FileInfo file)
    {
        if (!content.TryGet(name, out var tensor))
        {
            throw new ArgumentException($"{file.Name}: expected a tensor named '{name}', actual names: {(content.Names.Count == 0 ? "none" : string.Join(", ", content.Names))}");
        }
        if (tensor.Shape.Rank != 3)
        {
            throw new ArgumentException($"{file.Name}: expected '{name}' of shape [B, T, d_model], actual {tensor.Shape}");
        }
        return tensor;
    }

    private static Tensor Convert(Tensor tensor, Backend backend, DType dtype) =>
        tensor.DType == dtype ? tensor.To(backend) : backend.FromArray(tensor.ToDoubleArray(), tensor.Shape, dtype);

    private static string OneLine(string message) => string.Join(' ', message.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries));
}

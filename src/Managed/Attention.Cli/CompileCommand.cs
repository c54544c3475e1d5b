using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Attention.Native.Ops;
using Attention.Native.Runtime;
using Spectre.Console;

namespace Attention.Cli;

/// <summary>
/// <c>attn compile</c>: compiles every kernel with NVRTC into the kernel cache, so a deployment starts warm.
/// Safe to run from several processes at once on the same cache.
/// </summary>
internal static class CompileCommand
{
    public static Command Create()
    {
        var archOption = new Option<string[]>("--arch")
        {
            Description = "architectures, e.g. sm_80 sm_90 (default: the CUDA device's, else sm_80 and sm_90)",
            AllowMultipleArgumentsPerToken = true,
        };
        var cacheOption = new Option<string?>("--cache") { Description = $"cache folder (default: {KernelCompiler.CacheVariable} or the user cache)" };
        var programOption = new Option<string[]>("--program")
        {
            Description = "kernel files to compile, e.g. attention_mma.cu (default: all)",
            AllowMultipleArgumentsPerToken = true,
        };
        var command = new Command("compile", "Compile every kernel (or the named kernel files) with NVRTC into the kernel cache.");
        command.Options.Add(archOption);
        command.Options.Add(cacheOption);
        command.Options.Add(programOption);
        command.SetAction(result =>
        {
            var error = result.InvocationConfiguration.Error;
            var programs = KernelCatalog.All.ToList();
            if (result.GetValue(programOption) is { Length: > 0 } names)
            {
                if (names.FirstOrDefault(n => programs.All(p => p.SourceName != n)) is { } unknown)
                {
                    error.WriteLine($"attn compile: --program: expected one of {string.Join(", ", programs.Select(p => p.SourceName))}, actual {unknown}");
                    return 2;
                }
                programs = [.. programs.Where(p => names.Contains(p.SourceName))];
            }
            if (!Nvrtc.IsAvailable)
            {
                error.WriteLine($"attn compile: {Native.Interop.NativeLibraries.Get(Native.Interop.NativeLibraryKind.Nvrtc).Describe()}");
                return 1;
            }
            string[] archs = result.GetValue(archOption) is { Length: > 0 } given ? given : DefaultArchs();
            var compiler = new KernelCompiler(result.GetValue(cacheOption));
            var table = new Table().Border(TableBorder.Rounded).AddColumn("kernel file").AddColumn("target").AddColumn("from")
                .AddColumn(new TableColumn("bytes").RightAligned()).AddColumn(new TableColumn("ms").RightAligned());
            try
            {
                foreach (var arch in archs)
                {
                    foreach (var program in programs)
                    {
                        var sw = Stopwatch.StartNew();
                        var compiled = compiler.Compile(program, arch);
                        table.AddRow(program.SourceName, compiled.Target, compiled.Origin.ToString(),
                            compiled.Image.Length.ToString(CultureInfo.InvariantCulture), sw.Elapsed.TotalMilliseconds.ToString("F0", CultureInfo.InvariantCulture));
                    }
                }
            }
            finally
            {
                // The library warns once per compiler: a refused or unwritable cache would otherwise pass unnoticed.
                if (compiler.CacheWarning is { } warning)
                {
                    error.WriteLine($"attn compile: warning: {warning}");
                }
            }
            var console = AttnCli.Console(result.InvocationConfiguration.Output);
            console.Write(table);
            console.WriteLine($"NVRTC {Nvrtc.VersionText}, cache {compiler.CacheDirectory}");
            return 0;
        });
        return command;
    }

    private static string[] DefaultArchs()
    {
        try
        {
            if (CudaDevice.Count > 0)
            {
                return [CudaDevice.Get(0).Arch];
            }
        }
        catch (Exception e) when (e is DllNotFoundException or Native.Interop.CudaException)
        {
            // No driver here: compile for the data-centre architectures.
        }
        return ["sm_80", "sm_90"];
    }
}

using Attention.Cli;

namespace Attention.Native.Tests.Cli;

public class AttnCliTests
{
    private static (int Code, string Output, string Error) Run(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = AttnCli.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Test]
    public void Info_reports_runtime_libraries_cache_and_backend()
    {
        var (code, output, _) = Run("info");
        Assert.Multiple(() =>
        {
            Assert.That(code, Is.Zero);
            Assert.That(output, Does.Contain(".NET runtime").And.Contain("library Cuda").And.Contain("library Nvrtc").And.Contain("library Cublas"));
            Assert.That(output, Does.Contain("kernel cache").And.Contain("default backend").And.Contain("CPU"));
        });
    }

    [Test]
    public void Demo_runs_every_variant_on_the_cpu_backend_and_prints_the_table()
    {
        var (code, output, error) = Run("demo", "--backend", "cpu", "--tokens", "16");
        Assert.Multiple(() =>
        {
            Assert.That(code, Is.Zero, error);
            Assert.That(output, Does.Contain("parameters").And.Contain("KV cache B/token (bf16)").And.Contain("forward ms").And.Contain("backward ms"));
            foreach (var variant in Attention.Native.Variants.LayerConfig.Variants)
            {
                Assert.That(output, Does.Contain($"│ {variant} "), variant);
            }
            Assert.That(output, Does.Not.Contain("n/a"), "every variant runs on the CPU");
            // mha at width 256 caches 2·256 bf16 values per token; mqa an eighth of that.
            Assert.That(output, Does.Contain("1,024").And.Contain("12.5 % of 1,024 B"));
            // mfa caches one key/value head of width 64 whatever its 8 query heads: 2·64 bf16 values, a quarter of mha's.
            Assert.That(output, Does.Contain("25.0 % of 1,024 B"));
        });
    }

    [Test]
    public void Unknown_backend_is_a_usage_error()
    {
        var (code, _, error) = Run("demo", "--backend", "tpu");
        Assert.That(code, Is.Not.Zero);
        Assert.That(error, Does.Contain("tpu"));
    }
}

/// <summary>
/// <c>attn compile</c> on the cache. The cache's behaviour does not depend on which kernel fills it, so the tests compile
/// two small kernel files (<see cref="Programs"/>); every kernel's compilation is KernelCompileTests' job.
/// </summary>
[Category("Kernels")]
public class AttnCompileTests
{
    private static readonly string[] Programs = ["columns.cu", "adaptive_pool.cu"];

    [Test]
    public void Concurrent_processes_compiling_into_one_cache_all_succeed_and_leave_it_valid()
    {
        Support.Requires.Nvrtc();
        using var cache = new Runtime.TempDirectory();
        string attn = Path.Combine(AppContext.BaseDirectory, "attn.dll");
        var processes = Enumerable.Range(0, 4).Select(_ => System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("dotnet")
        {
            ArgumentList = { attn, "compile", "--arch", "sm_80", "--cache", cache.Path, "--program", Programs[0], Programs[1] },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!).ToList();
        foreach (var p in processes)
        {
            string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
            p.WaitForExit();
            Assert.That(p.ExitCode, Is.Zero, output);
            p.Dispose();
        }
        var files = Directory.GetFiles(cache.Path);
        Assert.Multiple(() =>
        {
            Assert.That(files.Where(f => f.EndsWith(".tmp", StringComparison.Ordinal)), Is.Empty, "no temporary file left behind");
            Assert.That(files, Has.Length.EqualTo(Programs.Length), "one entry per kernel file");
        });
        var reader = new Native.Runtime.KernelCompiler(cache.Path);
        foreach (var program in Native.Ops.KernelCatalog.All.Where(p => Programs.Contains(p.SourceName)))
        {
            Assert.That(reader.Compile(program, "sm_80").Origin, Is.EqualTo(Native.Runtime.CompileOrigin.DiskCache), program.SourceName);
        }
    }

    [Test]
    public void Compile_command_says_once_on_stderr_that_the_cache_cannot_be_used()
    {
        Support.Requires.Nvrtc();
        using var dir = new Runtime.TempDirectory();
        string file = Path.Combine(dir.Path, "a-file");
        File.WriteAllText(file, "not a folder"); // no folder can be made inside it, even by root
        string cache = Path.Combine(file, "kernels");
        using var output = new StringWriter();
        using var error = new StringWriter();
        Assert.That(Attention.Cli.AttnCli.Run(["compile", "--arch", "sm_90", "--cache", cache, "--program", Programs[0]], output, error), Is.Zero, error.ToString());
        var lines = error.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.Multiple(() =>
        {
            Assert.That(lines, Has.Length.EqualTo(1), error.ToString());
            Assert.That(lines[0], Does.StartWith($"attn compile: warning: kernel cache {cache}").And.Contain("cannot create the folder"));
            Assert.That(output.ToString(), Does.Contain("Compiled"), "the kernels still compile, in memory");
        });
    }

    [Test]
    public void Compile_command_fills_the_cache_and_a_second_run_reads_it()
    {
        Support.Requires.Nvrtc();
        using var cache = new Runtime.TempDirectory();
        using var first = new StringWriter();
        using var second = new StringWriter();
        Assert.That(Attention.Cli.AttnCli.Run(["compile", "--arch", "sm_90", "--cache", cache.Path, "--program", .. Programs], first, TextWriter.Null), Is.Zero);
        Assert.That(Attention.Cli.AttnCli.Run(["compile", "--arch", "sm_90", "--cache", cache.Path, "--program", .. Programs], second, TextWriter.Null), Is.Zero);
        Assert.Multiple(() =>
        {
            Assert.That(first.ToString(), Does.Contain("Compiled").And.Contain("sm_90"));
            Assert.That(second.ToString(), Does.Contain("DiskCache").And.Not.Contain("Compiled"));
            Assert.That(first.ToString(), Does.Contain("columns.cu").And.Contain("adaptive_pool.cu").And.Not.Contain("attention.cu"), "only the named files");
        });
    }

    [Test]
    public void Compile_command_refuses_an_unknown_kernel_file_naming_the_known_ones()
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = Attention.Cli.AttnCli.Run(["compile", "--arch", "sm_90", "--program", "nope.cu"], output, error);
        Assert.That(code, Is.EqualTo(2), error.ToString());
        Assert.That(error.ToString(), Does.Contain("nope.cu").And.Contain("columns.cu"));
    }
}

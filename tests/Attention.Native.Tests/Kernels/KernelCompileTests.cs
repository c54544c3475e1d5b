using Attention.Native.Interop;
using Attention.Native.Ops;
using Attention.Native.Runtime;
using Attention.Native.Tests.Runtime;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Kernels;

/// <summary>
/// NVRTC compiles every kernel program for sm_90 and, where <c>ATTENTION_NATIVE_TEST_ARCHS</c> names it (CI sets
/// <c>sm_80,sm_90</c>), for sm_80, two at a time: the sources have no code that differs between the two, and the second arch
/// doubles the compile time of a fresh clone, so the local test command checks the H100/H200 target and CI both. Compiled programs are kept in
/// artifacts/kernel-compile-cache (the library's disk cache, keyed by the sources, options, target and NVRTC version), so a
/// run on unchanged kernels reads them back; a fresh clone (CI) compiles every one. A hit carries the image, lowered names
/// and log of that compilation, and is checked the same way.
/// </summary>
[Category("Kernels")]
[Parallelizable(ParallelScope.Children)]
public class KernelCompileTests
{
    private static TempDirectory? s_scratch;
    private static string? s_cache;

    /// <summary>The fast kernels, whose fragments and accumulators must stay in registers.</summary>
    private static readonly KernelProgram[] FastPrograms =
        [SoftmaxAttentionTensorCoreCuda.Program, LightningCuda.TensorCoreProgram, SoftmaxAttentionDecodeCuda.Program, LatentAttentionCuda.TensorCoreProgram];

    /// <summary>The archs this run compiles for: <c>ATTENTION_NATIVE_TEST_ARCHS</c> (comma-separated), else sm_90.</summary>
    internal static IReadOnlyList<string> Archs =>
        (Environment.GetEnvironmentVariable("ATTENTION_NATIVE_TEST_ARCHS") is { Length: > 0 } archs ? archs : "sm_90")
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    private static IEnumerable<TestCaseData> ProgramsAndArchs() =>
        from program in KernelCatalog.All
        from arch in new[] { "sm_80", "sm_90" }
        select new TestCaseData(program, arch).SetName($"Compiles {program.SourceName} for {arch}");

    [OneTimeSetUp]
    public void CreateCache()
    {
        s_scratch = new TempDirectory();
        string? root = AppContext.BaseDirectory;
        while (root is not null && !File.Exists(Path.Combine(root, "Attention.Native.sln")))
        {
            root = Path.GetDirectoryName(root);
        }
        s_cache = root is null ? s_scratch.Path : Path.Combine(root, "artifacts", "kernel-compile-cache");
        Directory.CreateDirectory(s_cache);
    }

    [OneTimeTearDown]
    public void DeleteCache() => s_scratch?.Dispose();

    /// <summary>
    /// Every program compiles without warnings to an ELF image with every name lowered; ptxas reports its registers (-v), and
    /// the fast kernels (tensor-core attention and Lightning, memory-speed decode) spill none: a spill would put local-memory
    /// traffic in the inner loops.
    /// </summary>
    [TestCaseSource(nameof(ProgramsAndArchs))]
    public void Every_kernel_compiles_with_the_runtime_compiler(KernelProgram program, string arch)
    {
        if (!Archs.Contains(arch))
        {
            Assert.Ignore($"{arch} is compiled where ATTENTION_NATIVE_TEST_ARCHS names it (CI: sm_80,sm_90); this run: {string.Join(",", Archs)}");
        }
        Requires.Nvrtc();
        var compiler = new KernelCompiler(s_cache!);
        var compiled = compiler.Compile(program, arch, ["--ptxas-options=-v"]);
        var lines = compiled.Log.Split('\n');
        Assert.Multiple(() =>
        {
            Assert.That(compiled.Origin, Is.AnyOf(CompileOrigin.Compiled, CompileOrigin.DiskCache));
            Assert.That(compiled.Target, Is.EqualTo(arch));
            Assert.That(compiled.Image, Has.Length.GreaterThan(1000));
            Assert.That(compiled.Image[..4], Is.EqualTo(new byte[] { 0x7F, (byte)'E', (byte)'L', (byte)'F' }), "CUBIN is an ELF image");
            Assert.That(compiled.LoweredNames.Keys, Is.EquivalentTo(program.NameExpressions));
            Assert.That(lines.Where(line => line.Contains("warning", StringComparison.OrdinalIgnoreCase)), Is.Empty, "kernels compile without warnings");
            // One entry per kernel; functions the kernels call (e.g. pow's) report their properties too.
            Assert.That(lines.Count(line => line.Contains("Compiling entry function", StringComparison.Ordinal)), Is.EqualTo(program.NameExpressions.Count), compiled.Log);
            if (FastPrograms.Any(p => p.SourceName == program.SourceName))
            {
                var spills = lines.Where(line => line.Contains("spill stores", StringComparison.Ordinal)).ToList();
                Assert.That(spills, Is.Not.Empty.And.All.Contains(" 0 bytes spill stores, 0 bytes spill loads"), $"{program.SourceName} spills registers\n{compiled.Log}");
            }
        });
    }

    [Test]
    public void Every_kernel_file_is_in_the_catalog()
    {
        var catalogued = KernelCatalog.All.Select(p => p.SourceName).ToHashSet();
        Assert.That(KernelSources.Embedded.Kernels.Keys, Is.EquivalentTo(catalogued));
        Assert.That(KernelSources.Embedded.Headers.Keys, Does.Contain("common.cuh"));
    }

    [Test]
    public void Kernels_include_no_toolkit_header()
    {
        foreach (var (name, text) in KernelSources.Embedded.Kernels.Concat(KernelSources.Embedded.Headers))
        {
            Assert.That(text, Does.Not.Match(@"#\s*include\s*<"), $"{name} includes a system/toolkit header; NVRTC has none on CI or users' machines");
        }
    }

    [Test]
    public void A_compile_error_names_the_program_and_carries_the_log()
    {
        Requires.Nvrtc();
        var sources = new KernelSources(
            new Dictionary<string, string> { ["broken.cu"] = "template <typename T> __global__ void k(T* p) { p[0] = undeclared_thing; }" },
            new Dictionary<string, string>());
        var compiler = new KernelCompiler(s_scratch!.Path, sources);
        var e = Assert.Throws<NvrtcException>(() => compiler.Compile(new KernelProgram("broken.cu", ["k<float>"]), "sm_80"));
        Assert.Multiple(() =>
        {
            Assert.That(e!.Status, Is.EqualTo(nvrtcResult.NVRTC_ERROR_COMPILATION));
            Assert.That(e.ProgramName, Is.EqualTo("broken.cu (k<float>)"));
            Assert.That(e.Log, Does.Contain("undeclared_thing"));
            Assert.That(e.Message, Does.Contain("nvrtcCompileProgram").And.Contain("broken.cu").And.Contain("undeclared_thing"));
        });
    }

    [Test]
    public void An_unknown_name_expression_is_an_nvrtc_error()
    {
        Requires.Nvrtc();
        var program = KernelCatalog.All[0] with { NameExpressions = ["no_such_kernel<float>"] };
        Assert.Throws<NvrtcException>(() => new KernelCompiler(s_scratch!.Path).Compile(program, "sm_80"));
    }
}

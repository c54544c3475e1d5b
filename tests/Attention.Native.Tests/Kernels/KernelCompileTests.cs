using Attention.Native.Interop;
using Attention.Native.Ops;
using Attention.Native.Runtime;
using Attention.Native.Tests.Runtime;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Kernels;

[Category("Kernels")]
public class KernelCompileTests
{
    private static TempDirectory? s_cache;

    private static IEnumerable<TestCaseData> ProgramsAndArchs() =>
        from program in KernelCatalog.All
        from arch in new[] { "sm_80", "sm_90" }
        select new TestCaseData(program, arch).SetName($"Compiles {program.SourceName} for {arch}");

    [OneTimeSetUp]
    public void CreateCache() => s_cache = new TempDirectory();

    [OneTimeTearDown]
    public void DeleteCache() => s_cache?.Dispose();

    [TestCaseSource(nameof(ProgramsAndArchs))]
    public void Every_kernel_compiles_with_the_runtime_compiler(KernelProgram program, string arch)
    {
        Requires.Nvrtc();
        // A fresh cache directory per run: this is a real NVRTC compilation, not a cache hit.
        var compiler = new KernelCompiler(s_cache!.Path);
        var compiled = compiler.Compile(program, arch);
        Assert.Multiple(() =>
        {
            Assert.That(compiled.Origin, Is.EqualTo(CompileOrigin.Compiled));
            Assert.That(compiled.Target, Is.EqualTo(arch));
            Assert.That(compiled.Image, Has.Length.GreaterThan(1000));
            Assert.That(compiled.Image[..4], Is.EqualTo(new byte[] { 0x7F, (byte)'E', (byte)'L', (byte)'F' }), "CUBIN is an ELF image");
            Assert.That(compiled.LoweredNames.Keys, Is.EquivalentTo(program.NameExpressions));
            Assert.That(compiled.Log, Does.Not.Contain("warning"), "kernels compile without warnings");
        });
    }

    /// <summary>
    /// The fast kernels (tensor-core attention and Lightning, memory-speed decode) keep their fragments and accumulators in
    /// registers: ptxas reports no spill for any of them (a spill would put local-memory traffic in the inner loops).
    /// </summary>
    [TestCase("sm_80")]
    [TestCase("sm_90")]
    public void Fast_kernels_do_not_spill_registers(string arch)
    {
        Requires.Nvrtc();
        var compiler = new KernelCompiler(s_cache!.Path);
        foreach (var program in new[] { SoftmaxAttentionTensorCoreCuda.Program, LightningCuda.TensorCoreProgram, SoftmaxAttentionDecodeCuda.Program, LatentAttentionCuda.TensorCoreProgram })
        {
            var log = compiler.Compile(program, arch, ["--ptxas-options=-v"]).Log;
            var lines = log.Split('\n');
            // One entry per kernel; functions the kernels call (e.g. pow's) report their properties too.
            Assert.That(lines.Count(line => line.Contains("Compiling entry function", StringComparison.Ordinal)), Is.EqualTo(program.NameExpressions.Count), $"{program.SourceName}\n{log}");
            var spills = lines.Where(line => line.Contains("spill stores", StringComparison.Ordinal)).ToList();
            Assert.That(spills, Is.Not.Empty.And.All.Contains(" 0 bytes spill stores, 0 bytes spill loads"), $"{program.SourceName}\n{log}");
        }
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
        var compiler = new KernelCompiler(s_cache!.Path, sources);
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
        Assert.Throws<NvrtcException>(() => new KernelCompiler(s_cache!.Path).Compile(program, "sm_80"));
    }
}

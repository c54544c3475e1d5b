using System.Diagnostics;
using System.Text.RegularExpressions;

namespace Attention.Native.Tests.Kernels;

/// <summary>
/// The CUDA kernels run on the CPU under tests/emulation's CUDA emulation (fibers for threads, barriers, shuffles, the
/// tensor-core fragments of ldmatrix/mma.sync written from the PTX ISA, shared memory poisoned with NaN before each block)
/// against double-precision references, so a logic, fragment-layout or uninitialised-read error fails here, on a machine
/// without a GPU. Every harness runs every case in bf16 and in fp16 (IEEE half rounding, overflow and subnormals modelled).
/// Needs the source tree and g++ (C++20, x86-64).
/// </summary>
[Category("Kernels")]
public partial class KernelEmulationTests
{
    /// <summary>
    /// Every kernel file is emulated: each cuda/*.cu is included by a harness (as its .emu.cpp), and each of its
    /// <c>__global__</c> functions is launched by name in some harness. Needs only the source tree.
    /// </summary>
    [Test]
    public void Every_kernel_of_every_kernel_file_has_an_emulation_harness()
    {
        string root = SourceRoot() ?? throw new IgnoreException("no source tree above the test assembly (a deployed bundle)");
        var harnesses = Directory.GetFiles(Path.Combine(root, "tests", "emulation"), "*_harness.cpp").Select(File.ReadAllText).ToArray();
        var kernelFiles = Directory.GetFiles(Path.Combine(root, "cuda"), "*.cu");
        Assert.That(kernelFiles, Is.Not.Empty);
        Assert.Multiple(() =>
        {
            foreach (string file in kernelFiles)
            {
                string name = Path.GetFileNameWithoutExtension(file);
                Assert.That(harnesses.Any(h => h.Contains($"#include \"{name}.emu.cpp\"", StringComparison.Ordinal)), Is.True, $"cuda/{name}.cu is included by no harness");
                foreach (Match m in KernelName().Matches(File.ReadAllText(file)))
                {
                    string kernel = m.Groups[1].Value;
                    var call = new Regex($@"\b{Regex.Escape(kernel)}\s*(<[^;()]*>)?\s*\(");
                    Assert.That(harnesses.Any(h => call.IsMatch(h)), Is.True, $"cuda/{name}.cu: kernel {kernel} is launched by no harness");
                }
            }
        });
    }

    internal static string? SourceRoot()
    {
        string? root = AppContext.BaseDirectory;
        while (root is not null && !File.Exists(Path.Combine(root, "Attention.Native.sln")))
        {
            root = Path.GetDirectoryName(root);
        }
        return root;
    }

    [GeneratedRegex(@"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s*)?(\w+)\s*\(")]
    private static partial Regex KernelName();

    [Test]
    public void Attention_kernels_match_the_reference_under_cpu_emulation()
    {
        string? root = SourceRoot();
        if (root is null)
        {
            Assert.Ignore("no source tree above the test assembly (a deployed bundle): tests/emulation/run.sh not found");
        }
        if (!ExistsOnPath("g++"))
        {
            Assert.Ignore("no g++ on PATH: the kernel emulation needs a C++20 compiler");
        }
        var (exitCode, output, error) = EmulationRun.Result(root);
        TestContext.Out.WriteLine(output);
        Assert.That(exitCode, Is.Zero, $"tests/emulation/run.sh exited {exitCode}:\n{output}\n{error}");
        // One section per harness file, each ending "0 failing", each running both 16-bit types (a case's heading starts with its type).
        string[] harnessFiles = Directory.GetFiles(Path.Combine(root, "tests", "emulation"), "*_harness.cpp");
        var sections = output.Split("== harness ", StringSplitOptions.RemoveEmptyEntries);
        Assert.That(sections, Has.Length.EqualTo(harnessFiles.Length), output);
        Assert.Multiple(() =>
        {
            foreach (string section in sections)
            {
                var lines = section.Split('\n');
                string name = lines[0];
                Assert.That(lines, Does.Contain("0 failing"), $"harness {name}");
                Assert.That(lines.Count(line => line.StartsWith("bf16 ", StringComparison.Ordinal)), Is.GreaterThan(0), $"harness {name} ran bf16");
                Assert.That(lines.Count(line => line.StartsWith("fp16 ", StringComparison.Ordinal)), Is.GreaterThan(0), $"harness {name} ran fp16");
            }
        });
    }

    internal static bool ExistsOnPath(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator).Any(dir => File.Exists(Path.Combine(dir, program)));
}

/// <summary>
/// The run of tests/emulation/run.sh, once per test process. With <c>ATTENTION_NATIVE_EMULATION_EARLY=1</c> (the Test target
/// sets it for a whole-suite run) it starts when the suite does, a separate process beside the mostly single-threaded tests,
/// and the emulation test waits for its result; otherwise the test runs it when it comes.
/// </summary>
internal static class EmulationRun
{
    public const string EarlyVariable = "ATTENTION_NATIVE_EMULATION_EARLY";

    private static Task<(int ExitCode, string Output, string Error)>? s_early;

    public static void StartEarly(string root) => s_early ??= Task.Run(() => Run(root));

    public static (int ExitCode, string Output, string Error) Result(string root) => s_early is { } early ? early.GetAwaiter().GetResult() : Run(root);

    private static (int ExitCode, string Output, string Error) Run(string root)
    {
        var start = new ProcessStartInfo("bash", [Path.Combine(root, "tests", "emulation", "run.sh")])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, output, stderr.Result);
    }
}

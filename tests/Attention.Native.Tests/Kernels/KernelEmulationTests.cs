using System.Diagnostics;

namespace Attention.Native.Tests.Kernels;

/// <summary>
/// The CUDA kernels run on the CPU under tests/emulation's CUDA emulation (fibers for threads, barriers, shuffles, the
/// tensor-core fragments of ldmatrix/mma.sync written from the PTX ISA, shared memory poisoned with NaN before each block)
/// against double-precision references, so a logic, fragment-layout or uninitialised-read error fails here, on a machine
/// without a GPU. Every harness runs every case in bf16 and in fp16 (IEEE half rounding, overflow and subnormals modelled).
/// Needs the source tree and g++ (C++20, x86-64).
/// </summary>
[Category("Kernels")]
public class KernelEmulationTests
{
    [Test]
    public void Attention_kernels_match_the_reference_under_cpu_emulation()
    {
        string? root = AppContext.BaseDirectory;
        while (root is not null && !File.Exists(Path.Combine(root, "Attention.Native.sln")))
        {
            root = Path.GetDirectoryName(root);
        }
        if (root is null)
        {
            Assert.Ignore("no source tree above the test assembly (a deployed bundle): tests/emulation/run.sh not found");
        }
        if (!ExistsOnPath("g++"))
        {
            Assert.Ignore("no g++ on PATH: the kernel emulation needs a C++20 compiler");
        }
        var start = new ProcessStartInfo("bash", [Path.Combine(root, "tests", "emulation", "run.sh")])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        TestContext.Out.WriteLine(output);
        Assert.That(process.ExitCode, Is.Zero, $"tests/emulation/run.sh exited {process.ExitCode}:\n{output}\n{stderr.Result}");
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

    private static bool ExistsOnPath(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator).Any(dir => File.Exists(Path.Combine(dir, program)));
}

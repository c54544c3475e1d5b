using System.Diagnostics;

namespace Attention.Native.Tests.Kernels;

/// <summary>
/// The attention, tensor-core Lightning and decode kernels run on the CPU under tests/emulation's thread-level CUDA emulation (barriers, shuffles, and the
/// tensor-core fragments of ldmatrix/mma.sync written from the PTX ISA) against double-precision references, so a logic or
/// fragment-layout error fails here, on a machine without a GPU. Every harness runs its kernels in bf16 and in fp16 (IEEE
/// half rounding, overflow and subnormals modelled). This is the short form (the cases take the types in turn, heavy decode
/// cases left out); <c>EMU_FULL=1</c> (set by .ci/run after the suite) runs every case in every type. Needs the source tree and g++ (C++20).
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
        // One summary line per harness (CUDA-core attention, tensor-core attention, tensor-core Lightning, decode, TPA decode, MLA decode), none failing.
        string[] lines = output.Split('\n');
        Assert.That(lines.Count(line => line == "0 failing"), Is.EqualTo(6), output);
        // Every harness ran both 16-bit types (in the short form the cases take the types in turn): each case's heading starts with its type.
        var harnesses = string.Join('\n', lines).Split("\n0 failing", StringSplitOptions.RemoveEmptyEntries).Take(6).ToArray();
        Assert.Multiple(() =>
        {
            for (int h = 0; h < harnesses.Length; h++)
            {
                var headings = harnesses[h].Split('\n');
                Assert.That(headings.Count(line => line.StartsWith("bf16 ", StringComparison.Ordinal)), Is.GreaterThan(0), $"harness {h + 1} ran bf16");
                Assert.That(headings.Count(line => line.StartsWith("fp16 ", StringComparison.Ordinal)), Is.GreaterThan(0), $"harness {h + 1} ran fp16");
            }
        });
    }

    private static bool ExistsOnPath(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator).Any(dir => File.Exists(Path.Combine(dir, program)));
}

using System.Diagnostics;
using static Attention.Native.Tests.Cli.AttnRunTests;

namespace Attention.Native.Tests.Cli;

/// <summary>The backend choice: a CUDA backend that cannot start, or an unknown <c>ATTENTION_NATIVE_BACKEND</c>, is one line and exit 2.</summary>
public class AttnRunBackendTests
{
    [TestCase("run")]
    [TestCase("demo")]
    [TestCase("bench")]
    public void Backend_cuda_without_a_driver_is_one_line_and_exit_2(string command)
    {
        if (Attention.Native.Interop.NativeLibraries.Get(Attention.Native.Interop.NativeLibraryKind.Cuda).IsLoaded)
        {
            Assert.Ignore("libcuda loads here: this checks the machines without it");
        }
        using var files = new Files("gqa");
        string[] args = command == "run" ? files.ArgsOn("cuda") : [command, "--backend", "cuda"];
        var (code, _, error) = Run(args);
        Assert.That(code, Is.EqualTo(2), error);
        AssertFailed(files, code, error, $"attn {command}: --backend cuda: the CUDA backend cannot start: Cuda: no loadable library found");
    }

    [Test]
    public void An_unknown_backend_variable_value_is_one_line_naming_the_accepted_values()
    {
        string attn = Path.Combine(AppContext.BaseDirectory, "attn.dll");
        var start = new ProcessStartInfo("dotnet") { ArgumentList = { attn, "demo", "--tokens", "4", "--variant", "mha" }, RedirectStandardOutput = true, RedirectStandardError = true };
        start.Environment[Backend.BackendVariable] = "tpu";
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        string error = process.StandardError.ReadToEnd();
        Assert.That(process.WaitForExit(60_000), Is.True, "attn demo finished");
        Assert.Multiple(() =>
        {
            Assert.That(process.ExitCode, Is.EqualTo(2), error + output.Result);
            Assert.That(error.TrimEnd().Split('\n'), Has.Length.EqualTo(1), error);
            Assert.That(error, Does.Contain("ATTENTION_NATIVE_BACKEND: expected cpu, cuda or auto (or unset), actual 'tpu'"));
        });
    }

    [TestCase(null, null)]
    [TestCase("", null)]
    [TestCase(" Auto ", null)]
    [TestCase("cpu", BackendKind.Cpu)]
    [TestCase("CUDA", BackendKind.Cuda)]
    public void The_backend_variable_accepts_cpu_cuda_and_auto(string? value, BackendKind? expected) =>
        Assert.That(Backend.ParseBackendVariable(value), Is.EqualTo(expected));
}

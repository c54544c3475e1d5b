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
    public void Demo_runs_on_the_cpu_backend_and_prints_the_op_table()
    {
        var (code, output, error) = Run("demo", "--backend", "cpu", "--tokens", "16");
        Assert.Multiple(() =>
        {
            Assert.That(code, Is.Zero, error);
            Assert.That(output, Does.Contain("RMSNorm").And.Contain("Linear").And.Contain("RoPE").And.Contain("forward ms"));
            Assert.That(output, Does.Contain("checksum of y"));
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

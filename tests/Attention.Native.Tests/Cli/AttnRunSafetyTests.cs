using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using Attention.Native.IO;
using Attention.Native.Runtime;
using Attention.Native.Tests.Support;
using Attention.Native.Variants;
using static Attention.Native.Tests.Cli.AttnRunTests;

namespace Attention.Native.Tests.Cli;

/// <summary>
/// <c>attn run</c> on hostile paths and sizes: every user error is one line on stderr with exit code 2, nothing is written,
/// no input is lost, and nothing blocks or runs out of memory.
/// </summary>
public class AttnRunSafetyTests
{
    private static (int Code, string Output, string Error) RunWithin(string fifo, params string[] args) => Fifo.Within(fifo, 10, () => Run(args));

    private static void AssertRefused(Files files, int code, string error, string fragment)
    {
        Assert.That(code, Is.EqualTo(2), error);
        AssertFailed(files, code, error, fragment);
    }

    [TestCase("--input")]
    [TestCase("--weights")]
    [TestCase("--config")]
    [TestCase("--grad")]
    public void Out_equal_to_an_input_is_refused_and_the_input_kept(string option)
    {
        using var files = new Files("gqa");
        string input = option switch { "--input" => files.Input, "--weights" => files.Weights, "--config" => files.Config, _ => files.Grad };
        var before = File.ReadAllBytes(input);
        var args = files.Args("--grad", files.Grad);
        args[Array.IndexOf(args, "--out") + 1] = input;
        var (code, _, error) = Run(args);
        AssertRefused(files, code, error, $"--out: expected a file other than the inputs, actual the same file as {option}");
        Assert.That(File.ReadAllBytes(input), Is.EqualTo(before));
    }

    [Test]
    public void Out_naming_an_input_by_another_spelling_or_a_hard_link_is_refused()
    {
        using var files = new Files("gqa");
        string hard = Path.Combine(files.Dir, "hard.safetensors");
        using (var ln = Process.Start(new ProcessStartInfo("ln") { ArgumentList = { files.Input, hard } })!)
        {
            ln.WaitForExit();
            Assert.That(ln.ExitCode, Is.Zero, "ln");
        }
        foreach (string alias in new[] { Path.Combine(files.Dir, ".", "x.safetensors"), hard })
        {
            var args = files.Args();
            args[Array.IndexOf(args, "--out") + 1] = alias;
            var (code, _, error) = Run(args);
            AssertRefused(files, code, error, "the same file as --input");
        }
    }

    [Test]
    public void Out_that_is_a_fifo_a_device_or_a_link_is_refused_and_left_alone_while_a_linked_input_is_read()
    {
        using var files = new Files("gqa");
        string fifo = Fifo.Create(Path.Combine(files.Dir, "pipe"));
        string kept = Path.Combine(files.Dir, "kept");
        File.WriteAllText(kept, "keep");
        string link = Path.Combine(files.Dir, "link");
        File.CreateSymbolicLink(link, kept);
        foreach (var (path, kind) in new[] { (fifo, "a FIFO"), ("/dev/null", "a character device"), (link, "a symbolic link") })
        {
            var args = files.Args();
            args[Array.IndexOf(args, "--out") + 1] = path;
            var (code, _, error) = RunWithin(fifo, args);
            AssertRefused(files, code, error, $"--out: expected a regular file to replace or a new name, actual {kind}");
        }
        Assert.Multiple(() =>
        {
            Assert.That(LocalFile.Kind(fifo, followLinks: false), Is.EqualTo(UnixFileKind.Fifo));
            Assert.That(new FileInfo(link).LinkTarget, Is.EqualTo(kept));
            Assert.That(File.ReadAllText(kept), Is.EqualTo("keep"));
        });

        // As an input a link is resolved: only --out must not be one.
        string configLink = Path.Combine(files.Dir, "cfg-link.json");
        File.CreateSymbolicLink(configLink, files.Config);
        var linked = files.Args();
        linked[Array.IndexOf(linked, "--config") + 1] = configLink;
        var (linkedCode, _, linkedError) = Run(linked);
        Assert.That(linkedCode, Is.Zero, linkedError);
        Assert.That(File.Exists(files.Out), Is.True);
    }

    [Test]
    public void Out_with_a_240_character_name_is_written()
    {
        using var files = new Files("gqa");
        string longOut = Path.Combine(files.Dir, new string('o', 240));
        var args = files.Args();
        args[Array.IndexOf(args, "--out") + 1] = longOut;
        var (code, _, error) = Run(args);
        Assert.That(code, Is.Zero, error);
        using var result = SafeTensors.Read(longOut);
        Assert.That(result.Names, Is.EqualTo(new[] { "y" }));
        Assert.That(Directory.GetFiles(files.Dir, "*.tmp"), Is.Empty);
    }

    [TestCase("--out")]
    [TestCase("--config")]
    public void An_empty_path_is_one_line_and_exit_2(string option)
    {
        using var files = new Files("gqa");
        var args = files.Args();
        args[Array.IndexOf(args, option) + 1] = "";
        var (code, output, error) = Run(args);
        AssertRefused(files, code, error, $"{option}: expected a file path, actual an empty string");
        Assert.That(output, Is.Empty, "no help text");
    }

    [TestCase("--config")]
    [TestCase("--weights")]
    [TestCase("--input")]
    [TestCase("--grad")]
    public void An_input_that_is_a_fifo_is_refused_without_blocking(string option)
    {
        using var files = new Files("gqa");
        string fifo = Fifo.Create(Path.Combine(files.Dir, "pipe"));
        var args = files.Args("--grad", files.Grad);
        args[Array.IndexOf(args, option) + 1] = fifo;
        var (code, _, error) = RunWithin(fifo, args);
        AssertRefused(files, code, error, $"{option}: expected a regular file, actual a FIFO");
    }

    [Test]
    public void A_config_that_is_a_character_device_is_refused_at_once()
    {
        using var files = new Files("gqa");
        var args = files.Args();
        args[Array.IndexOf(args, "--config") + 1] = "/dev/urandom";
        var task = Task.Run(() => Run(args));
        Assert.That(task.Wait(TimeSpan.FromSeconds(10)), Is.True, "reading /dev/urandom never ends");
        var (code, _, error) = task.Result;
        AssertRefused(files, code, error, "--config: expected a regular file, actual a character device");
    }

    [Test]
    public void A_config_over_1_MiB_is_refused()
    {
        using var files = new Files("gqa");
        // Valid JSON padded with whitespace: only the size is wrong.
        File.WriteAllText(files.Config, AttnRunTests.SmallConfigs["gqa"] + new string(' ', Attention.Cli.RunCommand.MaxConfigBytes));
        var (code, _, error) = Run(files.Args());
        AssertRefused(files, code, error, "--config: expected a JSON file of at most 1048576 bytes (1 MiB)");
    }

    [Test]
    public void A_run_too_large_for_memory_is_refused_at_once_with_nothing_written()
    {
        using var files = new Files("gqa");
        // transnormer with 16 heads of width 1024 keeps ~9·16384 values per token: at T = 4M that is terabytes.
        const string config = """{"d_model": 16, "n_heads": 16, "head_dim": 1024, "layer_idx": 0, "num_layers": 2}""";
        File.WriteAllText(files.Config, config);
        using (var layer = AttentionLayer.Create(LayerConfig.Parse("transnormer", config)))
        {
            SafeTensors.Write(files.Weights, layer.Parameters);
        }
        WriteSparseX(files.Input, batch: 1, tokens: 1 << 22, width: 16);
        var watch = Stopwatch.StartNew();
        var args = files.Args();
        args[Array.IndexOf(args, "--variant") + 1] = "transnormer";
        var (code, _, error) = Run(args);
        AssertRefused(files, code, error, "--input: expected a run that fits in the");
        Assert.Multiple(() =>
        {
            Assert.That(error, Does.Contain("actual an estimated").And.Contain("GiB for the transnormer forward of x [1, 4194304, 16] F32"));
            Assert.That(watch.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)), "refused before reading the data");
        });
    }

    [Test]
    public void Names_of_an_input_without_x_are_listed_up_to_twenty()
    {
        using var files = new Files("gqa");
        using var t = Backend.Cpu.Zeros(new Shape(1));
        SafeTensors.Write(files.Input, Enumerable.Range(0, 1000).Select(i => new KeyValuePair<string, Tensor>($"n{i:D4}", t)));
        var (code, _, error) = Run(files.Args());
        AssertRefused(files, code, error, "expected a tensor named 'x', actual names: n0000, n0001");
        Assert.That(error, Does.Contain("n0019, … and 980 more").And.Length.LessThan(400));
    }

    // x [batch, tokens, width] F32 of zeros as a sparse file: the header, then a length set without writing the data.
    private static void WriteSparseX(string path, int batch, int tokens, int width)
    {
        long bytes = 4L * batch * tokens * width;
        string json = $"{{\"x\":{{\"dtype\":\"F32\",\"shape\":[{batch},{tokens},{width}],\"data_offsets\":[0,{bytes}]}}}}";
        json = json.PadRight((json.Length + 7) / 8 * 8);
        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write);
        Span<byte> prefix = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)json.Length);
        stream.Write(prefix);
        stream.Write(Encoding.ASCII.GetBytes(json));
        stream.SetLength(8 + json.Length + bytes);
    }
}

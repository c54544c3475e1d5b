using Attention.Native.IO;
using Attention.Native.Tests.Support;
using Attention.Native.Variants;
using static Attention.Native.Tests.Cli.AttnRunTests;

namespace Attention.Native.Tests.Cli;

/// <summary>
/// <c>attn run --lengths</c>: x <c>[1, N, d_model]</c> as a ragged batch. y, dx and every gradient equal those of each
/// sequence run alone through the library on the same files (gradients of parameters summed over the sequences); with
/// <c>--decode</c> the tokens go through a serving pool and y is the same. F64, so the comparisons hold to 1e-12.
/// </summary>
public class AttnRunRaggedTests
{
    // Lengths that cross pages of 4 and leave the sequences unequal, so shorter ones drop out of the decode steps early.
    private static readonly int[] Lengths = [5, 1, 9, 3];
    private const string LengthsText = "5,1,9,3";

    private static readonly string[] Causal = ["mha", "gqa", "mqa", "mla", "tpa", "sas", "transnormer", "mfa"];

    private static Files Ragged(string variant) => new(variant, DType.F64, batch: 1, tokens: Lengths.Sum());

    /// <summary>Each sequence of x alone through the library: its y rows, dx rows, and its parameter gradients.</summary>
    private static (double[] Y, double[] Dx, Dictionary<string, double[]> Grads) Apart(Files files)
    {
        int d = files.Layer.Config.DModel;
        var x = files.X.ToDoubleArray();
        var dy = files.Dy.ToDoubleArray();
        var y = new double[x.Length];
        var dx = new double[x.Length];
        var grads = new Dictionary<string, double[]>();
        int start = 0;
        foreach (int length in Lengths)
        {
            var shape = new Shape(1, length, d);
            using var xs = Backend.Cpu.FromArray(x.AsSpan(start * d, length * d).ToArray(), shape, DType.F64);
            using var dys = Backend.Cpu.FromArray(dy.AsSpan(start * d, length * d).ToArray(), shape, DType.F64);
            using var pass = files.Layer.ForwardForTraining(xs);
            using var g = pass.Backward(dys);
            pass.Output.ToDoubleArray().CopyTo(y, start * d);
            g.Input.ToDoubleArray().CopyTo(dx, start * d);
            foreach (var (name, tensor) in g.Parameters)
            {
                var values = tensor.ToDoubleArray();
                var sum = grads.TryGetValue(name, out var s) ? s : grads[name] = new double[values.Length];
                for (int i = 0; i < values.Length; i++)
                {
                    sum[i] += values[i];
                }
            }
            start += length;
        }
        return (y, dx, grads);
    }

    private static double MaxRelative(double[] expected, double[] actual)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length));
        double scale = 1 + expected.Max(Math.Abs);
        return expected.Zip(actual, (e, a) => Math.Abs(e - a)).Max() / scale;
    }

    [TestCase("mha")]
    [TestCase("gqa")]
    [TestCase("mla")]
    [TestCase("tpa")]
    [TestCase("sas")]
    [TestCase("transnormer")]
    [TestCase("mfa")]
    public void Lengths_give_y_dx_and_gradients_of_the_sequences_apart(string variant)
    {
        using var files = Ragged(variant);
        var (code, _, error) = Run(files.Args("--lengths", LengthsText, "--grad", files.Grad));
        Assert.That(code, Is.Zero, error);
        using var result = SafeTensors.Read(files.Out);
        var (y, dx, grads) = Apart(files);
        Assert.That(result.Names, Is.EquivalentTo(new[] { "y", "dx" }.Concat(grads.Keys.Select(k => $"grad.{k}"))));
        Assert.That(result.Metadata["lengths"], Is.EqualTo(LengthsText));
        Assert.Multiple(() =>
        {
            Assert.That(MaxRelative(y, result["y"].ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), "y");
            Assert.That(MaxRelative(dx, result["dx"].ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), "dx");
            foreach (var (name, sum) in grads)
            {
                Assert.That(MaxRelative(sum, result[$"grad.{name}"].ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), name);
            }
        });
    }

    [Test]
    public void Lengths_without_grad_write_the_ragged_forward_alone()
    {
        using var files = Ragged("mqa");
        var (code, _, error) = Run(files.Args("--lengths", LengthsText));
        Assert.That(code, Is.Zero, error);
        using var result = SafeTensors.Read(files.Out);
        Assert.That(result.Names, Is.EquivalentTo(new[] { "y" }));
        Assert.That(result.Metadata["mode"], Is.EqualTo("forward"));
        Assert.That(MaxRelative(Apart(files).Y, result["y"].ToDoubleArray()), Is.LessThanOrEqualTo(1e-12));
        // The sequences really are apart: the same x as one sequence gives other rows past the first sequence.
        using var whole = files.Layer.Forward(files.X);
        Assert.That(MaxRelative(whole.ToDoubleArray(), result["y"].ToDoubleArray()), Is.GreaterThan(1e-3));
    }

    [TestCaseSource(nameof(Causal))]
    public void Decode_through_a_serving_pool_gives_the_sequences_apart(string variant)
    {
        using var files = Ragged(variant);
        var (code, _, error) = Run(files.Args("--lengths", LengthsText, "--decode", "--page-size", "4"));
        Assert.That(code, Is.Zero, error);
        using var result = SafeTensors.Read(files.Out);
        Assert.That((result.Metadata["mode"], result.Metadata["page_size"], result.Metadata["lengths"]), Is.EqualTo(("decode", "4", LengthsText)));
        Assert.That(MaxRelative(Apart(files).Y, result["y"].ToDoubleArray()), Is.LessThanOrEqualTo(1e-12));
    }

    [Test]
    public void Decode_with_grad_writes_the_decoded_y_and_the_ragged_gradients_at_the_default_page_size()
    {
        using var files = Ragged("gqa");
        var (code, _, error) = Run(files.Args("--lengths", LengthsText, "--decode", "--grad", files.Grad));
        Assert.That(code, Is.Zero, error);
        using var result = SafeTensors.Read(files.Out);
        var (y, dx, grads) = Apart(files);
        Assert.That(result.Metadata["page_size"], Is.EqualTo("16"));
        Assert.That(MaxRelative(y, result["y"].ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), "y");
        Assert.That(MaxRelative(dx, result["dx"].ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), "dx");
        Assert.That(MaxRelative(grads["w_q"], result["grad.w_q"].ToDoubleArray()), Is.LessThanOrEqualTo(1e-12), "w_q");
    }

    [TestCase("", "--lengths: expected comma-separated sequence lengths (e.g. 5,1,9), actual an empty value")]
    [TestCase("5,x,3", "--lengths: expected comma-separated integers in [1, 2147483647], actual 'x' (item 2 of '5,x,3')")]
    [TestCase("5,,3", "actual '' (item 2 of '5,,3')")]
    [TestCase("5,1.5,3", "actual '1.5'")]
    [TestCase("99999999999", "actual '99999999999'")]
    [TestCase("5,0,13", "--lengths: expected every length ≥ 1 (a sequence holds a token), actual 0 (item 2 of '5,0,13')")]
    [TestCase("20,-2", "actual -2 (item 2 of '20,-2')")]
    [TestCase("5,1,9", "--lengths: expected lengths summing to x's N = 18, actual 5,1,9, which sum to 15")]
    [TestCase("5,1,9,4", "which sum to 19")]
    [TestCase("2147483647,2147483647", "--lengths: expected at most 2147483647 tokens in all, actual 4294967294")]
    public void Bad_lengths_fail_with_one_line_naming_the_option(string lengths, string fragment)
    {
        using var files = Ragged("gqa");
        var (code, _, error) = Run(files.Args("--lengths", lengths));
        Assert.That(code, Is.EqualTo(2), error);
        AssertFailed(files, code, error, fragment);
    }

    [TestCase("0", "--page-size: expected an integer ≥ 1 (tokens per page), actual '0'")]
    [TestCase("-16", "actual '-16'")]
    [TestCase("four", "actual 'four'")]
    [TestCase("2147483647", "--page-size: expected a page size at which the sequences' whole pages hold at most 2147483647 tokens, actual 2147483647 (8589934588 tokens)")]
    public void A_bad_page_size_fails_with_one_line_naming_the_option(string pageSize, string fragment)
    {
        using var files = Ragged("gqa");
        var (code, _, error) = Run(files.Args("--lengths", LengthsText, "--decode", "--page-size", pageSize));
        Assert.That(code, Is.EqualTo(2), error);
        AssertFailed(files, code, error, fragment);
    }

    [Test]
    public void Page_size_without_decode_and_lengths_and_lengths_of_a_batch_of_two_are_refused()
    {
        using var files = Ragged("gqa");
        var (code, _, error) = Run(files.Args("--lengths", LengthsText, "--page-size", "4"));
        AssertFailed(files, code, error, "--page-size: expected only with --decode and --lengths (the serving pool's pages), actual --page-size 4 without --decode");
        (code, _, error) = Run(files.Args("--decode", "--page-size", "4"));
        AssertFailed(files, code, error, "actual --page-size 4 without --lengths");

        using var batch = new Files("gqa", DType.F64, batch: 2, tokens: 9);
        (code, _, error) = Run(batch.Args("--lengths", "9,9"));
        AssertFailed(batch, code, error, "--lengths: expected x of shape [1, N, d_model] (the sequences packed into one batch), actual [2, 9, 64]");
    }

    [TestCase("agent")]
    [TestCase("flatten")]
    public void Variants_with_a_fixed_seq_len_refuse_lengths(string variant)
    {
        using var files = new Files(variant, DType.F64, batch: 1, tokens: 6);
        var (code, _, error) = Run(files.Args("--lengths", "2,4"));
        Assert.That(code, Is.EqualTo(2), error);
        AssertFailed(files, code, error, $"--lengths: expected a variant that takes a ragged batch (any but agent and flatten, whose seq_len is fixed), actual {variant}");
    }

    [Test]
    public void Help_documents_lengths_and_page_size()
    {
        var (code, output, _) = Run("run", "--help");
        Assert.That(code, Is.Zero);
        Assert.That(output, Does.Contain("--lengths").And.Contain("ragged batch").And.Contain("--page-size").And.Contain("serving pool"));
    }
}

using Attention.Native.Tests.Support;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Variants;

/// <summary>
/// Issue 13 item 6: misuse of the training and cache APIs is refused with a typed exception instead of silently giving
/// wrong numbers, and the threading contract in the XML docs and the README holds.
/// </summary>
public class MisuseTests
{
    private static GqaConfig Gqa() => new() { Kind = "gqa", DModel = 16, Heads = 4, KvHeads = 2, HeadDim = 4 };

    private static Tensor Input(int batch, int tokens, int dModel = 16, int seed = 5) =>
        Backend.Cpu.FromArray(TestData.Normal(seed, (long)batch * tokens * dModel), new Shape(batch, tokens, dModel), DType.F64);

    [Test]
    public void Backward_of_a_disposed_pass_throws_instead_of_returning_zeros()
    {
        using var layer = VariantTestKit.Layer(Gqa());
        using var x = Input(2, 3);
        var pass = layer.ForwardForTraining(x);
        using var dy = Backend.Cpu.FromArray(TestData.Normal(6, 2 * 3 * 16), new Shape(2, 3, 16), DType.F64);
        pass.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pass.Backward(dy).Dispose());
        pass.Dispose(); // twice is harmless
    }

    [Test]
    public void Backward_after_the_layer_is_disposed_throws()
    {
        var layer = VariantTestKit.Layer(Gqa());
        using var x = Input(1, 2);
        using var pass = layer.ForwardForTraining(x);
        using var dy = Backend.Cpu.Zeros(pass.Output.Shape, DType.F64);
        layer.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pass.Backward(dy).Dispose());
    }

    private static IEnumerable<TestCaseData> ParameterWrites()
    {
        yield return new TestCaseData((Action<AttentionLayer>)(l => l.Parameters["w_k"].CopyFrom(new double[l.Parameters["w_k"].ElementCount])), "w_k").SetName("CopyFrom on one parameter");
        yield return new TestCaseData((Action<AttentionLayer>)(l => ((HostTensor)l.Parameters["w_o"]).AsSpan<double>()[0] += 1), "w_o").SetName("a write through AsSpan");
        yield return new TestCaseData((Action<AttentionLayer>)(l => l.Parameters["w_q"].Reshape(new Shape((int)l.Parameters["w_q"].ElementCount)).CopyFrom(new double[l.Parameters["w_q"].ElementCount])), "w_q").SetName("a write through a view");
        yield return new TestCaseData((Action<AttentionLayer>)(l => l.InitializeParameters(seed: 99)), "w_q, w_k, w_v, w_o").SetName("InitializeParameters");
        yield return new TestCaseData((Action<AttentionLayer>)(l => l.LoadParameters(l.Parameters)), "w_q, w_k, w_v, w_o").SetName("LoadParameters");
    }

    [TestCaseSource(nameof(ParameterWrites))]
    public void Backward_after_a_parameter_was_written_throws_naming_it(Action<AttentionLayer> write, string names)
    {
        using var layer = VariantTestKit.Layer(Gqa());
        using var x = Input(2, 3);
        using var pass = layer.ForwardForTraining(x);
        using var dy = Backend.Cpu.FromArray(TestData.Normal(6, 2 * 3 * 16), new Shape(2, 3, 16), DType.F64);
        write(layer);
        var e = Assert.Throws<InvalidOperationException>(() => pass.Backward(dy).Dispose());
        Assert.That(e!.Message, Does.Contain($"({names})"));
    }

    [Test]
    public void Reading_parameters_between_forward_and_backward_is_not_a_change()
    {
        using var layer = VariantTestKit.Layer(Gqa());
        using var x = Input(2, 3);
        using var pass = layer.ForwardForTraining(x);
        using var dy = Backend.Cpu.FromArray(TestData.Normal(6, 2 * 3 * 16), new Shape(2, 3, 16), DType.F64);
        foreach (var p in layer.Parameters.Values)
        {
            _ = p.ToDoubleArray();
        }
        using var y = layer.Forward(x); // an inference forward reads them too
        using var grads = pass.Backward(dy);
        Assert.That(grads.Parameters, Has.Count.EqualTo(4));
    }

    [Test]
    public void A_cache_for_int_MaxValue_sequences_is_refused_naming_the_batch()
    {
        using var layer = (CausalAttentionLayer)VariantTestKit.Layer(Gqa(), dtype: DType.F32);
        var e = Assert.Throws<ArgumentException>(() => layer.CreateCache(int.MaxValue).Dispose());
        Assert.That(e!.ParamName, Is.EqualTo("batch"));
        Assert.That(e.Message, Does.Contain("2147483647 sequences").And.Contain("can allocate"));
    }

    [Test]
    public void A_capacity_past_what_a_cache_row_can_address_is_refused_naming_the_options()
    {
        using var layer = (CausalAttentionLayer)VariantTestKit.Layer(Gqa(), dtype: DType.F32);
        // Rows of 2·4 = 8 elements per buffer: at most 2^31/8 tokens per sequence.
        var e = Assert.Throws<ArgumentException>(() => layer.CreateCache(1, new CacheOptions(MaxLength: int.MaxValue)).Dispose());
        Assert.That(e!.ParamName, Is.EqualTo("options"));
        Assert.That(e.Message, Does.Contain((int.MaxValue / 8).ToString(System.Globalization.CultureInfo.InvariantCulture)));
    }

    [Test]
    public void A_transnormer_state_too_large_for_the_backend_is_refused_naming_the_batch()
    {
        var config = new TransNormerConfig { DModel = 16, Heads = 2, HeadDim = 8, LayerIndex = 1, NumLayers = 4 };
        using var layer = (CausalAttentionLayer)VariantTestKit.Layer(config, dtype: DType.F32);
        var e = Assert.Throws<ArgumentException>(() => layer.CreateCache(int.MaxValue).Dispose());
        Assert.That(e!.ParamName, Is.EqualTo("batch"));
    }

    [Test]
    public void One_cache_used_from_two_threads_throws_instead_of_corrupting_its_length()
    {
        using var layer = (CausalAttentionLayer)VariantTestKit.Layer(Gqa(), dtype: DType.F32);
        using var cache = layer.CreateCache(1, new CacheOptions(MaxLength: 1 << 16));
        using var token = Backend.Cpu.FromArray(new float[16], new Shape(1, 1, 16));
        int succeeded = 0, refused = 0;
        var deadline = DateTime.UtcNow.AddSeconds(20);
        using var start = new Barrier(2);
        void Hammer()
        {
            start.SignalAndWait();
            while (Volatile.Read(ref refused) < 20 && DateTime.UtcNow < deadline && cache.Length < (1 << 16) - 64)
            {
                try
                {
                    cache.DecodeStep(token).Dispose();
                    Interlocked.Increment(ref succeeded);
                }
                catch (InvalidOperationException e) when (e.Message.Contains("two threads", StringComparison.Ordinal))
                {
                    Interlocked.Increment(ref refused);
                }
            }
        }
        var threads = new[] { new Thread(Hammer), new Thread(Hammer) };
        foreach (var t in threads)
        {
            t.Start();
        }
        foreach (var t in threads)
        {
            t.Join();
        }
        Assert.Multiple(() =>
        {
            Assert.That(refused, Is.GreaterThan(0), "two threads decoding into one cache were never detected");
            Assert.That(cache.Length, Is.EqualTo(succeeded), "every completed step appended exactly one token");
        });
    }

    [TestCase("gqa")]
    [TestCase("transnormer")]
    [TestCase("flatten")]
    public void A_layer_is_safe_to_share_between_threads(string variant)
    {
        // The documented contract: forward, training passes and caches of one layer may run on many threads at once.
        LayerConfig config = variant switch
        {
            "gqa" => Gqa(),
            "transnormer" => new TransNormerConfig { DModel = 16, Heads = 2, HeadDim = 8, LayerIndex = 1, NumLayers = 4 },
            _ => new FlattenConfig { DModel = 16, Heads = 2, SeqLen = 9, DwcKernel = 3 },
        };
        using var layer = VariantTestKit.Layer(config, dtype: DType.F32);
        int tokens = variant == "flatten" ? 9 : 7;
        var inputs = Enumerable.Range(0, 4).Select(i => Backend.Cpu.FromArray(TestData.Normal(20 + i, 2L * tokens * 16).Select(v => (float)v).ToArray(), new Shape(2, tokens, 16))).ToArray();
        try
        {
            var expected = inputs.Select(x => Run(layer, x)).ToArray();
            Parallel.For(0, 4 * 8, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i =>
            {
                var r = Run(layer, inputs[i % 4]);
                Assert.That(r, Is.EqualTo(expected[i % 4]).AsCollection, $"call {i} on input {i % 4} differs from the same call made alone");
            });
        }
        finally
        {
            foreach (var x in inputs)
            {
                x.Dispose();
            }
        }
    }

    private static float[][] Run(AttentionLayer layer, Tensor x)
    {
        using var y = layer.Forward(x);
        using var pass = layer.ForwardForTraining(x);
        using var dy = Backend.Cpu.FromArray(Enumerable.Repeat(0.5f, (int)pass.Output.ElementCount).ToArray(), pass.Output.Shape);
        using var grads = pass.Backward(dy);
        return [y.ToArray(), grads.Input.ToArray(), .. grads.Parameters.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => p.Value.ToArray())];
    }
}

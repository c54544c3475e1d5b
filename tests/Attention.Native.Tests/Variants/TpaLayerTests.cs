using Attention.Native.Ops;
using Attention.Native.Variants;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Variants;

public class TpaLayerTests
{
    private static TpaConfig Config(int heads = 2, int qRank = 3, int kRank = 2, int vRank = 2, bool rope = true, bool causal = true, RopeStyle style = RopeStyle.Half) => new()
    {
        DModel = 8, Heads = heads, HeadDim = 4, QRank = qRank, KRank = kRank, VRank = vRank, Rope = rope, Causal = causal, RopeStyle = style,
    };

    [TestCase(2, 3, 2, 2, true, true, 2, 3)]
    [TestCase(2, 1, 1, 1, true, true, 1, 4)]
    [TestCase(1, 2, 3, 1, true, true, 2, 3)]
    [TestCase(3, 2, 2, 3, false, false, 1, 3)]
    [TestCase(2, 3, 2, 2, true, true, 2, 1)]
    public void Gradients_match_finite_differences(int heads, int qRank, int kRank, int vRank, bool rope, bool causal, int batch, int tokens)
    {
        using var layer = VariantTestKit.Layer(Config(heads, qRank, kRank, vRank, rope, causal, RopeStyle.Interleaved));
        double error = VariantTestKit.GradientError(layer, batch, tokens);
        GradientCheck.AssertClose($"tpa H={heads} ranks={qRank}/{kRank}/{vRank} rope={rope} causal={causal} B={batch} T={tokens}", error);
    }

    [Test]
    public void Parameters_are_named_and_ordered_as_in_the_spec()
    {
        using var layer = new TpaLayer(Config());
        Assert.That(layer.ParameterSpecs.Select(s => s.Name), Is.EqualTo(new[] { "w_a_q", "w_a_k", "w_a_v", "w_b_q", "w_b_k", "w_b_v", "w_o" }));
        Assert.That(layer.ParameterSpecs.Select(s => s.Shape), Is.EqualTo(new[]
        {
            new Shape(6, 8), new Shape(4, 8), new Shape(4, 8), new Shape(12, 8), new Shape(8, 8), new Shape(8, 8), new Shape(8, 8),
        }));
        using var created = AttentionLayer.Create(Config());
        Assert.That(created, Is.TypeOf<TpaLayer>());
    }

    [Test]
    public void Forward_equals_the_formula_written_out()
    {
        // Factors, RoPE (half style) on the feature factors of q and k only, the (1/R)-scaled contractions, causal softmax
        // attention with scale 1/sqrt(d), then w_o — all computed plainly here.
        const int b = 2, t = 5, dm = 8, h = 2, d = 4, rq = 3, rk = 2, rv = 2;
        using var layer = VariantTestKit.Layer(Config(h, rq, rk, rv));
        var x = TestData.Normal(9, b * t * dm);
        double[] W(string name) => layer.Parameters[name].ToDoubleArray();
        double[] Project(double[] w, int outWidth)
        {
            var y = new double[b * t * outWidth];
            for (int r = 0; r < b * t; r++)
            {
                for (int o = 0; o < outWidth; o++)
                {
                    for (int i = 0; i < dm; i++)
                    {
                        y[(r * outWidth) + o] += x[(r * dm) + i] * w[(o * dm) + i];
                    }
                }
            }
            return y;
        }
        // Each d-wide row of token t (rows are [b, t, rank]) rotates by position t.
        static double[] Rotate(double[] rows, int rank)
        {
            var y = (double[])rows.Clone();
            for (int row = 0; row < b * t * rank; row++)
            {
                int position = row / rank % t;
                for (int j = 0; j < d / 2; j++)
                {
                    double angle = position * Math.Pow(10000, -2.0 * j / d);
                    double first = rows[(row * d) + j], second = rows[(row * d) + j + (d / 2)];
                    y[(row * d) + j] = (first * Math.Cos(angle)) - (second * Math.Sin(angle));
                    y[(row * d) + j + (d / 2)] = (second * Math.Cos(angle)) + (first * Math.Sin(angle));
                }
            }
            return y;
        }
        double[] Contract(string s, int rank, bool rotate)
        {
            var heads = Project(W($"w_a_{s}"), h * rank);
            var features = Project(W($"w_b_{s}"), rank * d);
            if (rotate)
            {
                features = Rotate(features, rank);
            }
            var y = new double[b * t * h * d];
            for (int token = 0; token < b * t; token++)
            {
                for (int head = 0; head < h; head++)
                {
                    for (int c = 0; c < d; c++)
                    {
                        for (int r = 0; r < rank; r++)
                        {
                            y[(((token * h) + head) * d) + c] += heads[(((token * h) + head) * rank) + r] * features[(((token * rank) + r) * d) + c] / rank;
                        }
                    }
                }
            }
            return y;
        }
        var q = Contract("q", rq, true);
        var k = Contract("k", rk, true);
        var v = Contract("v", rv, false);
        var attention = Ops.SoftmaxAttentionTests.Naive(q, k, v, null, b, t, h, d, t, h, d, 1 / Math.Sqrt(d), true, t);
        var wo = W("w_o");
        var expected = new double[b * t * dm];
        for (int r = 0; r < b * t; r++)
        {
            for (int o = 0; o < dm; o++)
            {
                for (int i = 0; i < h * d; i++)
                {
                    expected[(r * dm) + o] += attention[(r * h * d) + i] * wo[(o * h * d) + i];
                }
            }
        }
        using var tx = Backend.Cpu.FromArray(x, new Shape(b, t, dm), DType.F64);
        using var y = layer.Forward(tx);
        Assert.That(y.ToDoubleArray(), Is.EqualTo(expected).Within(1e-12));
    }

    [TestCase(2, 3, 2, 2, 1, 8, 0)]
    [TestCase(2, 3, 2, 2, 2, 9, 4)]
    [TestCase(1, 1, 1, 1, 2, 6, 1)]
    [TestCase(3, 2, 3, 1, 1, 5, 5)]
    public void Decoding_from_the_factors_reproduces_the_full_forward(int heads, int qRank, int kRank, int vRank, int batch, int tokens, int prompt)
    {
        using var layer = (CausalAttentionLayer)VariantTestKit.Layer(Config(heads, qRank, kRank, vRank, style: RopeStyle.Interleaved));
        double growing = VariantTestKit.DecodeError(layer, batch, tokens, prompt, new CacheOptions(InitialCapacity: 1));
        double reserved = VariantTestKit.DecodeError(layer, batch, tokens, prompt, new CacheOptions(MaxLength: tokens));
        Assert.That(growing, Is.LessThan(1e-12));
        Assert.That(reserved, Is.LessThan(1e-12));
    }

    [Test]
    public void Cache_holds_only_the_factors_never_k_or_v()
    {
        // Benchmark config: H 32, d 64, ranks 6/2/2 → (R_k + R_v)·(H + d) = 4 · 96 = 384 elements per token,
        // against 2·H·d = 4096 for materialised k and v.
        var bench = new TpaConfig { DModel = 2048, Heads = 32, HeadDim = 64, QRank = 6, KRank = 2, VRank = 2 };
        // The layer itself would allocate 2048-wide projections: a small-d_model twin has the same cache.
        using var layer = new TpaLayer(bench with { DModel = 8 });
        using var cache = layer.CreateCache(2);
        Assert.That(layer.CacheElementsPerToken, Is.EqualTo(384));
        Assert.That(cache.ElementsPerToken, Is.EqualTo(384));
        Assert.That(cache.ByteCount, Is.EqualTo(2L * cache.Capacity * 384 * sizeof(float)));
    }

    [Test]
    public void Configs_are_validated_with_clear_errors()
    {
        static string Message(string json) => Assert.Throws<ArgumentException>(() => LayerConfig.Parse("tpa", json))!.Message;
        const string Good = "\"d_model\": 64, \"n_heads\": 4, \"q_rank\": 6, \"k_rank\": 2";
        Assert.That(Message("{" + Good + ", \"v_rank\": 2, \"head_dim\": 15}"), Does.Contain("head_dim").And.Contain("even"));
        Assert.That(Message("{" + Good + ", \"v_rank\": 0, \"head_dim\": 16}"), Does.Contain("v_rank").And.Contain("positive"));
        Assert.That(Message("{" + Good + ", \"head_dim\": 16, \"rank_v\": 2}"), Does.Contain("missing keys: v_rank").And.Contain("unknown keys: rank_v"));
        Assert.That(Message("{" + Good + ", \"v_rank\": 2, \"head_dim\": 16, \"causal\": 1}"), Does.Contain("causal: expected true or false"));
        var parsed = (TpaConfig)LayerConfig.Parse("tpa", "{" + Good + ", \"v_rank\": 2, \"head_dim\": 15, \"rope\": false}");
        Assert.That((parsed.HeadDim, parsed.Causal, parsed.Rope, parsed.RopeStyle), Is.EqualTo((15, true, false, RopeStyle.Half)));
        Assert.That(LayerConfig.Parse("tpa", parsed.ToJson()), Is.EqualTo(parsed));
    }

    [Test]
    public void A_non_causal_layer_refuses_a_cache()
    {
        using var layer = new TpaLayer(Config(causal: false));
        Assert.That(layer.IsCausal, Is.False);
        Assert.Throws<InvalidOperationException>(() => layer.CreateCache(1));
    }
}

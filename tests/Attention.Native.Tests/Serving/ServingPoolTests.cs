using Attention.Native.Inference;
using Attention.Native.Tests.Support;
using Attention.Native.Tests.Variants;
using Attention.Native.Variants;

namespace Attention.Native.Tests.Serving;

/// <summary>
/// Continuous batching through <see cref="ServingPool"/> for every causal variant: sequences admitted, prefilled (in
/// chunks), decoded in changing sets, forked and released while others run; every output row equals the matching row of its
/// sequence's full forward, and the pool's pages are all accounted for.
/// </summary>
[TestFixture]
public sealed class ServingPoolTests
{
    /// <summary>The causal cases of <see cref="RaggedLayerTests.Cases"/>.</summary>
    public static IEnumerable<TestCaseData> CausalCases() =>
        RaggedLayerTests.Cases().Where(c => !((string)c.Arguments[1]!).Contains("\"causal\": false", StringComparison.Ordinal));

    [TestCaseSource(nameof(CausalCases))]
    public void Continuous_batching_equals_each_sequences_full_forward(string variant, string json)
    {
        using var layer = (CausalAttentionLayer)VariantTestKit.Layer(LayerConfig.Parse(variant, json), seed: 31);
        using var pool = new ServingPool(layer, new ServingPoolOptions(TokenBudget: 256, PageSize: 4, MaxSequences: 8));
        var run = new Scenario(layer, pool);
        var a = run.Admit();
        run.Prefill(a, 7, chunk: 3);
        var b = run.Admit();
        run.Prefill(b, 2);
        run.Decode(a);
        var c = run.Admit();
        run.Prefill(c, 13);
        run.Decode(a, b, c);
        run.Decode(c, a);
        run.Step((b, 3), (a, 1), (c, 2));
        var d = run.Fork(a);
        run.Decode(d, a);
        run.Release(b);
        run.Decode(c, d, a);
        var e = run.Fork(c);
        run.Release(c);
        run.Decode(e, d);
        run.Decode(e);
        run.Check();
        run.Release(a);
        run.Release(d);
        run.Release(e);
        Assert.That(pool.FreePages, Is.EqualTo(pool.PageCount), "every page back on the free list");
        Assert.That(pool.Sequences, Is.Empty);
    }

    [TestCase(16)]
    [TestCase(64)]
    public void Page_sizes_of_16_and_64_give_the_same_outputs(int pageSize)
    {
        using var layer = (CausalAttentionLayer)VariantTestKit.Layer(LayerConfig.Parse("gqa", """{"d_model": 32, "n_heads": 4, "n_kv_heads": 2, "head_dim": 8, "rope": true}"""), seed: 3);
        using var pool = new ServingPool(layer, new ServingPoolOptions(TokenBudget: 300, PageSize: pageSize));
        var run = new Scenario(layer, pool);
        var a = run.Admit();
        run.Prefill(a, 70, chunk: 33);
        var b = run.Admit();
        run.Prefill(b, 15);
        for (int i = 0; i < 3; i++)
        {
            run.Decode(a, b);
        }
        run.Check();
        Assert.That(pool.PagesOf(a), Is.EqualTo((73 + pageSize - 1) / pageSize));
    }

    [Test]
    public void An_exhausted_pool_refuses_the_step_and_loses_no_page()
    {
        using var layer = (CausalAttentionLayer)VariantTestKit.Layer(LayerConfig.Parse("mla", """{"d_model": 32, "n_heads": 2, "q_lora_rank": 16, "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8}"""), seed: 5);
        using var pool = new ServingPool(layer, new ServingPoolOptions(TokenBudget: 16, PageSize: 4));
        Assert.That(pool.PageCount, Is.EqualTo(4));
        var run = new Scenario(layer, pool);
        var a = run.Admit();
        run.Prefill(a, 10);
        Assert.That(pool.FreePages, Is.EqualTo(1));
        var b = run.Admit();
        var e = Assert.Throws<PoolExhaustedException>(() => run.Prefill(b, 8));
        Assert.That((e!.Needed, e.Free), Is.EqualTo((2, 1)));
        Assert.That(e.Message, Does.Contain("nothing was changed"));
        Assert.That((pool.FreePages, pool.Length(a), pool.Length(b)), Is.EqualTo((1, 10, 0)), "the refused step changed nothing");
        run.Forget(b);
        run.Prefill(b, 4);
        run.Decode(a);
        run.Check();
        Assert.That(pool.FreePages, Is.EqualTo(0));
        Assert.Throws<PoolExhaustedException>(() => run.Decode(a, b), "a decode that needs a page");
        run.Check();
        run.Release(a);
        run.Release(b);
        Assert.That(pool.FreePages, Is.EqualTo(4));
    }

    [Test]
    public void A_fork_shares_pages_and_copies_a_shared_partial_page_on_write()
    {
        using var layer = (CausalAttentionLayer)VariantTestKit.Layer(LayerConfig.Parse("tpa", """{"d_model": 32, "n_heads": 2, "head_dim": 8, "q_rank": 3, "k_rank": 2, "v_rank": 2, "rope": true}"""), seed: 6);
        using var pool = new ServingPool(layer, new ServingPoolOptions(TokenBudget: 64, PageSize: 4));
        var run = new Scenario(layer, pool);
        var a = run.Admit();
        run.Prefill(a, 6);
        int free = pool.FreePages;
        var b = run.Fork(a);
        Assert.That(pool.FreePages, Is.EqualTo(free), "a fork takes no page");
        Assert.That(pool.PagesNeeded([b], [1]), Is.EqualTo(1), "b's first write copies the shared, partly full page");
        run.Decode(b);
        Assert.That(pool.FreePages, Is.EqualTo(free - 1));
        Assert.That(pool.PagesNeeded([a], [2]), Is.EqualTo(0), "a's last page is its own again");
        run.Decode(a);
        run.Decode(a, b);
        run.Check();
        run.Release(a);
        Assert.That(pool.FreePages, Is.EqualTo(free - 1 + 1), "a's own page returns; the first page is still b's");
        run.Release(b);
        Assert.That(pool.FreePages, Is.EqualTo(pool.PageCount));
    }

    [Test]
    public void Transnormer_keeps_a_state_slot_per_sequence_and_refuses_one_too_many()
    {
        using var layer = (CausalAttentionLayer)VariantTestKit.Layer(LayerConfig.Parse("transnormer", """{"d_model": 32, "n_heads": 2, "head_dim": 8, "layer_idx": 1, "num_layers": 3, "lrpe": true}"""), seed: 7);
        using var pool = new ServingPool(layer, new ServingPoolOptions(TokenBudget: 1, MaxSequences: 2));
        Assert.That((pool.PageCount, pool.BytesPerToken), Is.EqualTo((0, 0L)));
        Assert.That(pool.ByteCount, Is.EqualTo(3L * 2 * 16 * 8 * sizeof(double)), "two slots and the zero row of [H, 2d, d] states");
        var run = new Scenario(layer, pool);
        var a = run.Admit();
        run.Prefill(a, 9);
        var b = run.Fork(a);
        Assert.Throws<PoolExhaustedException>(() => pool.Admit());
        run.Decode(a, b);
        run.Decode(b);
        run.Release(a);
        var c = run.Admit();
        run.Prefill(c, 5);
        run.Decode(c, b);
        run.Check();
    }

    [Test]
    public void Bad_calls_are_refused_and_leave_the_pool_as_it_was()
    {
        using var layer = (CausalAttentionLayer)VariantTestKit.Layer(LayerConfig.Parse("gqa", """{"d_model": 32, "n_heads": 4, "n_kv_heads": 2, "head_dim": 8, "rope": true}"""), seed: 8);
        using var pool = new ServingPool(layer, new ServingPoolOptions(TokenBudget: 64, PageSize: 4));
        var run = new Scenario(layer, pool);
        var a = run.Admit();
        run.Prefill(a, 5);
        var b = run.Admit();
        run.Prefill(b, 3);
        var released = run.Admit();
        run.Release(released);
        var empty = run.Admit();

        void Unchanged(string call)
        {
            Assert.That((pool.FreePages, pool.Length(a), pool.Length(b), pool.Length(empty), pool.Sequences.Count), Is.EqualTo((pool.PageCount - 3, 5, 3, 0, 3)), call);
        }

        var e1 = Assert.Throws<ArgumentException>(() => run.Decode(a, released));
        Assert.That((e1!.ParamName, e1.Message), Is.EqualTo(("ids", e1.Message)));
        Assert.That(e1.Message, Does.Contain($"actual {released}, which was released"));
        Unchanged("released id");
        Assert.That(Assert.Throws<ArgumentException>(() => pool.Release(new SequenceId(99)))!.Message, Does.Contain("never admitted"));
        Unchanged("unknown id");
        var e2 = Assert.Throws<InvalidOperationException>(() => run.Decode(a, empty));
        Assert.That(e2!.Message, Does.StartWith($"ids[1]: {empty} holds no token yet"));
        Unchanged("never prefilled");
        Assert.That(Assert.Throws<ArgumentException>(() => run.Decode(a, a))!.Message, Does.Contain("each sequence once per step"));
        Unchanged("twice in a step");
        using (var wrong = Backend.Cpu.Zeros(new Shape(3, 1, 32), DType.F64))
        {
            var e3 = Assert.Throws<ArgumentException>(() => pool.Decode([a, b], wrong));
            Assert.That(e3!.ParamName, Is.EqualTo("x"));
            Assert.That(e3.Message, Does.Contain("expected [2, 1, 32] or [1, 2, 32]").And.Contain("actual [3, 1, 32]"));
        }
        Unchanged("wrong shape");
        using (var x = Backend.Cpu.Zeros(new Shape(1, 4, 32), DType.F64))
        {
            Assert.That(Assert.Throws<ArgumentException>(() => pool.Step([a, b], x, SequenceLayout.FromLengths(1, 1, 2)))!.ParamName, Is.EqualTo("ids"));
            Assert.That(Assert.Throws<ArgumentException>(() => pool.Step([a, b], x, SequenceLayout.FromLengths(1, 2)))!.ParamName, Is.EqualTo("x"));
        }
        Unchanged("layout mismatch");
        using (var f32 = Backend.Cpu.Zeros(new Shape(1, 2, 32), DType.F32))
        {
            Assert.That(Assert.Throws<ArgumentException>(() => pool.Decode([a, b], f32))!.ParamName, Is.EqualTo("x"));
        }
        Unchanged("wrong dtype");
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => pool.Prefill(a, Backend.Cpu.Zeros(new Shape(1, 2, 32), DType.F64), chunkSize: 0))!.ParamName, Is.EqualTo("chunkSize"));
        Unchanged("chunk size 0");
        run.Decode(a, b);
        run.Check();
    }

    [Test]
    public void Pool_memory_is_the_variants_bytes_per_token_times_the_pages()
    {
        using var layer = (CausalAttentionLayer)VariantTestKit.Layer(LayerConfig.Parse("sas", """{"d_model": 32, "n_heads": 2, "head_dim": 8, "sim_heads": 4, "sim_head_dim": 12, "kernel_size": 3, "rope": true}"""), dtype: DType.BF16);
        using var pool = new ServingPool(layer, new ServingPoolOptions(TokenBudget: 100, PageSize: 16));
        Assert.That(pool.PageCount, Is.EqualTo(7));
        Assert.That(pool.BytesPerToken, Is.EqualTo(4 * (12 + 8) * 2), "H'·(D' + D) bf16 elements (variants.md §4)");
        Assert.That(pool.ByteCount, Is.EqualTo(7L * 16 * pool.BytesPerToken));
        var a = pool.Admit();
        using var x = Backend.Cpu.Zeros(new Shape(1, 20, 32), DType.BF16);
        using var y = pool.Prefill(a, x);
        Assert.That(pool.BytesInUse, Is.EqualTo(2L * 16 * pool.BytesPerToken));
    }

    [Test]
    public void A_page_table_pointing_outside_the_pool_is_refused_naming_the_table()
    {
        using var q = Backend.Cpu.Zeros(new Shape(1, 2, 2, 4), DType.F32);
        using var k = Backend.Cpu.Zeros(new Shape(3, 4, 1, 4), DType.F32);
        var outside = new PageTable(4, 2, [0, 3, 1, -1], [6, 2]);
        var e = Assert.Throws<ArgumentException>(() => Native.Ops.PagedAttention.Forward(q, k, k, SequenceLayout.FromLengths(1, 1), outside, 0.5));
        Assert.That(e!.ParamName, Is.EqualTo("table"));
        Assert.That(e.Message, Is.EqualTo("table: expected pages in [0, 3) (the pool's), actual page 3 at entry 1 of sequence 0 (Parameter 'table')"));
        Assert.That(Assert.Throws<ArgumentException>(() => new PageTable(4, 2, [0, -1, 1, 2], [6, 2]))!.Message, Does.StartWith("pages[1]: expected a page ≥ 0"));
        Assert.That(Assert.Throws<ArgumentException>(() => new PageTable(4, 2, [0, 1, 1, 2], [9, 2]))!.Message, Does.StartWith("lengths[0]: expected a length in [1, 8]"));
        Assert.That(Assert.Throws<ArgumentException>(() => new PageTable(4, 2, [0, 1, 1], [4, 2]))!.ParamName, Is.EqualTo("pages"));
        var wrongSize = new PageTable(8, 1, [0, 1], [6, 2]);
        Assert.That(Assert.Throws<ArgumentException>(() => Native.Ops.PagedAttention.Forward(q, k, k, SequenceLayout.FromLengths(1, 1), wrongSize, 0.5))!.Message, Does.StartWith("table: expected pages of 4 tokens (the pool's), actual 8"));
    }

    /// <summary>
    /// Drives a pool and remembers each sequence's tokens and outputs; <see cref="Check"/> compares every output row with the
    /// layer's full forward over that sequence's tokens.
    /// </summary>
    private sealed class Scenario(CausalAttentionLayer layer, ServingPool pool)
    {
        private readonly Dictionary<SequenceId, (List<double[]> X, List<double[]> Y)> _history = [];
        private readonly List<(List<double[]> X, List<double[]> Y)> _finished = [];
        private int _seed = 100;

        private int Width => layer.Config.DModel;

        public SequenceId Admit()
        {
            var id = pool.Admit();
            _history[id] = ([], []);
            return id;
        }

        public SequenceId Fork(SequenceId source)
        {
            var id = pool.Fork(source);
            var (x, y) = _history[source];
            _history[id] = ([.. x], [.. y]);
            return id;
        }

        public void Release(SequenceId id)
        {
            pool.Release(id);
            _finished.Add(_history[id]);
            _history.Remove(id);
        }

        /// <summary>Forgets a sequence whose step was refused (its history is unchanged).</summary>
        public void Forget(SequenceId id) => Assert.That(_history[id].X, Is.Empty);

        public void Prefill(SequenceId id, int tokens, int? chunk = null)
        {
            var rows = Rows(tokens);
            using var x = Backend.Cpu.FromArray(rows.SelectMany(r => r).ToArray(), new Shape(1, tokens, Width), layer.DType);
            using var y = pool.Prefill(id, x, chunk);
            Record(id, rows, y.ToDoubleArray());
        }

        public void Decode(params SequenceId[] ids)
        {
            var rows = Rows(ids.Length);
            using var x = Backend.Cpu.FromArray(rows.SelectMany(r => r).ToArray(), new Shape(ids.Length, 1, Width), layer.DType);
            using var y = pool.Decode(ids, x);
            Assert.That(y.Shape, Is.EqualTo(x.Shape));
            var values = y.ToDoubleArray();
            for (int i = 0; i < ids.Length; i++)
            {
                Record(ids[i], [rows[i]], values.AsSpan(i * Width, Width).ToArray());
            }
        }

        public void Step(params (SequenceId Id, int Tokens)[] parts)
        {
            var layout = SequenceLayout.FromLengths(parts.Select(p => p.Tokens).ToArray());
            var rows = Rows(layout.TokenCount);
            using var x = Backend.Cpu.FromArray(rows.SelectMany(r => r).ToArray(), new Shape(1, layout.TokenCount, Width), layer.DType);
            using var y = pool.Step(parts.Select(p => p.Id).ToArray(), x, layout);
            var values = y.ToDoubleArray();
            for (int s = 0; s < parts.Length; s++)
            {
                Record(parts[s].Id, rows.Skip(layout.Start(s)).Take(parts[s].Tokens).ToList(), values.AsSpan(layout.Start(s) * Width, parts[s].Tokens * Width).ToArray());
            }
        }

        public void Check()
        {
            foreach (var (id, history) in _history)
            {
                Assert.That(pool.Length(id), Is.EqualTo(history.X.Count), $"{id} length");
            }
            foreach (var (xs, ys) in _history.Values.Concat(_finished))
            {
                if (xs.Count == 0)
                {
                    continue;
                }
                using var x = Backend.Cpu.FromArray(xs.SelectMany(r => r).ToArray(), new Shape(1, xs.Count, Width), layer.DType);
                using var full = layer.Forward(x);
                var expected = full.ToDoubleArray();
                var actual = ys.SelectMany(r => r).ToArray();
                double tolerance = layer.DType == DType.F64 ? 1e-12 : 1e-5;
                Assert.That(RaggedLayerTests.MaxRelative(expected, actual), Is.LessThanOrEqualTo(tolerance), $"{xs.Count} tokens");
            }
        }

        private List<double[]> Rows(int count) =>
            Enumerable.Range(0, count).Select(_ => TestData.Normal(_seed++, Width)).ToList();

        private void Record(SequenceId id, List<double[]> rows, double[] outputs)
        {
            var (xs, ys) = _history[id];
            for (int i = 0; i < rows.Count; i++)
            {
                xs.Add(rows[i]);
                ys.Add(outputs.AsSpan(i * Width, Width).ToArray());
            }
        }
    }
}

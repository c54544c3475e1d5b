using System.Globalization;
using Attention.Native.Ops;
using Attention.Native.Variants;

namespace Attention.Native.Inference;

/// <summary>
/// Continuous batching for one causal layer: a paged cache shared by many sequences that join and leave while others are
/// mid-generation (vLLM's PagedAttention). The cache is a pool of pages of <see cref="PageSize"/> tokens, allocated once when
/// the pool is created; each sequence owns a list of pages (its block table), taking a page from the free list when it grows
/// past its last one, so nothing is ever copied as a sequence grows. <see cref="Fork"/> shares every page of a sequence by
/// reference count, and a shared last page is copied on the first write (copy on write). Each variant's cache is paged in its
/// own form (variants.md): k and v for mha/gqa/mqa and mfa, the normalised latent and rotated k_pe for mla, the four factors
/// for tpa, the expanded k̃ and ṽ for sas; transnormer keeps a state slot per sequence instead of pages.
/// <para>A step's output rows equal the matching rows of each sequence's full forward. A call that cannot run (a released
/// sequence, bad shapes, too few free pages) throws before changing anything; a step that fails while computing gives back the
/// pages it took.</para>
/// </summary>
/// <remarks>Thread safety: one thread at a time; a call made while another thread is inside the pool throws
/// <see cref="InvalidOperationException"/>. Pools of different layers may run on different threads (on CUDA the layers' calls
/// are serialised per backend). Stream rules: on CUDA each call queues its work (page writes and copies, attention over the pages) on the layer's backend stream and may return before it has run. Page bookkeeping is on the host and takes effect at once; a released page is written again only by later work on the same stream, so calls need no synchronisation between them. Outputs are read back with <c>CopyTo</c>/<c>ToArray</c>, which wait.</remarks>
public sealed class ServingPool : IDisposable
{
    private readonly PagedForm _form;
    private readonly Tensor[] _pages;
    private readonly Tensor? _states;
    private readonly int[] _references;
    private readonly Stack<int> _freePages = new();
    private readonly Stack<int> _freeSlots = new();
    private readonly Dictionary<long, Sequence> _live = [];
    private long _nextId;
    private int _inUse;
    private bool _disposed;

    /// <summary>Creates the pool and allocates all its cache memory.</summary>
    /// <param name="layer">A causal layer (its parameters are read at every step, not copied).</param>
    /// <param name="options">Token budget, page size and the most sequences alive at once.</param>
    /// <exception cref="ArgumentException">A non-causal layer, or options out of range.</exception>
    public ServingPool(CausalAttentionLayer layer, ServingPoolOptions options)
    {
        ArgumentNullException.ThrowIfNull(layer);
        ArgumentNullException.ThrowIfNull(options);
        layer.ThrowIfDisposed();
        if (!layer.IsCausal)
        {
            throw new ArgumentException($"layer: expected a causal layer (serving decodes token by token), actual {layer.Variant} with causal: false", nameof(layer));
        }
        if (options.TokenBudget < 1 || options.PageSize < 1 || options.MaxSequences < 1)
        {
            throw new ArgumentException($"options: expected TokenBudget, PageSize and MaxSequences ≥ 1, actual {options}", nameof(options));
        }
        Layer = layer;
        Options = options;
        _form = layer.CreatePagedForm();
        PageCount = _form.Rows.Count == 0 ? 0 : checked((int)(((long)options.TokenBudget + options.PageSize - 1) / options.PageSize));
        _references = new int[PageCount];
        _pages = new Tensor[_form.Rows.Count];
        try
        {
            for (int c = 0; c < _pages.Length; c++)
            {
                _pages[c] = layer.Backend.Zeros(WithLeading(_form.Rows[c], PageCount, options.PageSize), layer.DType);
            }
            if (_form.State is { } state)
            {
                // One row more than the slots: it stays zero, and an admitted sequence's slot is cleared by copying it.
                _states = layer.Backend.Zeros(WithLeading(state.Shape, options.MaxSequences + 1, null), state.DType);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
        for (int p = PageCount - 1; p >= 0; p--)
        {
            _freePages.Push(p);
        }
        for (int s = options.MaxSequences - 1; s >= 0; s--)
        {
            _freeSlots.Push(s);
        }
    }

    /// <summary>The layer whose parameters the steps use.</summary>
    public CausalAttentionLayer Layer { get; }

    /// <summary>The options the pool was made with.</summary>
    public ServingPoolOptions Options { get; }

    /// <summary>Tokens per page.</summary>
    public int PageSize => Options.PageSize;

    /// <summary>Pages in the pool (0 for a variant with a per-sequence state instead).</summary>
    public int PageCount { get; }

    /// <summary>Pages on the free list.</summary>
    public int FreePages => _freePages.Count;

    /// <summary>The sequences alive now, in no particular order.</summary>
    public IReadOnlyList<SequenceId> Sequences => _live.Keys.Select(k => new SequenceId(k)).ToList();

    /// <summary>Cache bytes per cached token: the variant's cache elements per token (variants.md) × the dtype size (0 for a state).</summary>
    public long BytesPerToken => Layer.CacheElementsPerToken * Layer.DType.SizeInBytes();

    /// <summary>All cache memory the pool allocated: every page of every component, and the state slots.</summary>
    public long ByteCount => _pages.Sum(p => p?.ByteCount ?? 0) + (_states?.ByteCount ?? 0);

    /// <summary>Cache bytes the live sequences use: their pages (a shared page once) and their state slots.</summary>
    public long BytesInUse
    {
        get
        {
            long pageBytes = PageCount == 0 ? 0 : _pages.Sum(p => p.ByteCount) / PageCount;
            long stateBytes = _states is null ? 0 : _states.ByteCount / (Options.MaxSequences + 1);
            return ((PageCount - FreePages) * pageBytes) + (_live.Count * stateBytes);
        }
    }

    /// <summary>The tokens cached for <paramref name="id"/> (the position of its next token).</summary>
    public int Length(SequenceId id) => Find(id, nameof(id)).Length;

    /// <summary>Pages <paramref name="id"/> holds (shared pages included).</summary>
    public int PagesOf(SequenceId id) => Find(id, nameof(id)).Pages.Count;

    /// <summary>
    /// Admits a new, empty sequence. Throws <see cref="PoolExhaustedException"/> when <see cref="ServingPoolOptions.MaxSequences"/>
    /// are alive already.
    /// </summary>
    public SequenceId Admit()
    {
        ThrowIfDisposed();
        using var use = Enter();
        var sequence = new Sequence { Slot = TakeSlot("Admit") };
        return Add(sequence);
    }

    /// <summary>
    /// A new sequence that continues from everything <paramref name="id"/> has cached (a shared prompt, a beam): it shares
    /// <paramref name="id"/>'s pages by reference count, its state copied (transnormer). Neither sequence sees the other's later
    /// tokens; a shared page that is only partly full is copied when either writes into it.
    /// </summary>
    public SequenceId Fork(SequenceId id)
    {
        ThrowIfDisposed();
        using var use = Enter();
        var source = Find(id, nameof(id));
        var fork = new Sequence { Length = source.Length, Slot = TakeSlot("Fork") };
        fork.Pages.AddRange(source.Pages);
        foreach (int page in fork.Pages)
        {
            _references[page]++;
        }
        if (_states is not null)
        {
            PagedAttention.CopyPage(_states, source.Slot, fork.Slot);
        }
        return Add(fork);
    }

    /// <summary>Ends <paramref name="id"/>: its pages return to the free list once no other sequence shares them.</summary>
    public void Release(SequenceId id)
    {
        ThrowIfDisposed();
        using var use = Enter();
        var sequence = Find(id, nameof(id));
        _live.Remove(id.Value);
        foreach (int page in sequence.Pages)
        {
            ReleasePage(page);
        }
        _freeSlots.Push(sequence.Slot);
    }

    /// <summary>
    /// Appends the prompt (or the next part of it) <paramref name="x"/> <c>[1, T, d_model]</c> to <paramref name="id"/> and
    /// returns its outputs <c>[1, T, d_model]</c>. With <paramref name="chunkSize"/>, the tokens go through the cache in chunks
    /// of that many (chunked prefill; same result).
    /// </summary>
    public Tensor Prefill(SequenceId id, Tensor x, int? chunkSize = null)
    {
        ThrowIfDisposed();
        Find(id, nameof(id));
        Layer.CheckTokens(x, nameof(x), batch: 1);
        if (chunkSize is < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(chunkSize), chunkSize, $"chunkSize: expected ≥ 1 or null, actual {chunkSize}");
        }
        int total = x.Shape[1], chunk = chunkSize ?? total;
        if (chunk >= total)
        {
            return Step([id], x, SequenceLayout.FromLengths(total));
        }
        // Chunk by chunk: each chunk's rows are cut out of x and its outputs placed into y.
        int width = Layer.Config.DModel;
        var flat = x.Reshape(new Shape(1, total * width));
        var y = Layer.Backend.Zeros(x.Shape, x.DType);
        try
        {
            var yFlat = y.Reshape(new Shape(1, total * width));
            for (int t0 = 0; t0 < total; t0 += chunk)
            {
                int n = Math.Min(chunk, total - t0);
                using var part = Columns.Slice(flat, t0 * width, n * width);
                using var yPart = Step([id], part.Reshape(new Shape(1, n, width)), SequenceLayout.FromLengths(n));
                Columns.Copy(yPart.Reshape(new Shape(1, n * width)), 0, yFlat, t0 * width, n * width);
            }
            return y;
        }
        catch
        {
            y.Dispose();
            throw;
        }
    }

    /// <summary>
    /// One decode step for any set of live sequences of any lengths, in one call: <paramref name="x"/> is
    /// <c>[n, 1, d_model]</c> (or the packed <c>[1, n, d_model]</c>), the next token of each of <paramref name="ids"/>; returns
    /// the outputs in the same shape. Each sequence must have been prefilled (hold at least one token).
    /// </summary>
    public Tensor Decode(ReadOnlySpan<SequenceId> ids, Tensor x)
    {
        ThrowIfDisposed();
        Check.Usable(x, nameof(x));
        int n = ids.Length, width = Layer.Config.DModel;
        bool rows = x.Shape.Rank == 3 && x.Shape[1] == 1 && x.Shape[0] == n && n > 1;
        if (x.Shape.Rank != 3 || x.Shape[2] != width || !(rows || (x.Shape[0] == 1 && x.Shape[1] == n)) || n == 0)
        {
            throw new ArgumentException($"x: expected [{n}, 1, {width}] or [1, {n}, {width}] (one token for each of the {n} ids), actual {x.Shape}", nameof(x));
        }
        for (int i = 0; i < n; i++)
        {
            if (Find(ids[i], nameof(ids)).Length == 0)
            {
                throw new InvalidOperationException($"ids[{i}]: {ids[i]} holds no token yet; prefill its prompt before decoding");
            }
        }
        var lengths = new int[n];
        Array.Fill(lengths, 1);
        var packed = rows ? x.Reshape(new Shape(1, n, width)) : x;
        return Step(ids, packed, SequenceLayout.FromLengths(lengths), x.Shape);
    }

    /// <summary>
    /// The general step of continuous batching: <paramref name="x"/> <c>[1, N, d_model]</c> packs new tokens for each of
    /// <paramref name="ids"/>, as many as <paramref name="tokens"/> gives (prompt chunks and single decode tokens mixed); returns
    /// their outputs <c>[1, N, d_model]</c>. The tokens of each sequence continue from its cached length (the layout's start
    /// positions are not used).
    /// </summary>
    public Tensor Step(ReadOnlySpan<SequenceId> ids, Tensor x, SequenceLayout tokens) => Step(ids, x, tokens, null);

    /// <summary>
    /// Pages a step appending <paramref name="newTokens"/> tokens to each of <paramref name="ids"/> would take from the free
    /// list (new pages, and copies of shared last pages), to compare with <see cref="FreePages"/> before scheduling it.
    /// </summary>
    public int PagesNeeded(ReadOnlySpan<SequenceId> ids, ReadOnlySpan<int> newTokens)
    {
        ThrowIfDisposed();
        if (ids.Length != newTokens.Length)
        {
            throw new ArgumentException($"newTokens: expected {ids.Length} counts (one per id), actual {newTokens.Length}", nameof(newTokens));
        }
        int needed = 0;
        for (int i = 0; i < ids.Length; i++)
        {
            if (newTokens[i] < 0)
            {
                throw new ArgumentException($"newTokens[{i}]: expected a count ≥ 0, actual {newTokens[i]}", nameof(newTokens));
            }
            needed += PagesFor(Find(ids[i], nameof(ids)), newTokens[i]);
        }
        return needed;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        foreach (var p in _pages)
        {
            p?.Dispose();
        }
        _states?.Dispose();
    }

    private Tensor Step(ReadOnlySpan<SequenceId> ids, Tensor x, SequenceLayout tokens, Shape? outputShape)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(tokens);
        using var use = Enter();
        if (ids.Length != tokens.Count)
        {
            throw new ArgumentException($"ids: expected {tokens.Count} sequences (one per sequence of tokens), actual {ids.Length}", nameof(ids));
        }
        var plain = SequenceLayout.FromOffsets(tokens.Offsets, tokens.TokenCount);
        Layer.CheckPacked(x, nameof(x), plain);
        var sequences = new Sequence[ids.Length];
        var seen = new HashSet<long>();
        for (int i = 0; i < ids.Length; i++)
        {
            sequences[i] = Find(ids[i], nameof(ids));
            if (!seen.Add(ids[i].Value))
            {
                throw new ArgumentException($"ids[{i}]: expected each sequence once per step, actual {ids[i]} again", nameof(ids));
            }
            if ((long)sequences[i].Length + tokens.Length(i) > int.MaxValue)
            {
                throw new ArgumentException($"tokens: expected at most {int.MaxValue - sequences[i].Length} more tokens for {ids[i]}, actual {tokens.Length(i)}", nameof(tokens));
            }
        }
        int needed = 0;
        for (int i = 0; i < sequences.Length; i++)
        {
            needed += PagesFor(sequences[i], tokens.Length(i));
        }
        if (needed > FreePages)
        {
            throw new PoolExhaustedException(
                $"Step: the pool has {FreePages} free pages of {PageSize} tokens, and these {ids.Length} sequences need {needed} for {tokens.TokenCount} new tokens; release sequences or make a larger pool (nothing was changed)",
                needed, FreePages);
        }

        // Take the pages, remembering how to give them back if the computation fails.
        var undo = new List<Action>();
        try
        {
            for (int i = 0; i < sequences.Length; i++)
            {
                Grow(sequences[i], tokens.Length(i), undo);
            }
            var starts = sequences.Select(s => s.Length).ToArray();
            var layout = plain.WithStartPositions(starts);
            var table = PageCount == 0 ? null : Table(sequences, tokens);
            var slots = sequences.Select(s => s.Slot).ToArray();
            Tensor y;
            using (Layer.Backend.EnterCall())
            using (var graph = new Graph(Layer.Backend, record: false, layout))
            {
                var output = _form.Step(graph, graph.Input(x, requiresGrad: false), table, _pages, _states, slots);
                y = outputShape is { } shape && shape != output.Shape ? CopyAs(output, shape) : graph.Detach(output);
            }
            for (int i = 0; i < sequences.Length; i++)
            {
                sequences[i].Length += tokens.Length(i);
            }
            return y;
        }
        catch
        {
            for (int i = undo.Count - 1; i >= 0; i--)
            {
                undo[i]();
            }
            throw;
        }
    }

    // A copy of `output` under another shape (a reshaped view of a graph's tensor would die with the graph).
    private Tensor CopyAs(Tensor output, Shape shape)
    {
        int count = checked((int)output.ElementCount);
        var copy = Layer.Backend.Zeros(shape, output.DType);
        Columns.Copy(output.Reshape(new Shape(1, count)), 0, copy.Reshape(new Shape(1, count)), 0, count);
        return copy;
    }

    // Pages appending `count` tokens takes: new pages past the last, plus a copy of a shared, partly filled last page.
    private int PagesFor(Sequence sequence, int count)
    {
        if (PageCount == 0 || count == 0)
        {
            return 0;
        }
        long pages = ((long)sequence.Length + count + PageSize - 1) / PageSize;
        bool copy = sequence.Length % PageSize != 0 && _references[sequence.Pages[^1]] > 1;
        return (int)(pages - sequence.Pages.Count) + (copy ? 1 : 0);
    }

    // Takes the pages for `count` more tokens (copying a shared partial last page first) and records their undo.
    private void Grow(Sequence sequence, int count, List<Action> undo)
    {
        if (PageCount == 0 || count == 0)
        {
            return;
        }
        if (sequence.Length % PageSize != 0 && _references[sequence.Pages[^1]] > 1)
        {
            int shared = sequence.Pages[^1], copy = TakePage();
            foreach (var pages in _pages)
            {
                PagedAttention.CopyPage(pages, shared, copy);
            }
            _references[shared]--;
            sequence.Pages[^1] = copy;
            undo.Add(() =>
            {
                sequence.Pages[^1] = shared;
                _references[shared]++;
                ReleasePage(copy);
            });
        }
        long pagesAfter = ((long)sequence.Length + count + PageSize - 1) / PageSize;
        while (sequence.Pages.Count < pagesAfter)
        {
            sequence.Pages.Add(TakePage());
            undo.Add(() =>
            {
                ReleasePage(sequence.Pages[^1]);
                sequence.Pages.RemoveAt(sequence.Pages.Count - 1);
            });
        }
    }

    // The block table of a step: each sequence's pages (padded with −1) and its length after the step.
    private PageTable Table(Sequence[] sequences, SequenceLayout tokens)
    {
        int width = Math.Max(1, sequences.Max(s => s.Pages.Count));
        var pages = new int[sequences.Length * width];
        Array.Fill(pages, -1);
        var lengths = new int[sequences.Length];
        for (int i = 0; i < sequences.Length; i++)
        {
            sequences[i].Pages.CopyTo(pages, i * width);
            lengths[i] = sequences[i].Length + tokens.Length(i);
        }
        return new PageTable(PageSize, width, pages, lengths);
    }

    private int TakePage()
    {
        int page = _freePages.Pop();
        _references[page] = 1;
        return page;
    }

    private void ReleasePage(int page)
    {
        if (--_references[page] == 0)
        {
            _freePages.Push(page);
        }
    }

    private int TakeSlot(string call)
    {
        if (_freeSlots.Count == 0)
        {
            throw new PoolExhaustedException(
                $"{call}: the pool holds at most {Options.MaxSequences} sequences at once (ServingPoolOptions.MaxSequences), and all are alive; release one first (nothing was changed)",
                1, 0);
        }
        int slot = _freeSlots.Pop();
        if (_states is not null)
        {
            try
            {
                PagedAttention.CopyPage(_states, Options.MaxSequences, slot);
            }
            catch
            {
                _freeSlots.Push(slot);
                throw;
            }
        }
        return slot;
    }

    private SequenceId Add(Sequence sequence)
    {
        var id = new SequenceId(_nextId++);
        _live.Add(id.Value, sequence);
        return id;
    }

    private Sequence Find(SequenceId id, string name)
    {
        if (!_live.TryGetValue(id.Value, out var sequence))
        {
            string why = id.Value >= 0 && id.Value < _nextId ? "was released" : "was never admitted by this pool";
            throw new ArgumentException($"{name}: expected a live sequence of this pool, actual {id}, which {why}", name);
        }
        return sequence;
    }

    private static Shape WithLeading(Shape row, int count, int? pageSize)
    {
        var dims = new List<int> { count };
        if (pageSize is { } p)
        {
            dims.Add(p);
        }
        for (int i = 0; i < row.Rank; i++)
        {
            dims.Add(row[i]);
        }
        return new Shape([.. dims]);
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    private Use Enter()
    {
        if (Interlocked.CompareExchange(ref _inUse, 1, 0) != 0)
        {
            throw new InvalidOperationException("ServingPool: used from two threads at once; a pool is not thread-safe (serialise the calls)");
        }
        return new Use(this);
    }

    private readonly struct Use(ServingPool pool) : IDisposable
    {
        public void Dispose() => Volatile.Write(ref pool._inUse, 0);
    }

    /// <summary>One live sequence: its pages in order, its cached length and its state slot.</summary>
    private sealed class Sequence
    {
        public List<int> Pages { get; } = [];

        public int Length { get; set; }

        public int Slot { get; init; }
    }
}

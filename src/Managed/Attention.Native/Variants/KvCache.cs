using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>How a KV cache allocates: start small and double, or reserve a maximum length up front.</summary>
/// <param name="InitialCapacity">Token capacity allocated first when growing by doubling.</param>
/// <param name="MaxLength">When set, the whole capacity is allocated at creation and never grows; appending past it throws.</param>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed record CacheOptions(int InitialCapacity = 64, int? MaxLength = null);

/// <summary>A layer with a causal mask, whose inference keeps a cache (variants.md lists what each one holds).</summary>
/// <remarks>Thread safety: as <see cref="AttentionLayer"/>; each <see cref="KvCache"/> it creates is for one thread at a time. Stream rules: as <see cref="AttentionLayer"/>; see <see cref="KvCache"/> for the caches.</remarks>
public abstract class CausalAttentionLayer : AttentionLayer
{
    private protected CausalAttentionLayer(LayerConfig config, Backend? backend, DType dtype)
        : base(config, backend, dtype)
    {
    }

    /// <inheritdoc/>
    public override bool IsCausal => true;

    /// <summary>Cache elements per token for this layer, the formula of variants.md (0 for a constant-size state).</summary>
    public abstract long CacheElementsPerToken { get; }

    /// <summary>A new, empty cache for <paramref name="batch"/> sequences.</summary>
    public KvCache CreateCache(int batch, CacheOptions? options = null)
    {
        ThrowIfDisposed();
        if (!IsCausal)
        {
            throw new InvalidOperationException($"CreateCache: the {Variant} layer is configured non-causal (causal: false); decoding needs a causal layer");
        }
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
        options ??= new CacheOptions();
        if (options.InitialCapacity < 1 || options.MaxLength is < 1)
        {
            throw new ArgumentException($"options: expected InitialCapacity ≥ 1 and MaxLength ≥ 1 or null, actual {options}", nameof(options));
        }
        return NewCache(batch, options);
    }

    private protected abstract KvCache NewCache(int batch, CacheOptions options);

    /// <summary>The paged form of this layer's cache, for the serving pool.</summary>
    internal abstract PagedForm CreatePagedForm();
}

/// <summary>
/// The inference state of one causal layer for a batch of sequences. <see cref="Prefill"/> appends a block of tokens (a
/// prompt, or a later chunk of one) and returns their outputs; <see cref="DecodeStep"/> appends one token. Both equal the
/// matching rows of the full forward over everything appended so far.
/// </summary>
/// <remarks>Thread safety: one thread at a time. A call made while another thread is inside <see cref="Prefill"/>, <see cref="DecodeStep"/> or <see cref="Reset"/> throws <see cref="InvalidOperationException"/> instead of corrupting <see cref="Length"/>. Many caches of one layer may run on many threads at once. Stream rules: on CUDA, <c>Prefill</c> and <c>DecodeStep</c> queue their work on the layer's backend stream and may return before it has run; the cache's memory is written only in that stream's order, so steps need no synchronisation between them, and their outputs are read back with <c>CopyTo</c>/<c>ToArray</c>, which wait.</remarks>
public abstract class KvCache : IDisposable
{
    private readonly List<CacheBuffer> _buffers = [];
    private bool _disposed;
    private int _inUse;

    private protected KvCache(CausalAttentionLayer layer, int batch, CacheOptions options)
    {
        Layer = layer;
        Batch = batch;
        Options = options;
        Capacity = options.MaxLength ?? options.InitialCapacity;
    }

    /// <summary>The layer whose parameters the cache uses.</summary>
    public CausalAttentionLayer Layer { get; }

    /// <summary>Sequences in the batch.</summary>
    public int Batch { get; }

    /// <summary>Tokens appended so far (the position of the next token).</summary>
    public int Length { get; private set; }

    /// <summary>Tokens the buffers hold before they must grow.</summary>
    public int Capacity { get; private set; }

    /// <summary>How the cache allocates.</summary>
    public CacheOptions Options { get; }

    /// <summary>Elements stored per token per sequence (summed over the per-token buffers).</summary>
    public long ElementsPerToken => _buffers.Sum(b => b.ElementsPerToken);

    /// <summary>Bytes allocated now, for all sequences, including any constant-size state.</summary>
    public virtual long ByteCount => _buffers.Sum(b => b.Tensor.ByteCount);

    /// <summary>Appends <paramref name="x"/> [Batch, T, d_model] and returns its outputs [Batch, T, d_model].</summary>
    public Tensor Prefill(Tensor x)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Layer.CheckTokens(x, nameof(x), Batch);
        using var use = Enter();
        using var call = Layer.Backend.EnterCall();
        long needed = (long)Length + x.Shape[1];
        if (needed > Capacity)
        {
            if (Options.MaxLength is { } max)
            {
                throw new InvalidOperationException($"x: the cache holds at most {max} tokens (CacheOptions.MaxLength); {Length} are cached and {x.Shape[1]} more were given");
            }
            if (needed > MaxTokens)
            {
                throw new ArgumentException($"x: expected at most {MaxTokens - Length} more tokens (this layer's cache rows hold at most {MaxTokens} tokens per sequence), actual {x.Shape[1]} with {Length} cached", nameof(x));
            }
            long capacity = Capacity;
            while (capacity < needed)
            {
                capacity = Math.Min(capacity * 2, MaxTokens);
            }
            foreach (var buffer in _buffers)
            {
                buffer.Grow((int)capacity, Length);
            }
            Capacity = (int)capacity;
        }
        using var graph = new Graph(Layer.Backend, record: false);
        var y = graph.Detach(Append(graph, x, Length));
        Length = (int)needed;
        return y;
    }

    /// <summary>Appends one token per sequence, <paramref name="x"/> [Batch, 1, d_model], and returns its output.</summary>
    public Tensor DecodeStep(Tensor x)
    {
        Check.Usable(x, nameof(x));
        if (x.Shape.Rank != 3 || x.Shape[1] != 1)
        {
            throw new ArgumentException($"x: expected one token [{Batch}, 1, {Layer.Config.DModel}], actual {x.Shape}", nameof(x));
        }
        return Prefill(x);
    }

    /// <summary>Forgets every token (keeps the allocation).</summary>
    public void Reset()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var use = Enter();
        ResetState();
        Length = 0;
    }

    /// <summary>Clears any constant-size state on <see cref="Reset"/> (the per-token buffers need nothing: Length bounds them).</summary>
    private protected virtual void ResetState()
    {
    }

    /// <summary>The most tokens per sequence every per-token buffer can hold (its row of capacity × elements must fit an int).</summary>
    private int MaxTokens => _buffers.Count == 0 ? int.MaxValue : _buffers.Min(b => b.MaxTokens);

    /// <summary>Marks the cache in use for one call; a second thread entering meanwhile gets an exception instead of corrupting it.</summary>
    private Use Enter()
    {
        if (Interlocked.CompareExchange(ref _inUse, 1, 0) != 0)
        {
            throw new InvalidOperationException("KvCache: used from two threads at once; a cache is not thread-safe (give each thread its own cache, or serialise the calls)");
        }
        return new Use(this);
    }

    private readonly struct Use(KvCache cache) : IDisposable
    {
        public void Dispose() => Volatile.Write(ref cache._inUse, 0);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Dispose(disposing: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Frees the buffers.</summary>
    protected virtual void Dispose(bool disposing)
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        foreach (var b in _buffers)
        {
            b.Dispose();
        }
    }

    /// <summary>
    /// A per-token buffer [Batch, Capacity, ..rowShape], grown with the cache. A size the backend cannot hold throws an
    /// <see cref="ArgumentException"/> naming the batch or the capacity (and frees the buffers made so far).
    /// </summary>
    private protected CacheBuffer Buffer(Shape rowShape)
    {
        long row = rowShape.ElementCount;
        if (row > 0 && Capacity > int.MaxValue / row)
        {
            FreeBuffers();
            throw CreateArgument("options", $"options: expected a capacity of at most {int.MaxValue / row} tokens for this layer's cache rows of {row} elements, actual {Capacity}");
        }
        var buffer = AllocateOrExplain(() => new CacheBuffer(Layer.Backend, Layer.DType, Batch, rowShape, Capacity), row * (long)Capacity);
        _buffers.Add(buffer);
        return buffer;
    }

    /// <summary>
    /// A constant-size state tensor of <paramref name="shape"/> ([Batch, …]), zero-filled, with the same errors as
    /// <see cref="Buffer"/>; of the layer's dtype unless <paramref name="dtype"/> says otherwise.
    /// </summary>
    private protected Tensor State(Shape shape, DType? dtype = null) =>
        AllocateOrExplain(() => Layer.Backend.Zeros(shape, dtype ?? Layer.DType), shape.ElementCount / Math.Max(1, Batch));

    private T AllocateOrExplain<T>(Func<T> allocate, long elementsPerSequence)
    {
        try
        {
            return allocate();
        }
        catch (ArgumentException e) when (e.ParamName == "shape")
        {
            FreeBuffers();
            throw CreateArgument("batch", $"batch: a cache of {Batch} sequences × {elementsPerSequence} elements ({Layer.DType}, {Capacity} tokens) is more than the {Layer.Backend.Name} backend can allocate: {e.Message}", e);
        }
        catch
        {
            FreeBuffers();
            throw;
        }
    }

    // The argument is CreateCache's, not this helper's: the cache is built inside CreateCache.
    private static ArgumentException CreateArgument(string name, string message, Exception? inner = null) => new(message, name, inner);

    private void FreeBuffers()
    {
        foreach (var b in _buffers)
        {
            b.Dispose();
        }
        _buffers.Clear();
    }

    /// <summary>Computes the outputs of the tokens <paramref name="x"/> at positions <paramref name="position"/>… and writes them into the buffers (capacity is ensured).</summary>
    private protected abstract Tensor Append(Graph graph, Tensor x, int position);
}

/// <summary>A cache tensor <c>[B, capacity, ..row]</c> whose first positions are valid.</summary>
internal sealed class CacheBuffer : IDisposable
{
    private readonly Backend _backend;
    private readonly DType _dtype;
    private readonly int _batch;
    private readonly Shape _row;

    public CacheBuffer(Backend backend, DType dtype, int batch, Shape row, int capacity)
    {
        _backend = backend;
        _dtype = dtype;
        _batch = batch;
        _row = row;
        Tensor = backend.Zeros(ShapeFor(capacity), dtype);
    }

    public Tensor Tensor { get; private set; }

    public long ElementsPerToken => _row.ElementCount;

    /// <summary>The most tokens a sequence's row (capacity × row elements, addressed as one int-wide row) can hold.</summary>
    public int MaxTokens => _row.ElementCount == 0 ? int.MaxValue : (int)Math.Min(int.MaxValue, int.MaxValue / _row.ElementCount);

    /// <summary>Reallocates to <paramref name="capacity"/> tokens keeping the first <paramref name="length"/>.</summary>
    public void Grow(int capacity, int length)
    {
        var grown = _backend.Zeros(ShapeFor(capacity), _dtype);
        if (length > 0)
        {
            int width = checked((int)(length * _row.ElementCount));
            Columns.Copy(Flat(Tensor), 0, Flat(grown), 0, width);
        }
        Tensor.Dispose();
        Tensor = grown;
    }

    /// <summary>Writes <paramref name="values"/> [B, T, ..row] at positions <paramref name="position"/>….</summary>
    public void Write(Tensor values, int position)
    {
        int width = checked((int)(values.Shape[1] * _row.ElementCount));
        var source = values.Reshape(new Shape(_batch, width));
        Columns.Copy(source, 0, Flat(Tensor), checked((int)(position * _row.ElementCount)), width);
    }

    public void Dispose() => Tensor.Dispose();

    private Tensor Flat(Tensor t) => t.Reshape(new Shape(_batch, checked((int)(t.ElementCount / _batch))));

    private Shape ShapeFor(int capacity)
    {
        var dims = new int[_row.Rank + 2];
        dims[0] = _batch;
        dims[1] = capacity;
        for (int i = 0; i < _row.Rank; i++)
        {
            dims[i + 2] = _row[i];
        }
        return new Shape(dims);
    }
}

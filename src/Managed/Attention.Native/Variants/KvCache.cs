using Attention.Native.Ops;

namespace Attention.Native.Variants;

/// <summary>How a KV cache allocates: start small and double, or reserve a maximum length up front.</summary>
/// <param name="InitialCapacity">Token capacity allocated first when growing by doubling.</param>
/// <param name="MaxLength">When set, the whole capacity is allocated at creation and never grows; appending past it throws.</param>
public sealed record CacheOptions(int InitialCapacity = 64, int? MaxLength = null);

/// <summary>A layer with a causal mask, whose inference keeps a cache (variants.md lists what each one holds).</summary>
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
}

/// <summary>
/// The inference state of one causal layer for a batch of sequences. <see cref="Prefill"/> appends a block of tokens (a
/// prompt, or a later chunk of one) and returns their outputs; <see cref="DecodeStep"/> appends one token. Both equal the
/// matching rows of the full forward over everything appended so far.
/// </summary>
public abstract class KvCache : IDisposable
{
    private readonly List<CacheBuffer> _buffers = [];
    private bool _disposed;

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
        int needed = Length + x.Shape[1];
        if (needed > Capacity)
        {
            if (Options.MaxLength is { } max)
            {
                throw new InvalidOperationException($"x: the cache holds at most {max} tokens (CacheOptions.MaxLength); {Length} are cached and {x.Shape[1]} more were given");
            }
            int capacity = Capacity;
            while (capacity < needed)
            {
                capacity = checked(capacity * 2);
            }
            foreach (var buffer in _buffers)
            {
                buffer.Grow(capacity, Length);
            }
            Capacity = capacity;
        }
        using var graph = new Graph(Layer.Backend, record: false);
        var y = graph.Detach(Append(graph, x, Length));
        Length = needed;
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
    public virtual void Reset() => Length = 0;

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

    /// <summary>A per-token buffer [Batch, Capacity, ..rowShape], grown with the cache.</summary>
    private protected CacheBuffer Buffer(Shape rowShape)
    {
        var buffer = new CacheBuffer(Layer.Backend, Layer.DType, Batch, rowShape, Capacity);
        _buffers.Add(buffer);
        return buffer;
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

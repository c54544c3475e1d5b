using System.Collections.ObjectModel;

namespace Attention.Native.IO;

/// <summary>
/// The tensors and metadata read from one safetensors file. It owns the tensors it read:
/// <see cref="Dispose"/> frees them all, except those taken with <see cref="Detach"/>.
/// Entries keep the order of the file's header.
/// </summary>
/// <remarks>Thread safety: reading its tensors from many threads is safe; <see cref="Dispose"/> and <see cref="Detach"/> must not overlap any other use. Stream rules: its tensors are complete when <c>SafeTensors.Read</c> returns (the uploads wait); afterwards they follow <see cref="Tensor"/>'s rules.</remarks>
public sealed class SafeTensorsContent : IDisposable
{
    // Names listed in a "not found" message; a large checkpoint has thousands.
    private const int NamesListedWhenMissing = 32;

    private readonly OrderedDictionary<string, Tensor> _tensors;
    private readonly ReadOnlyDictionary<string, Tensor> _tensorView;
    private readonly ReadOnlyCollection<string> _names;
    private readonly ReadOnlyDictionary<string, string> _metadata;
    private readonly string _source;
    private bool _disposed;

    internal SafeTensorsContent(string source, OrderedDictionary<string, Tensor> tensors, OrderedDictionary<string, string> metadata)
    {
        _source = source;
        _tensors = tensors;
        _tensorView = new ReadOnlyDictionary<string, Tensor>(tensors);
        _names = new ReadOnlyCollection<string>(tensors.Keys);
        _metadata = new ReadOnlyDictionary<string, string>(metadata);
    }

    /// <summary>The tensor names in file order (a live view: detached tensors leave it).</summary>
    public IReadOnlyList<string> Names
    {
        get
        {
            ThrowIfDisposed();
            return _names;
        }
    }

    /// <summary>The tensors by name, enumerated in file order (a live view: detached tensors leave it).</summary>
    public IReadOnlyDictionary<string, Tensor> Tensors
    {
        get
        {
            ThrowIfDisposed();
            return _tensorView;
        }
    }

    /// <summary>The file's <c>__metadata__</c> pairs in file order; empty when the file has none.</summary>
    public IReadOnlyDictionary<string, string> Metadata
    {
        get
        {
            ThrowIfDisposed();
            return _metadata;
        }
    }

    /// <summary>The tensor called <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such tensor; the message names the file and lists the names it has.</exception>
    public Tensor this[string name] => TryGet(name, out var tensor) ? tensor : throw NotFound(name);

    /// <summary>Gets the tensor called <paramref name="name"/> if there is one.</summary>
    public bool TryGet(string name, out Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(name);
        ThrowIfDisposed();
        return _tensors.TryGetValue(name, out tensor!);
    }

    /// <summary>
    /// Removes the tensor from this content and gives ownership to the caller: it is not disposed with the
    /// content, and the caller must dispose it.
    /// </summary>
    /// <exception cref="KeyNotFoundException">No such tensor (or it was detached already).</exception>
    public Tensor Detach(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        ThrowIfDisposed();
        return _tensors.Remove(name, out var tensor) ? tensor : throw NotFound(name);
    }

    /// <summary>Frees every tensor still owned by this content. Calling it twice is harmless.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        foreach (var tensor in _tensors.Values)
        {
            tensor.Dispose();
        }
        _tensors.Clear();
    }

    private KeyNotFoundException NotFound(string name)
    {
        var listed = _tensors.Keys.Take(NamesListedWhenMissing).Select(SafeTensorsHeader.Quote);
        string more = _tensors.Count > NamesListedWhenMissing ? $", … and {_tensors.Count - NamesListedWhenMissing} more" : "";
        string available = _tensors.Count == 0 ? "it holds no tensors" : $"available ({_tensors.Count}): {string.Join(", ", listed)}{more}";
        return new KeyNotFoundException($"{_source}: no tensor {SafeTensorsHeader.Quote(name)}; {available}");
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);
}

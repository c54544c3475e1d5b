namespace Attention.Native.Variants;

/// <summary>
/// A value computed in a <see cref="Graph"/>: its tensor and, once the backward runs, its gradient.
/// </summary>
internal sealed class Node
{
    internal Node(Tensor value, bool requiresGrad, Node? viewOf = null)
    {
        Value = value;
        RequiresGrad = requiresGrad;
        ViewOf = viewOf;
    }

    /// <summary>The forward value.</summary>
    public Tensor Value { get; }

    /// <summary>True when a gradient flows back through this node.</summary>
    public bool RequiresGrad { get; }

    /// <summary>The node this one reshapes: its gradient is a view of that node's gradient.</summary>
    public Node? ViewOf { get; }

    /// <summary>The shape of <see cref="Value"/>.</summary>
    public Shape Shape => Value.Shape;

    internal Tensor? Grad { get; set; }
}

/// <summary>
/// Records a variant's forward as a list of ops so the backward can run them in reverse: each op's method computes
/// its forward through the public op API (so it runs on whatever backend holds the tensors) and, when recording,
/// pushes a step that adds the op's input gradients. Variants are written once against this class. The graph owns every
/// tensor it creates and frees them on <see cref="Dispose"/>.
/// </summary>
internal sealed partial class Graph : IDisposable
{
    private readonly List<Action> _steps = [];
    private readonly List<Tensor> _owned = [];
    private readonly Dictionary<string, Node> _parameters = new(StringComparer.Ordinal);
    private bool _disposed;

    /// <param name="backend">Where new tensors are allocated.</param>
    /// <param name="record">False for inference: no backward steps, and nothing requires a gradient.</param>
    /// <param name="sequences">A ragged batch: the token axis of [1, N, …] inputs packs these sequences, and the ops that
    /// relate tokens (RoPE and LRPE positions, attention masks, Lightning's recurrence) keep each sequence to itself.</param>
    public Graph(Backend backend, bool record, SequenceLayout? sequences = null)
    {
        Backend = backend;
        Recording = record;
        Sequences = sequences;
    }

    public Backend Backend { get; }

    /// <summary>The ragged batch the token axis packs, or null for a dense [B, T, …] batch.</summary>
    public SequenceLayout? Sequences { get; }

    public bool Recording { get; }

    /// <summary>An input the caller owns; with <paramref name="requiresGrad"/> its gradient is collected.</summary>
    public Node Input(Tensor value, bool requiresGrad) => new(value, Recording && requiresGrad);

    /// <summary>A named parameter the caller owns; its gradient is reported under <paramref name="name"/>.</summary>
    public Node Parameter(string name, Tensor value, bool learnable = true)
    {
        // One node per parameter, however often a variant asks for it, so every use adds to the same gradient.
        if (!_parameters.TryGetValue(name, out var node))
        {
            node = new Node(value, Recording && learnable);
            _parameters.Add(name, node);
        }
        return node;
    }

    /// <summary>The gradient of a parameter after <see cref="Backward"/> (zeros when nothing reached it).</summary>
    public Tensor ParameterGradient(string name) => GradOf(_parameters[name]);

    /// <summary>The gradient of <paramref name="node"/>, created as zeros on first use (a view's is a view of its base's).</summary>
    public Tensor GradOf(Node node)
    {
        if (node.Grad is null)
        {
            node.Grad = node.ViewOf is null
                ? Own(Backend.Zeros(node.Shape, node.Value.DType))
                : GradOf(node.ViewOf).Reshape(node.Shape);
        }
        return node.Grad;
    }

    /// <summary>Seeds the output's gradient with <paramref name="dy"/> and runs the recorded steps in reverse.</summary>
    public void Backward(Node output, Tensor dy)
    {
        if (!Recording)
        {
            throw new InvalidOperationException("Backward: the graph was built for inference (record: false)");
        }
        var seed = GradOf(output);
        Ops.Pointwise.Forward(Ops.PointwiseOp.Add, seed, dy, seed);
        for (int i = _steps.Count - 1; i >= 0; i--)
        {
            _steps[i]();
        }
        _steps.Clear();
    }

    /// <summary>
    /// Hands a result to the caller: a tensor the graph owns leaves its care (no copy); anything else (an input, a view)
    /// is copied, so the caller always owns what it gets.
    /// </summary>
    public Tensor Detach(Tensor tensor)
    {
        if (_owned.Remove(tensor))
        {
            return tensor;
        }
        // Tensor.To on its own backend is a view, which would die with the graph's storage: copy on the backend instead.
        return tensor.IsContiguous && ReferenceEquals(tensor.Backend, Backend) && tensor.Shape.Rank > 0
            ? Ops.Columns.Slice(tensor, 0, tensor.Shape[-1])
            : tensor.To(Backend);
    }

    /// <summary>Takes ownership of a tensor made outside the graph's ops.</summary>
    public Tensor Own(Tensor tensor)
    {
        _owned.Add(tensor);
        return tensor;
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        foreach (var t in _owned)
        {
            t.Dispose();
        }
        _owned.Clear();
        _steps.Clear();
    }

    /// <summary>A node for an op's output; <paramref name="backward"/> is recorded when any input needs a gradient.</summary>
    private Node Result(Tensor value, Action<Node>? backward, params ReadOnlySpan<Node?> inputs)
    {
        Own(value);
        bool requires = false;
        foreach (var input in inputs)
        {
            requires |= input is not null && input.RequiresGrad;
        }
        var node = new Node(value, requires);
        if (requires && backward is not null)
        {
            _steps.Add(() => backward(node));
        }
        return node;
    }

    /// <summary>The gradient of an input, or null when it does not need one.</summary>
    private Tensor? GradIfNeeded(Node? node) => node is not null && node.RequiresGrad ? GradOf(node) : null;
}

namespace Attention.Native.Variants;

/// <summary>How a parameter is initialised by <see cref="AttentionLayer.InitializeParameters"/>.</summary>
public enum ParameterInit
{
    /// <summary>Uniform in ±1/sqrt(fan_in), fan_in the product of all axes but the first (PyTorch's Linear/Conv default scale).</summary>
    FanIn,
    /// <summary>All ones (norm gains).</summary>
    Ones,
    /// <summary>All zeros.</summary>
    Zeros,
    /// <summary>Normal with standard deviation 0.02 (position tables and biases of attention scores).</summary>
    Normal,
}

/// <summary>One parameter of a layer: its safetensors name, shape, initialisation, and whether it gets a gradient.</summary>
/// <param name="Name">The exact tensor name of variants.md.</param>
/// <param name="Shape">The shape.</param>
/// <param name="Init">How <see cref="AttentionLayer.InitializeParameters"/> fills it.</param>
/// <param name="Learnable">False for buffers without a gradient.</param>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed record ParameterSpec(string Name, Shape Shape, ParameterInit Init = ParameterInit.FanIn, bool Learnable = true);

/// <summary>
/// An attention layer of variants.md: input <c>x [B, T, d_model]</c>, output of the same shape. It owns its parameters
/// (on <see cref="Backend"/>, in <see cref="DType"/>) and runs on whatever backend holds them: the variant's forward is
/// written once against the op API. <see cref="ForwardForTraining(Tensor)"/> returns a pass whose backward gives <c>dx</c> and the
/// gradient of every learnable parameter.
/// </summary>
/// <remarks>Thread safety: safe to share between threads (measured: concurrent forward and training passes give bitwise the results of the same calls made alone): forward, <see cref="ForwardForTraining(Tensor)"/> and the caches only read the parameters. Writing parameters (<see cref="LoadParameters(IReadOnlyDictionary{string, Tensor})"/>, <see cref="InitializeParameters"/>, copies into <see cref="Parameters"/>) must not overlap any call; a pass whose parameters were written before its backward throws. On CUDA the calls are serialised per backend. Stream rules: on CUDA a call (forward, training pass, backward, cache step) queues its work on the backend's stream (<see cref="CudaBackend.Stream"/>) and may return before the GPU has run it; its outputs are read back with <c>CopyTo</c>/<c>ToArray</c>, which wait, and the calls that follow are queued after it. Parameter writes are ordered before the calls that follow them.</remarks>
public abstract class AttentionLayer : IDisposable
{
    private readonly Dictionary<string, Tensor> _parameters = new(StringComparer.Ordinal);
    // Parameters bound to the caller's tensors (BindParameter): used, never disposed, by the layer.
    private readonly HashSet<string> _bound = new(StringComparer.Ordinal);
    private bool _disposed;

    private protected AttentionLayer(LayerConfig config, Backend? backend, DType dtype)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        Backend = backend ?? Backend.Cpu;
        DType = dtype;
        if (!Backend.Supports(dtype))
        {
            throw new ArgumentException($"dtype: expected a dtype the {Backend.Kind} backend supports, actual {dtype}", nameof(dtype));
        }
        ParameterSpecs = Specs(config).ToArray();
        try
        {
            foreach (var spec in ParameterSpecs)
            {
                _parameters.Add(spec.Name, Backend.Zeros(spec.Shape, dtype));
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The variant name (mha, gqa, …).</summary>
    public string Variant => Config.Variant;

    /// <summary>The validated config.</summary>
    public LayerConfig Config { get; }

    /// <summary>Where the parameters live and the layer computes.</summary>
    public Backend Backend { get; }

    /// <summary>The dtype of parameters, inputs and outputs.</summary>
    public DType DType { get; }

    /// <summary>Every parameter, in the order of variants.md.</summary>
    public IReadOnlyList<ParameterSpec> ParameterSpecs { get; }

    /// <summary>The parameter tensors by name (owned by the layer, except those bound with <see cref="BindParameter"/>).</summary>
    public IReadOnlyDictionary<string, Tensor> Parameters => _parameters;

    /// <summary>The number of parameter elements (learnable or not).</summary>
    public long ParameterCount => ParameterSpecs.Sum(s => s.Shape.ElementCount);

    /// <summary>True for the variants with a causal mask and a KV cache (see <see cref="CausalAttentionLayer"/>).</summary>
    public virtual bool IsCausal => false;

    /// <summary>Creates the layer of <paramref name="config"/>'s variant with zero parameters.</summary>
    public static AttentionLayer Create(LayerConfig config, Backend? backend = null, DType dtype = DType.F32)
    {
        ArgumentNullException.ThrowIfNull(config);
        return config switch
        {
            GqaConfig c => new GqaLayer(c, backend, dtype),
            MlaConfig c => new MlaLayer(c, backend, dtype),
            TpaConfig c => new TpaLayer(c, backend, dtype),
            SasConfig c => new SasLayer(c, backend, dtype),
            AgentConfig c => new AgentLayer(c, backend, dtype),
            FlattenConfig c => new FlattenLayer(c, backend, dtype),
            AgentVisionConfig c => new AgentVisionLayer(c, backend, dtype),
            FlattenVisionConfig c => new FlattenVisionLayer(c, backend, dtype),
            TransNormerConfig c => new TransNormerLayer(c, backend, dtype),
            MfaConfig c => new MfaLayer(c, backend, dtype),
            _ => throw new ArgumentException($"config: expected a config of a supported variant, actual {config.Variant}", nameof(config)),
        };
    }

    /// <summary>Fills every parameter from a seeded generator as its <see cref="ParameterSpec.Init"/> says.</summary>
    public void InitializeParameters(int seed)
    {
        ThrowIfDisposed();
        var random = new Random(seed);
        foreach (var spec in ParameterSpecs)
        {
            var values = new float[spec.Shape.ElementCount];
            long fanIn = spec.Shape.Rank <= 1 ? spec.Shape.ElementCount : spec.Shape.ElementCount / spec.Shape[0];
            double bound = 1 / Math.Sqrt(Math.Max(1, fanIn));
            for (int i = 0; i < values.Length; i++)
            {
                values[i] = spec.Init switch
                {
                    ParameterInit.FanIn => (float)(((2 * random.NextDouble()) - 1) * bound),
                    ParameterInit.Ones => 1f,
                    ParameterInit.Zeros => 0f,
                    _ => (float)(0.02 * Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble())),
                };
            }
            _parameters[spec.Name].CopyFrom(values);
        }
    }

    /// <summary>
    /// Copies parameters from <paramref name="tensors"/> by name (converting dtype and backend as needed). Every parameter must
    /// be present with its shape and nothing else may be: one <see cref="ArgumentException"/> lists every missing, unexpected
    /// and wrongly shaped tensor.
    /// </summary>
    public void LoadParameters(IReadOnlyDictionary<string, Tensor> tensors) => LoadParameters(tensors, CheckpointLayout.Spec);

    /// <summary>
    /// Copies parameters from a checkpoint under <paramref name="layout"/>'s official names (converting dtype and backend as
    /// needed, and undoing the layout's documented transforms exactly). With a <paramref name="prefix"/> (e.g.
    /// <c>model.layers.3.self_attn.</c>) only the tensors whose names start with it are read, without it. One
    /// <see cref="ArgumentException"/> lists every problem: a layout that does not fit this layer's variant or conventions,
    /// and every missing, unexpected and wrongly shaped tensor.
    /// </summary>
    public void LoadParameters(IReadOnlyDictionary<string, Tensor> tensors, CheckpointLayout layout, string prefix = "")
    {
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentNullException.ThrowIfNull(prefix);
        ThrowIfDisposed();
        var values = layout.Import(this, tensors, prefix);
        foreach (var spec in ParameterSpecs)
        {
            _parameters[spec.Name].CopyFrom(values[spec.Name]);
        }
    }

    /// <summary>
    /// Makes parameter <paramref name="name"/> the caller's <paramref name="tensor"/> itself, without a copy (e.g. a view of a
    /// TorchSharp parameter's memory, <see cref="CpuBackend.Wrap(nint, Shape, DType, object?)"/>, or of device memory,
    /// <see cref="CudaBackend.Wrap(Interop.CUdeviceptr, Shape, DType)"/>): later calls read it where it lies, so values an optimizer
    /// writes into that memory are the layer's parameters from the next call on. The tensor must be contiguous, on this layer's
    /// backend, of its dtype and the parameter's shape; the layer stops using (and frees) the tensor it held, and never disposes
    /// the bound one, which the caller keeps alive until the layer is disposed or the parameter bound again. A training pass
    /// whose parameter was bound anew after its forward refuses its backward, as for any parameter write.
    /// </summary>
    /// <exception cref="ArgumentException">An unknown name, or a tensor of another backend, dtype or shape, or a strided view.</exception>
    public void BindParameter(string name, Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(tensor);
        ThrowIfDisposed();
        var spec = ParameterSpecs.FirstOrDefault(s => s.Name == name)
            ?? throw new ArgumentException($"name: expected one of {string.Join(", ", ParameterSpecs.Select(s => s.Name))}, actual {name}", nameof(name));
        Ops.Check.Usable(tensor, nameof(tensor));
        if (!ReferenceEquals(tensor.Backend, Backend) || tensor.DType != DType)
        {
            throw new ArgumentException($"tensor: expected a {DType} tensor on {Backend.Name} for {name}, actual {tensor.DType} on {Ops.Check.BackendOf(tensor, Backend)}", nameof(tensor));
        }
        Ops.Check.Shape(tensor, spec.Shape, nameof(tensor));
        var previous = _parameters[name];
        if (ReferenceEquals(previous, tensor))
        {
            return;
        }
        _parameters[name] = tensor;
        if (!_bound.Remove(name))
        {
            previous.Dispose();
        }
        _bound.Add(name);
    }

    /// <summary>The layer's output for <paramref name="x"/> [B, T, d_model] (inference: nothing is kept for a backward).</summary>
    public Tensor Forward(Tensor x)
    {
        CheckInput(x, nameof(x));
        using var call = Backend.EnterCall();
        using var graph = new Graph(Backend, record: false);
        var y = Build(graph, graph.Input(x, requiresGrad: false));
        return graph.Detach(y.Value);
    }

    /// <summary>
    /// The layer's output for a ragged batch: <paramref name="x"/> <c>[1, N, d_model]</c> packs the sequences of
    /// <paramref name="sequences"/> (N their total length), and each row of the result equals that token's row of the layer
    /// run on its sequence alone. Refused by the variants with a fixed <c>seq_len</c> (agent, flatten).
    /// </summary>
    public Tensor Forward(Tensor x, SequenceLayout sequences)
    {
        CheckPacked(x, nameof(x), sequences);
        using var call = Backend.EnterCall();
        using var graph = new Graph(Backend, record: false, sequences);
        var y = Build(graph, graph.Input(x, requiresGrad: false));
        return graph.Detach(y.Value);
    }

    /// <summary>Runs the forward keeping what the backward needs; dispose the pass to free it.</summary>
    public LayerPass ForwardForTraining(Tensor x)
    {
        CheckInput(x, nameof(x));
        return Train(x, null);
    }

    /// <summary>
    /// Runs the forward of a ragged batch (see <see cref="Forward(Tensor, SequenceLayout)"/>) keeping what the backward needs:
    /// its gradients are the sums of those of each sequence run alone.
    /// </summary>
    public LayerPass ForwardForTraining(Tensor x, SequenceLayout sequences)
    {
        CheckPacked(x, nameof(x), sequences);
        return Train(x, sequences);
    }

    /// <summary>True when the variant accepts a ragged batch (<see cref="SequenceLayout"/>); false for a fixed <c>seq_len</c>.</summary>
    public virtual bool AcceptsSequences => true;

    private LayerPass Train(Tensor x, SequenceLayout? sequences)
    {
        using var call = Backend.EnterCall();
        var graph = new Graph(Backend, record: true, sequences);
        try
        {
            var input = graph.Input(x, requiresGrad: true);
            var output = Build(graph, input);
            return new LayerPass(this, graph, input, output);
        }
        catch
        {
            graph.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Dispose(disposing: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Frees the parameters.</summary>
    protected virtual void Dispose(bool disposing)
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        foreach (var (name, t) in _parameters)
        {
            if (!_bound.Contains(name))
            {
                t.Dispose();
            }
        }
    }

    /// <summary>The parameters of the variant for <paramref name="config"/>, in variants.md order.</summary>
    private protected abstract IEnumerable<ParameterSpec> Specs(LayerConfig config);

    /// <summary>The variant's forward on the graph: returns y [B, T, d_model].</summary>
    internal abstract Node Build(Graph graph, Node x);

    /// <summary>The heads of an attention output o [B,T,H,d] merged and projected by <c>w_o</c>: y [B,T,d_model].</summary>
    internal Node MergeHeads(Graph graph, Node o)
    {
        int b = o.Shape[0], t = o.Shape[1];
        return graph.Linear(graph.Reshape(o, new Shape(b, t, o.Shape[2] * o.Shape[3])), Param(graph, "w_o"));
    }

    /// <summary>The parameter as a graph node (its gradient is reported under its name).</summary>
    internal Node Param(Graph graph, string name)
    {
        var spec = ParameterSpecs.First(s => s.Name == name);
        return graph.Parameter(name, _parameters[name], spec.Learnable);
    }

    /// <summary>Checks <paramref name="x"/> is [B, T, d_model] on this layer's backend and dtype.</summary>
    private protected virtual void CheckInput(Tensor x, string name) => CheckTokens(x, name, batch: null);

    /// <summary>Checks <paramref name="x"/> is [1, N, d_model], N the tokens of <paramref name="sequences"/>, and that the variant takes ragged batches.</summary>
    internal void CheckPacked(Tensor x, string name, SequenceLayout sequences)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        if (!AcceptsSequences)
        {
            throw new ArgumentException($"sequences: expected no ragged batch for {Variant}, whose sequences have the fixed seq_len of its config (pass [B, seq_len, d_model] instead), actual {sequences}", nameof(sequences));
        }
        if (!sequences.StartsAtZero)
        {
            throw new ArgumentException($"sequences: expected every sequence to start at position 0 (a prefix is continued through a cache), actual {sequences}", nameof(sequences));
        }
        CheckTokens(x, name, batch: 1);
        if (x.Shape[1] != sequences.TokenCount)
        {
            throw new ArgumentException($"{name}: expected [1, {sequences.TokenCount}, {Config.DModel}] (the packed tokens of sequences {sequences}), actual {x.Shape}", name);
        }
    }

    /// <summary>Checks <paramref name="x"/> is [B, T ≥ 1, d_model] (B = <paramref name="batch"/> when given) on this layer's backend and dtype.</summary>
    internal void CheckTokens(Tensor x, string name, int? batch)
    {
        ThrowIfDisposed();
        Ops.Check.Usable(x, name);
        if (!ReferenceEquals(x.Backend, Backend) || x.DType != DType)
        {
            throw new ArgumentException($"{name}: expected a {DType} tensor on {Backend.Name}, actual {x.DType} on {Ops.Check.BackendOf(x, Backend)}", name);
        }
        if (x.Shape.Rank != 3 || x.Shape[2] != Config.DModel || x.Shape[0] < 1 || x.Shape[1] < 1 || (batch is { } b && x.Shape[0] != b))
        {
            throw new ArgumentException($"{name}: expected shape [{(batch is { } bb ? bb.ToString(System.Globalization.CultureInfo.InvariantCulture) : "B")}, T, {Config.DModel}] with T ≥ 1, actual {x.Shape}", name);
        }
    }

    /// <summary>Every parameter tensor and its <see cref="Tensor.Version"/>, in <see cref="ParameterSpecs"/> order (a parameter bound anew is another tensor).</summary>
    internal (Tensor Tensor, long Version)[] ParameterVersions() => ParameterSpecs.Select(s => (_parameters[s.Name], _parameters[s.Name].Version)).ToArray();

    internal void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);
}

/// <summary>
/// A forward pass kept for its backward (<see cref="AttentionLayer.ForwardForTraining(Tensor)"/>). Its <see cref="Backward"/> runs once,
/// before <see cref="Dispose"/>, and only while the layer's parameters are those the forward used.
/// </summary>
/// <remarks>Thread safety: one thread at a time; a second <see cref="Backward"/> (concurrent or not) throws. Stream rules: as <see cref="AttentionLayer"/>: <c>Backward</c> queues its work on the backend's stream; the gradients are ready when read back.</remarks>
public sealed class LayerPass : IDisposable
{
    private readonly AttentionLayer _layer;
    private readonly Graph _graph;
    private readonly Node _input;
    private readonly Node _output;
    private readonly (Tensor Tensor, long Version)[] _parameterVersions;
    private int _backwardStarted;
    private bool _disposed;

    internal LayerPass(AttentionLayer layer, Graph graph, Node input, Node output)
    {
        _layer = layer;
        _graph = graph;
        _input = input;
        _output = output;
        _parameterVersions = layer.ParameterVersions();
    }

    /// <summary>The output y (owned by the pass).</summary>
    public Tensor Output
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _output.Value;
        }
    }

    /// <summary>
    /// Runs the backward for upstream gradient <paramref name="dy"/>; can be called once. Throws
    /// <see cref="ObjectDisposedException"/> after <see cref="Dispose"/> (or once the layer is disposed), and
    /// <see cref="InvalidOperationException"/> when a parameter was written since the forward (the gradients would be of
    /// neither the old nor the new parameters).
    /// </summary>
    public LayerGradients Backward(Tensor dy)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _layer.ThrowIfDisposed();
        Ops.Check.Compatible(Output, "y", dy, nameof(dy));
        Ops.Check.Shape(dy, Output.Shape, nameof(dy));
        var versions = _layer.ParameterVersions();
        var changed = _layer.ParameterSpecs
            .Where((_, i) => !ReferenceEquals(versions[i].Tensor, _parameterVersions[i].Tensor) || versions[i].Version != _parameterVersions[i].Version)
            .Select(s => s.Name).ToList();
        if (changed.Count > 0)
        {
            throw new InvalidOperationException($"Backward: parameters written since ForwardForTraining ({string.Join(", ", changed)}); run a new forward with the current parameters");
        }
        if (Interlocked.Exchange(ref _backwardStarted, 1) != 0)
        {
            throw new InvalidOperationException("Backward: already run for this pass (make a new pass)");
        }
        using var call = _layer.Backend.EnterCall();
        _graph.Backward(_output, dy);
        var parameters = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var dx = _graph.Detach(_graph.GradOf(_input));
        try
        {
            foreach (var spec in _layer.ParameterSpecs.Where(s => s.Learnable))
            {
                parameters.Add(spec.Name, _graph.Detach(_graph.ParameterGradient(spec.Name)));
            }
        }
        catch
        {
            dx.Dispose();
            foreach (var t in parameters.Values)
            {
                t.Dispose();
            }
            throw;
        }
        return new LayerGradients(dx, parameters);
    }

    /// <summary>Frees what the forward kept; <see cref="Backward"/> cannot run afterwards. Calling it twice is harmless.</summary>
    public void Dispose()
    {
        _disposed = true;
        _graph.Dispose();
    }
}

/// <summary>The gradients of a layer's backward: <c>dx</c> and one tensor per learnable parameter. Dispose to free them.</summary>
/// <remarks>Thread safety: its tensors may be read from many threads; <see cref="Dispose"/> must not overlap any use. Stream rules: its tensors are written by work queued on the backend's stream; reading them back (<c>CopyTo</c>, <c>ToArray</c>) waits for that work.</remarks>
public sealed class LayerGradients : IDisposable
{
    internal LayerGradients(Tensor input, IReadOnlyDictionary<string, Tensor> parameters)
    {
        Input = input;
        Parameters = parameters;
    }

    /// <summary>The gradient of the input, <c>dx</c>.</summary>
    public Tensor Input { get; }

    /// <summary>The gradient of each learnable parameter, by name.</summary>
    public IReadOnlyDictionary<string, Tensor> Parameters { get; }

    /// <inheritdoc/>
    public void Dispose()
    {
        Input.Dispose();
        foreach (var t in Parameters.Values)
        {
            t.Dispose();
        }
    }
}

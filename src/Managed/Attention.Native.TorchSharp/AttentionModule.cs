using Attention.Native.Variants;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch.autograd;
using TorchTensor = TorchSharp.torch.Tensor;

namespace Attention.Native.Torch;

/// <summary>
/// Any Attention.Native variant (mha, gqa, mqa, mla, tpa, sas, agent, flatten, transnormer, mfa; see <see cref="LayerConfig"/>)
/// as a TorchSharp module: <c>y = module.call(x)</c>, x and y <c>[B, T, d_model]</c>. Its weights are TorchSharp
/// parameters (buffers for the non-learnable ones), named as the layout's official checkpoint names (e.g.
/// <c>q_proj.weight</c> under <see cref="CheckpointLayout.Llama"/>; the variants.md names under <see cref="CheckpointLayout.Spec"/>),
/// so optimizers, <c>state_dict</c> and <c>load_state_dict</c> work as for any module. The layer computes directly on the
/// parameters' memory (each spec tensor is a view of its official tensor, no copy), so what an optimizer writes is used by
/// the next call; x is read in place when contiguous. y, dx and the parameters' gradients are computed in this library's
/// memory and copied once into torch tensors.
/// </summary>
/// <remarks>
/// Thread safety: as <see cref="AttentionLayer"/>: calls may overlap (they only read the parameters), parameter writes
/// (optimizer steps, <c>load_state_dict</c>) must not overlap a call, and a backward whose forward saw other parameters is
/// refused only when the parameters were rebound (moved), not when written in place, as for torch's own modules.
/// Stream rules: CPU modules finish each call before returning. A CUDA module (on a CUDA device, with its
/// <see cref="CudaBackend"/>) queues its work on that backend's stream: create the backend on torch's stream or
/// synchronise around calls; the CUDA path has not run in this library's tests (no TorchSharp CUDA package was available).
/// </remarks>
public sealed class AttentionModule : torch.nn.Module<TorchTensor, TorchTensor>
{
    private readonly AttentionLayer _layer;
    private readonly CheckpointLayout _layout;
    private readonly IReadOnlyList<OfficialTensor> _map;
    private readonly Dictionary<string, BoundTensor> _bound = new(StringComparer.Ordinal);
    private readonly object _bindLock = new();

    /// <summary>
    /// Creates the module for <paramref name="config"/> with parameters drawn from <paramref name="seed"/> as
    /// <see cref="AttentionLayer.InitializeParameters"/> draws them (load a checkpoint with <c>load_state_dict</c>).
    /// </summary>
    /// <param name="config">The layer's config (e.g. <see cref="GqaConfig"/>, or <see cref="CheckpointLayout.ReadConfig"/> of an official config file).</param>
    /// <param name="layout">The parameter names: a checkpoint layout that fits the variant; null: <see cref="CheckpointLayout.Spec"/>.</param>
    /// <param name="dtype">float32 (default), float64, bfloat16 or float16.</param>
    /// <param name="device">Where the parameters live; null: the CPU.</param>
    /// <param name="backend">For a CUDA <paramref name="device"/>, the <see cref="CudaBackend"/> of that device.</param>
    /// <param name="seed">Seed of the initial parameters.</param>
    public AttentionModule(LayerConfig config, CheckpointLayout? layout = null, torch.ScalarType dtype = torch.ScalarType.Float32, torch.Device? device = null,
        Backend? backend = null, int seed = 0)
        : base(config?.Variant ?? "attention")
    {
        ArgumentNullException.ThrowIfNull(config);
        _layout = layout ?? CheckpointLayout.Spec;
        var misfits = _layout.Misfits(config);
        if (misfits.Count > 0)
        {
            throw new ArgumentException($"layout: {_layout.Name} does not fit this {config.Variant} config ({string.Join("; ", misfits)})", nameof(layout));
        }
        device ??= torch.CPU;
        using var probe = torch.empty([0], dtype, device);
        var nativeType = TorchMemory.DTypeOf(probe, nameof(dtype));
        var compute = TorchMemory.BackendFor(probe, backend, nameof(device));
        _layer = AttentionLayer.Create(config, compute, nativeType);
        try
        {
            _layer.InitializeParameters(seed);
            _map = _layout.Map(_layer);
            var initial = _layout.Export(_layer);
            try
            {
                foreach (var official in _map)
                {
                    var values = initial[official.Name].ToDoubleArray();
                    var tensor = torch.tensor(values, Dims(official.Shape), torch.ScalarType.Float64).to(dtype, device);
                    Register(official, tensor);
                }
            }
            finally
            {
                foreach (var t in initial.Values)
                {
                    t.Dispose();
                }
            }
            Bind();
        }
        catch
        {
            _layer.Dispose();
            throw;
        }
    }

    /// <summary>The layout whose names the parameters carry.</summary>
    public CheckpointLayout Layout => _layout;

    /// <summary>The layer's config.</summary>
    public LayerConfig Config => _layer.Config;

    /// <summary>
    /// The Attention.Native layer computing on this module's parameters (its <see cref="AttentionLayer.Parameters"/> are views
    /// of them): for what the module does not wrap, such as KV-cache inference (<c>CausalAttentionLayer.CreateCache</c>).
    /// Valid until the module is disposed; after the parameters move (<c>to(device)</c>, a replaced parameter) the next
    /// <see cref="forward"/> rebinds it.
    /// </summary>
    public AttentionLayer Layer => _layer;

    /// <summary>y <c>[B, T, d_model]</c> for x <c>[B, T, d_model]</c> of the module's dtype and device.</summary>
    public override TorchTensor forward(TorchTensor input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var learnable = Bind();
        bool training = torch.is_grad_enabled() && (input.requires_grad || learnable.Any(p => p.requires_grad));
        if (training)
        {
            object[] vars = [input, this, .. learnable];
            return LayerFunction.apply(vars)[0];
        }
        var x = input.contiguous();
        using var view = TorchMemory.View(x, _layer.Backend, nameof(input));
        using var y = _layer.Forward(view);
        var output = torch.empty(input.shape, input.dtype, input.device);
        TorchMemory.CopyInto(y, output, "output");
        return output;
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _layer.Dispose();
            foreach (var bound in _bound.Values)
            {
                bound.Dispose();
            }
            _bound.Clear();
        }
        base.Dispose(disposing);
    }

    // The official tensor under its dotted name: holder modules for the path, a parameter (learnable) or buffer at the leaf.
    private void Register(OfficialTensor official, TorchTensor tensor)
    {
        var parts = official.Name.Split('.');
        torch.nn.Module owner = this;
        for (int i = 0; i < parts.Length - 1; i++)
        {
            var child = owner.named_children().FirstOrDefault(c => c.name == parts[i]).module;
            if (child is null)
            {
                child = new Holder(parts[i]);
                owner.register_module(parts[i], child);
            }
            owner = child;
        }
        if (official.Learnable)
        {
            owner.register_parameter(parts[^1], new Parameter(tensor, requires_grad: true));
        }
        else
        {
            owner.register_buffer(parts[^1], tensor, persistent: true);
        }
    }

    /// <summary>
    /// Points the layer's spec tensors at the current parameters' memory (again when a parameter moved or was replaced since
    /// the last call) and returns the learnable parameters in <see cref="_map"/> order.
    /// </summary>
    private List<TorchTensor> Bind()
    {
        var current = new Dictionary<string, TorchTensor>(StringComparer.Ordinal);
        foreach (var (name, p) in named_parameters())
        {
            current[name] = p;
        }
        foreach (var (name, b) in named_buffers())
        {
            current[name] = b;
        }
        var learnable = new List<TorchTensor>();
        lock (_bindLock)
        {
            foreach (var official in _map)
            {
                if (!current.TryGetValue(official.Name, out var tensor))
                {
                    throw new InvalidOperationException($"{official.Name}: the module no longer holds this tensor (it was removed)");
                }
                if (official.Learnable)
                {
                    learnable.Add(tensor);
                }
                var address = TorchMemory.Address(tensor);
                if (!_bound.TryGetValue(official.Name, out var bound) || bound.Address != address || bound.Source.Handle != tensor.Handle)
                {
                    var fresh = BindOfficial(official, tensor, address);
                    bound?.Dispose();
                    _bound[official.Name] = bound = fresh;
                }
                bound.Refresh();
            }
        }
        return learnable;
    }

    // The layer's spec tensors of one official tensor: views of its memory, or (for a piece the layout stores with negated
    // rows, which no view can show) a tensor of the layer's that Refresh fills with the signs undone.
    private BoundTensor BindOfficial(OfficialTensor official, TorchTensor tensor, IntPtr address)
    {
        if (TorchMemory.DTypeOf(tensor, official.Name) != _layer.DType || !ReferenceEquals(TorchMemory.BackendFor(tensor, _layer.Backend, official.Name), _layer.Backend))
        {
            throw new InvalidOperationException($"{official.Name}: expected a {_layer.DType} tensor on {_layer.Backend.Name} as the module was made, actual {tensor.dtype} on {tensor.device} (make a new module for another dtype or device)");
        }
        if (TorchMemory.ShapeOf(tensor, official.Name) != official.Shape || !tensor.is_contiguous())
        {
            throw new InvalidOperationException($"{official.Name}: expected a contiguous tensor of shape {official.Shape}, actual [{string.Join(", ", tensor.shape)}]");
        }
        var bound = new BoundTensor(tensor, address);
        try
        {
            long at = 0;
            foreach (var piece in official.Pieces)
            {
                var spec = _layer.ParameterSpecs.First(s => s.Name == piece.Spec);
                var view = TorchMemory.View(tensor, _layer.Backend, spec.Shape, at, official.Name);
                bound.Views.Add(view);
                if (piece.NegatedRows is null)
                {
                    _layer.BindParameter(piece.Spec, view);
                }
                else
                {
                    var own = _layer.Backend.Zeros(spec.Shape, _layer.DType);
                    bound.Signed.Add((piece, view, own));
                    _layer.BindParameter(piece.Spec, own);
                }
                at += spec.Shape.ElementCount;
            }
        }
        catch
        {
            bound.Dispose();
            throw;
        }
        return bound;
    }

    private static long[] Dims(Shape shape)
    {
        var dims = new long[shape.Rank];
        for (int i = 0; i < dims.Length; i++)
        {
            dims[i] = shape[i];
        }
        return dims;
    }

    /// <summary>
    /// One official tensor as bound: the torch tensor, its address then, the spec views over it, and the signed pieces' own
    /// tensors (with the view each is read from).
    /// </summary>
    private sealed record BoundTensor(TorchTensor Source, IntPtr Address) : IDisposable
    {
        public List<Native.Tensor> Views { get; } = [];

        public List<(Piece Piece, Native.Tensor View, Native.Tensor Own)> Signed { get; } = [];

        /// <summary>
        /// Copies each signed piece, signs undone, into its own tensor when the values changed (an unchanged parameter is not
        /// written, so a training pass of an earlier call keeps its backward).
        /// </summary>
        public void Refresh()
        {
            foreach (var (piece, view, own) in Signed)
            {
                var values = view.ToDoubleArray();
                piece.ApplySigns(values, own.Shape);
                if (!values.AsSpan().SequenceEqual(own.ToDoubleArray()))
                {
                    own.CopyFrom(values);
                }
            }
        }

        public void Dispose()
        {
            Views.ForEach(v => v.Dispose());
            Signed.ForEach(s => s.Own.Dispose());
        }
    }

    /// <summary>A path segment of dotted parameter names (<c>q_proj</c> in <c>q_proj.weight</c>): holds parameters only.</summary>
    private sealed class Holder(string name) : torch.nn.Module(name);

    /// <summary>The module's training call as a TorchSharp autograd function: the layer's forward and backward.</summary>
    private sealed class LayerFunction : MultiTensorFunction<LayerFunction>
    {
        public override string Name => "AttentionNativeLayer";

        public override List<TorchTensor> forward(AutogradContext ctx, params object[] vars)
        {
            var (input, module) = ((TorchTensor)vars[0], (AttentionModule)vars[1]);
            var layer = module._layer;
            var x = input.contiguous();
            var view = TorchMemory.View(x, layer.Backend, nameof(input));
            LayerPass? pass = null;
            try
            {
                pass = layer.ForwardForTraining(view);
                var output = torch.empty(input.shape, input.dtype, input.device);
                TorchMemory.CopyInto(pass.Output, output, "output");
                // x stays alive (and checked for in-place writes) through torch's saved variables; the view and the pass
                // are this library's and live until the backward.
                ctx.save_for_backward([x]);
                ctx.save_data(nameof(Saved), new Saved(pass, view, module));
                return [output];
            }
            catch
            {
                pass?.Dispose();
                view.Dispose();
                throw;
            }
        }

        public override List<TorchTensor> backward(AutogradContext ctx, List<TorchTensor> grad_outputs)
        {
            var saved = (Saved)ctx.get_data(nameof(Saved));
            var x = ctx.get_saved_variables()[0];
            var module = saved.Module;
            var layer = module._layer;
            try
            {
                var dy = grad_outputs[0].contiguous();
                using var dyView = TorchMemory.View(dy, layer.Backend, "grad_output");
                using var grads = saved.Pass.Backward(dyView);
                var dx = torch.empty(x.shape, x.dtype, x.device);
                TorchMemory.CopyInto(grads.Input, dx, "grad_input");
                var result = new List<TorchTensor> { dx, null! };
                foreach (var official in module._map.Where(t => t.Learnable))
                {
                    var grad = torch.empty(Dims(official.Shape), x.dtype, x.device);
                    long at = 0;
                    foreach (var piece in official.Pieces)
                    {
                        var g = grads.Parameters[piece.Spec];
                        if (piece.NegatedRows is null)
                        {
                            TorchMemory.CopyInto(g, grad, at, official.Name);
                        }
                        else
                        {
                            // The map is a signed permutation: the official gradient has the same rows negated.
                            var values = g.ToDoubleArray();
                            piece.ApplySigns(values, g.Shape);
                            using var signed = g.Backend.FromArray(values, g.Shape, g.DType);
                            TorchMemory.CopyInto(signed, grad, at, official.Name);
                        }
                        at += g.Shape.ElementCount;
                    }
                    result.Add(grad);
                }
                return result;
            }
            finally
            {
                saved.Pass.Dispose();
                saved.View.Dispose();
            }
        }

        private sealed record Saved(LayerPass Pass, Native.Tensor View, AttentionModule Module);
    }
}

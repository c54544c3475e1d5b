using Attention.Native.Ops;
using TorchSharp;
using static TorchSharp.torch.autograd;
using TorchTensor = TorchSharp.torch.Tensor;

namespace Attention.Native.Torch;

/// <summary>
/// Softmax attention as a TorchSharp autograd function: forward and backward are <see cref="SoftmaxAttention.Forward(Native.Tensor, Native.Tensor, Native.Tensor, AttentionOptions, Native.Tensor?, Native.Tensor, Native.Tensor)"/>
/// and <see cref="SoftmaxAttention.Backward"/> on views of the torch tensors (inputs, output, lse and gradients all live in
/// torch's memory).
/// </summary>
internal sealed class ScaledDotProductAttentionFunction : MultiTensorFunction<ScaledDotProductAttentionFunction>
{
    /// <summary>The call's settings (a non-tensor argument of apply).</summary>
    internal sealed record Settings(double Scale, bool Causal, Backend? Backend);

    public override string Name => "AttentionNativeScaledDotProductAttention";

    public override List<TorchTensor> forward(AutogradContext ctx, params object[] vars)
    {
        var (query, key, value, settings) = ((TorchTensor)vars[0], (TorchTensor)vars[1], (TorchTensor)vars[2], (Settings)vars[3]);
        var backend = TorchMemory.BackendFor(query, settings.Backend, nameof(query));
        long b = query.shape[0], h = query.shape[1], tq = query.shape[2], dv = value.shape[3];
        var output = torch.empty([b, h, tq, dv], query.dtype, query.device);
        var lse = torch.empty([b, h, tq], query.dtype == torch.ScalarType.Float64 ? torch.ScalarType.Float64 : torch.ScalarType.Float32, query.device);
        using (var views = new Views(backend, query, key, value))
        using (var o = TorchMemory.TokenMajor(output, backend, "output", out _))
        using (var l = TorchMemory.View(lse, backend, nameof(lse)))
        {
            SoftmaxAttention.Forward(views.Q, views.K, views.V, new AttentionOptions(settings.Scale, settings.Causal), null, o, l);
        }
        ctx.save_for_backward([query, key, value, output, lse]);
        ctx.save_data(nameof(Settings), settings);
        return [output];
    }

    public override List<TorchTensor> backward(AutogradContext ctx, List<TorchTensor> grad_outputs)
    {
        var saved = ctx.get_saved_variables();
        var (query, key, value, output, lse) = (saved[0], saved[1], saved[2], saved[3], saved[4]);
        var settings = (Settings)ctx.get_data(nameof(Settings));
        var backend = TorchMemory.BackendFor(query, settings.Backend, nameof(query));
        // The op adds into the gradients: they start at zero, in torch's [B, H, T, d] layout (viewed token-major).
        var dq = torch.zeros(query.shape, query.dtype, query.device);
        var dk = torch.zeros(key.shape, key.dtype, key.device);
        var dv = torch.zeros(value.shape, value.dtype, value.device);
        using (var views = new Views(backend, query, key, value))
        using (var o = TorchMemory.TokenMajor(output, backend, "output", out _))
        using (var l = TorchMemory.View(lse, backend, nameof(lse)))
        using (var dO = TorchMemory.TokenMajor(grad_outputs[0], backend, "grad_output", out var dOCopy))
        using (var gq = TorchMemory.TokenMajor(dq, backend, nameof(dq), out _))
        using (var gk = TorchMemory.TokenMajor(dk, backend, nameof(dk), out _))
        using (var gv = TorchMemory.TokenMajor(dv, backend, nameof(dv), out _))
        {
            SoftmaxAttention.Backward(views.Q, views.K, views.V, new AttentionOptions(settings.Scale, settings.Causal), null, o, l, dO, gq, gk, gv);
            GC.KeepAlive(dOCopy);
        }
        return [dq, dk, dv, null!];
    }

    /// <summary>q, k, v of torch's [B, H, T, d] tensors as the op's token-major views (copies of odd layouts kept alive).</summary>
    private sealed class Views : IDisposable
    {
        private readonly TorchTensor?[] _copies = new TorchTensor?[3];

        public Views(Backend backend, TorchTensor query, TorchTensor key, TorchTensor value)
        {
            try
            {
                Q = TorchMemory.TokenMajor(query, backend, nameof(query), out _copies[0]);
                K = TorchMemory.TokenMajor(key, backend, nameof(key), out _copies[1]);
                V = TorchMemory.TokenMajor(value, backend, nameof(value), out _copies[2]);
            }
            catch
            {
                Dispose();
                throw;
            }
        }

        public Native.Tensor Q { get; } = null!;

        public Native.Tensor K { get; } = null!;

        public Native.Tensor V { get; } = null!;

        public void Dispose()
        {
            Q?.Dispose();
            K?.Dispose();
            V?.Dispose();
            GC.KeepAlive(_copies);
        }
    }
}

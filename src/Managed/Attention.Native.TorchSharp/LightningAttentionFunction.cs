using Attention.Native.Ops;
using TorchSharp;
using static TorchSharp.torch.autograd;
using TorchTensor = TorchSharp.torch.Tensor;

namespace Attention.Native.Torch;

/// <summary>
/// Lightning Attention-2 as a TorchSharp autograd function: <see cref="Lightning.Forward(Native.Tensor, Native.Tensor, Native.Tensor, ReadOnlySpan{double}, Native.Tensor, Native.Tensor?, Native.Tensor?, int)"/>
/// and <see cref="Lightning.Backward(Native.Tensor, Native.Tensor, Native.Tensor, ReadOnlySpan{double}, Native.Tensor, Native.Tensor?, Native.Tensor?, Native.Tensor?, Native.Tensor?, Native.Tensor?, Native.Tensor?, int)"/>
/// on views of the torch tensors. Outputs: o, and the final state when asked for (its gradient flows back too).
/// </summary>
internal sealed class LightningAttentionFunction : MultiTensorFunction<LightningAttentionFunction>
{
    /// <summary>The call's settings (a non-tensor argument of apply).</summary>
    internal sealed record Settings(double[] Decay, bool OutputFinalState, int BlockSize, Backend? Backend);

    public override string Name => "AttentionNativeLightningAttention";

    public override List<TorchTensor> forward(AutogradContext ctx, params object[] vars)
    {
        var (q, k, v, initial, settings) = ((TorchTensor)vars[0], (TorchTensor)vars[1], (TorchTensor)vars[2], vars[3] as TorchTensor, (Settings)vars[4]);
        var backend = TorchMemory.BackendFor(q, settings.Backend, nameof(q));
        var output = torch.empty([q.shape[0], q.shape[1], q.shape[2], v.shape[3]], q.dtype, q.device);
        var final = settings.OutputFinalState ? torch.empty([q.shape[0], q.shape[2], q.shape[3], v.shape[3]], StateType(q), q.device) : null;
        using (var vq = TorchMemory.View(q, backend, nameof(q)))
        using (var vk = TorchMemory.View(k, backend, nameof(k)))
        using (var vv = TorchMemory.View(v, backend, nameof(v)))
        using (var vo = TorchMemory.View(output, backend, "output"))
        using (var vi = initial is null ? null : TorchMemory.View(initial, backend, "initial_state"))
        using (var vf = final is null ? null : TorchMemory.View(final, backend, "final_state"))
        {
            Lightning.Forward(vq, vk, vv, settings.Decay, vo, vi, vf, settings.BlockSize);
        }
        ctx.save_for_backward([q, k, v, initial!]);
        ctx.save_data(nameof(Settings), settings);
        return final is null ? [output] : [output, final];
    }

    public override List<TorchTensor> backward(AutogradContext ctx, List<TorchTensor> grad_outputs)
    {
        var saved = ctx.get_saved_variables();
        var (q, k, v, initial) = (saved[0], saved[1], saved[2], saved[3]);
        var settings = (Settings)ctx.get_data(nameof(Settings));
        var backend = TorchMemory.BackendFor(q, settings.Backend, nameof(q));
        var dq = torch.zeros(q.shape, q.dtype, q.device);
        var dk = torch.zeros(k.shape, k.dtype, k.device);
        var dv = torch.zeros(v.shape, v.dtype, v.device);
        var dInitial = initial is null ? null : torch.zeros(initial.shape, initial.dtype, initial.device);
        var dO = grad_outputs[0].contiguous();
        var dFinal = settings.OutputFinalState && grad_outputs.Count > 1 ? grad_outputs[1].contiguous() : null;
        using (var vq = TorchMemory.View(q, backend, nameof(q)))
        using (var vk = TorchMemory.View(k, backend, nameof(k)))
        using (var vv = TorchMemory.View(v, backend, nameof(v)))
        using (var vdO = TorchMemory.View(dO, backend, "grad_output"))
        using (var vdq = TorchMemory.View(dq, backend, nameof(dq)))
        using (var vdk = TorchMemory.View(dk, backend, nameof(dk)))
        using (var vdv = TorchMemory.View(dv, backend, nameof(dv)))
        using (var vi = initial is null ? null : TorchMemory.View(initial, backend, "initial_state"))
        using (var vdi = dInitial is null ? null : TorchMemory.View(dInitial, backend, "grad_initial_state"))
        using (var vdf = dFinal is null ? null : TorchMemory.View(dFinal, backend, "grad_final_state"))
        {
            Lightning.Backward(vq, vk, vv, settings.Decay, vdO, vdq, vdk, vdv, vi, vdi, vdf, settings.BlockSize);
        }
        return [dq, dk, dv, dInitial!, null!];
    }

    /// <summary>The states' torch dtype for inputs like <paramref name="q"/> (float32 for 16-bit inputs, as <see cref="Lightning.StateDType"/>).</summary>
    internal static torch.ScalarType StateType(TorchTensor q) => TorchMemory.ScalarTypeOf(Lightning.StateDType(TorchMemory.DTypeOf(q, nameof(q))));
}

using Attention.Native.Ops;

namespace Attention.Native;

// The op-table entries of Permute: the backend's declaration and the CPU backend's dispatch.
public abstract partial class Backend
{
    internal virtual void PermuteForward(Tensor x, ReadOnlySpan<int> permutation, Tensor y) => throw Unsupported(nameof(Permute));

    internal virtual void PermuteBackward(Tensor dy, ReadOnlySpan<int> permutation, Tensor dx) => throw Unsupported(nameof(Permute));
}

public sealed partial class CpuBackend
{
    internal override void PermuteForward(Tensor x, ReadOnlySpan<int> permutation, Tensor y)
    {
        if (x.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            PermuteForward(w.In(x), permutation, w.Out(y, keepContents: false));
            return;
        }
        var plan = PermutePlan.Forward(x.Shape, permutation);
        if (x.DType == DType.F64)
        {
            PermuteCpu.Gather(P<double>(x), P<double>(y), plan, add: false);
        }
        else
        {
            PermuteCpu.Gather(P<float>(x), P<float>(y), plan, add: false);
        }
    }

    internal override void PermuteBackward(Tensor dy, ReadOnlySpan<int> permutation, Tensor dx)
    {
        if (dx.DType.IsHalfPrecision())
        {
            using var w = new Widening(this);
            PermuteBackward(w.In(dy), permutation, w.Out(dx, keepContents: true));
            return;
        }
        var plan = PermutePlan.Backward(dx.Shape, permutation);
        if (dx.DType == DType.F64)
        {
            PermuteCpu.Gather(P<double>(dy), P<double>(dx), plan, add: true);
        }
        else
        {
            PermuteCpu.Gather(P<float>(dy), P<float>(dx), plan, add: true);
        }
    }
}

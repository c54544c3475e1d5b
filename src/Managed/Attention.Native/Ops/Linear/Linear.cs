namespace Attention.Native.Ops;

/// <summary>
/// A fully connected layer in the PyTorch <c>nn.Linear</c> convention: <c>y = x · weightᵀ + bias</c>, with
/// <c>x [..., in]</c>, <c>weight [out, in]</c>, <c>bias [out]</c> and <c>y [..., out]</c>. Computes on the
/// tensors' backend: cuBLAS with fp32 accumulation on CUDA, blocked vectorised loops on the CPU.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class Linear
{
    /// <summary>Returns <c>x · weightᵀ (+ bias)</c> as a new tensor.</summary>
    public static Tensor Forward(Tensor x, Tensor weight, Tensor? bias = null)
    {
        Check.Usable(x, nameof(x));
        Check.RankAtLeast(x, 1, nameof(x), "[..., in]");
        Check.Usable(weight, nameof(weight));
        Check.RankAtLeast(weight, 2, nameof(weight), "[out, in]");
        return x.Backend.Create(x.Shape.WithLast(weight.Shape[0]), x.DType, y => Forward(x, weight, bias, y));
    }

    /// <summary>Writes <c>x · weightᵀ (+ bias)</c> into <paramref name="y"/>, which must not overlap the inputs.</summary>
    public static void Forward(Tensor x, Tensor weight, Tensor? bias, Tensor y)
    {
        Validate(x, weight, bias, y, nameof(y));
        x.Backend.LinearForward(x, weight, bias, y);
    }

    /// <summary>
    /// Gradients of <c>y = x · weightᵀ + bias</c> given <paramref name="dy"/>: <c>dx = dy · weight</c>,
    /// <c>dweight = dyᵀ · x</c> (summed over all leading axes), <c>dbias = Σ dy</c>. Pass null for a gradient
    /// you do not need. With <paramref name="accumulate"/> the gradients are added to the outputs' contents.
    /// </summary>
    public static void Backward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dweight, Tensor? dbias, bool accumulate = false)
    {
        Validate(x, weight, null, dy, nameof(dy));
        if (dx is not null)
        {
            Check.Compatible(x, nameof(x), dx, nameof(dx));
            Check.Shape(dx, x.Shape, nameof(dx));
            Check.Distinct(dx, nameof(dx), dy, nameof(dy));
        }
        if (dweight is not null)
        {
            Check.Compatible(x, nameof(x), dweight, nameof(dweight));
            Check.Shape(dweight, weight.Shape, nameof(dweight));
        }
        if (dbias is not null)
        {
            Check.Compatible(x, nameof(x), dbias, nameof(dbias));
            Check.Shape(dbias, new Shape(weight.Shape[0]), nameof(dbias));
        }
        x.Backend.LinearBackward(x, weight, dy, dx, dweight, dbias, accumulate);
    }

    private static void Validate(Tensor x, Tensor weight, Tensor? bias, Tensor y, string yName)
    {
        Check.Usable(x, nameof(x));
        Check.DTypeSupported(x, nameof(x));
        Check.RankAtLeast(x, 1, nameof(x), "[..., in]");
        Check.Compatible(x, nameof(x), weight, nameof(weight));
        if (weight.Shape.Rank != 2)
        {
            throw new ArgumentException($"weight: expected rank 2 [out, in], actual shape {weight.Shape}", nameof(weight));
        }
        int inFeatures = x.Shape[-1];
        int outFeatures = weight.Shape[0];
        Check.Shape(weight, new Shape(outFeatures, inFeatures), nameof(weight));
        if (bias is not null)
        {
            Check.Compatible(x, nameof(x), bias, nameof(bias));
            Check.Shape(bias, new Shape(outFeatures), nameof(bias));
        }
        Check.Compatible(x, nameof(x), y, yName);
        Check.Shape(y, x.Shape.WithLast(outFeatures), yName);
        Check.Distinct(y, yName, x, nameof(x));
        Check.Distinct(y, yName, weight, nameof(weight));
    }
}

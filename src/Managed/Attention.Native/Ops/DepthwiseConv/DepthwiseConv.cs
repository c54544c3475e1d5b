namespace Attention.Native.Ops;

/// <summary>
/// Depthwise Conv1d over time (the DWC of agent and flatten attention, variants.md §5–6): <c>x [B, T, C]</c>,
/// <c>weight [Cw, 1, k]</c> (k odd), <c>bias [Cw]</c>, where Cw divides C and channel c uses filter c mod Cw
/// (Cw = C: one filter per channel; Cw = d: the head's filters shared by all heads).
/// <c>y[b,t,c] = bias[c mod Cw] + Σ_j weight[c mod Cw,0,j] · x[b,t+j−(k−1)/2,c]</c> with zero padding.
/// Backward passes <b>add</b> into the gradients they are given and skip a null gradient.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class DepthwiseConv
{
    /// <summary>Returns the convolution of <paramref name="x"/> as a new <c>[B, T, C]</c> tensor.</summary>
    public static Tensor Forward(Tensor x, Tensor weight, Tensor? bias)
    {
        Validate(x, weight, bias);
        return x.Backend.Create(x.Shape, x.DType, y => Forward(x, weight, bias, y));
    }

    /// <summary>Writes the convolution of <paramref name="x"/> into <paramref name="y"/> <c>[B, T, C]</c>, which must not be an input.</summary>
    public static void Forward(Tensor x, Tensor weight, Tensor? bias, Tensor y)
    {
        Validate(x, weight, bias);
        Check.Compatible(x, nameof(x), y, nameof(y));
        Check.Shape(y, x.Shape, nameof(y));
        Check.Distinct(y, nameof(y), x, nameof(x));
        Check.Distinct(y, nameof(y), weight, nameof(weight));
        if (bias is not null)
        {
            Check.Distinct(y, nameof(y), bias, nameof(bias));
        }
        x.Backend.DepthwiseConvForward(x, weight, bias, y);
    }

    /// <summary>
    /// Adds the gradients given <paramref name="dy"/> <c>[B, T, C]</c>:
    /// <c>dx[b,t,c] += Σ_j weight[c mod Cw,0,j] · dy[b,t−j+(k−1)/2,c]</c>,
    /// <c>dweight[f,0,j] += Σ_{b,t} Σ_{c ≡ f} dy[b,t,c] · x[b,t+j−(k−1)/2,c]</c>,
    /// <c>dbias[f] += Σ_{b,t} Σ_{c ≡ f} dy[b,t,c]</c>. Any gradient may be null.
    /// </summary>
    public static void Backward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dweight, Tensor? dbias)
    {
        Validate(x, weight, null);
        Check.Compatible(x, nameof(x), dy, nameof(dy));
        Check.Shape(dy, x.Shape, nameof(dy));
        if (dx is not null)
        {
            Gradient(x, dx, nameof(dx), x.Shape, weight, dy);
        }
        if (dweight is not null)
        {
            Gradient(x, dweight, nameof(dweight), weight.Shape, weight, dy);
        }
        if (dbias is not null)
        {
            Gradient(x, dbias, nameof(dbias), new Shape(weight.Shape[0]), weight, dy);
        }
        x.Backend.DepthwiseConvBackward(x, weight, dy, dx, dweight, dbias);
    }

    private static void Validate(Tensor x, Tensor weight, Tensor? bias)
    {
        Check.Usable(x, nameof(x));
        Check.DTypeSupported(x, nameof(x));
        if (x.Shape.Rank != 3)
        {
            throw new ArgumentException($"x: expected rank 3 [B, T, C], actual shape {x.Shape}", nameof(x));
        }
        Check.Compatible(x, nameof(x), weight, nameof(weight));
        int channels = x.Shape[2];
        if (weight.Shape.Rank != 3 || weight.Shape[1] != 1)
        {
            throw new ArgumentException($"weight: expected shape [Cw, 1, k], actual {weight.Shape}", nameof(weight));
        }
        int filters = weight.Shape[0], kernel = weight.Shape[2];
        if (filters == 0 || channels % filters != 0)
        {
            throw new ArgumentException($"weight: expected a filter count Cw (first axis) dividing C = {channels} (x's channels), actual {filters}", nameof(weight));
        }
        if (kernel % 2 == 0)
        {
            throw new ArgumentException($"weight: expected an odd kernel size k (last axis), actual {kernel}", nameof(weight));
        }
        if (bias is not null)
        {
            Check.Compatible(x, nameof(x), bias, nameof(bias));
            Check.Shape(bias, new Shape(filters), nameof(bias));
        }
    }

    // Gradients accumulate while the inputs are read, so a gradient must not alias any of them.
    private static void Gradient(Tensor x, Tensor gradient, string name, Shape expected, Tensor weight, Tensor dy)
    {
        Check.Compatible(x, nameof(x), gradient, name);
        Check.Shape(gradient, expected, name);
        Check.Distinct(gradient, name, x, nameof(x));
        Check.Distinct(gradient, name, weight, nameof(weight));
        Check.Distinct(gradient, name, dy, nameof(dy));
    }
}

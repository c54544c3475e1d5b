namespace Attention.Native.Ops;

/// <summary>
/// The SAS "conv across heads" (variants.md §4): a Conv1d whose channels are the heads and whose length is the
/// per-head feature axis. <c>x [N, C_in, L]</c>, <c>weight [C_out, C_in, k]</c> (k odd), <c>bias [C_out]</c>;
/// <c>y[n,c,l] = bias[c] + Σ_{c'} Σ_{j=0}^{k−1} weight[c,c',j] · x[n,c',l+j−(k−1)/2]</c> with zero padding,
/// so <c>y</c> is <c>[N, C_out, L]</c>. Backward passes <b>add</b> into the gradients they are given and skip a
/// null gradient.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class HeadConv
{
    /// <summary>Returns the convolution of <paramref name="x"/> as a new <c>[N, C_out, L]</c> tensor.</summary>
    public static Tensor Forward(Tensor x, Tensor weight, Tensor? bias)
    {
        Validate(x, weight, bias);
        return x.Backend.Create(OutputShape(x, weight), x.DType, y => Forward(x, weight, bias, y));
    }

    /// <summary>Writes the convolution of <paramref name="x"/> into <paramref name="y"/> <c>[N, C_out, L]</c>, which must not be an input.</summary>
    public static void Forward(Tensor x, Tensor weight, Tensor? bias, Tensor y)
    {
        Validate(x, weight, bias);
        Check.Compatible(x, nameof(x), y, nameof(y));
        Check.Shape(y, OutputShape(x, weight), nameof(y));
        Check.Distinct(y, nameof(y), x, nameof(x));
        Check.Distinct(y, nameof(y), weight, nameof(weight));
        if (bias is not null)
        {
            Check.Distinct(y, nameof(y), bias, nameof(bias));
        }
        x.Backend.HeadConvForward(x, weight, bias, y);
    }

    /// <summary>
    /// Adds the gradients given <paramref name="dy"/> <c>[N, C_out, L]</c>:
    /// <c>dx[n,c',m] += Σ_c Σ_j weight[c,c',j] · dy[n,c,m−j+(k−1)/2]</c>,
    /// <c>dweight[c,c',j] += Σ_n Σ_l dy[n,c,l] · x[n,c',l+j−(k−1)/2]</c>, <c>dbias[c] += Σ_n Σ_l dy[n,c,l]</c>.
    /// Any gradient may be null.
    /// </summary>
    public static void Backward(Tensor x, Tensor weight, Tensor dy, Tensor? dx, Tensor? dweight, Tensor? dbias)
    {
        Validate(x, weight, null);
        Check.Compatible(x, nameof(x), dy, nameof(dy));
        Check.Shape(dy, OutputShape(x, weight), nameof(dy));
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
        x.Backend.HeadConvBackward(x, weight, dy, dx, dweight, dbias);
    }

    private static Shape OutputShape(Tensor x, Tensor weight) => new(x.Shape[0], weight.Shape[0], x.Shape[2]);

    private static void Validate(Tensor x, Tensor weight, Tensor? bias)
    {
        Check.Usable(x, nameof(x));
        Check.DTypeSupported(x, nameof(x));
        if (x.Shape.Rank != 3)
        {
            throw new ArgumentException($"x: expected rank 3 [N, C_in, L], actual shape {x.Shape}", nameof(x));
        }
        Check.Compatible(x, nameof(x), weight, nameof(weight));
        int inChannels = x.Shape[1];
        if (weight.Shape.Rank != 3 || weight.Shape[1] != inChannels)
        {
            throw new ArgumentException($"weight: expected shape [C_out, {inChannels}, k] (C_in = {inChannels} from x), actual {weight.Shape}", nameof(weight));
        }
        int kernel = weight.Shape[2];
        if (kernel % 2 == 0)
        {
            throw new ArgumentException($"weight: expected an odd kernel size k (last axis), actual {kernel}", nameof(weight));
        }
        if (bias is not null)
        {
            Check.Compatible(x, nameof(x), bias, nameof(bias));
            Check.Shape(bias, new Shape(weight.Shape[0]), nameof(bias));
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

namespace Attention.Native.Ops;

/// <summary>
/// Depthwise convolution over the tokens, zero padded, stride 1, in two forms selected by the rank of <c>x</c> (and of
/// <c>weight</c>, which must match it). Cw filters divide the C channels and channel c uses filter f = c mod Cw (Cw = C:
/// one filter per channel; Cw = d with C = h·d: the head's d filters shared by all heads).
/// <list type="bullet">
/// <item><description>1-D, over time (the DWC of agent and flatten attention, variants.md §5–6): <c>x [B, T, C]</c>,
/// <c>weight [Cw, 1, k]</c> (k odd), <c>bias [Cw]</c>;
/// <c>y[b,t,c] = bias[f] + Σ_{j&lt;k} weight[f,0,j] · x[b, t+j−(k−1)/2, c]</c>.</description></item>
/// <item><description>2-D, over a channels-last token grid (the DWConv of the vision forms, vision-forms.md §0; PyTorch's
/// <c>Conv2d(C, C, k, padding=k//2, groups=C)</c> when Cw = C): <c>x [B, H, W, C]</c> (token (i, j) of image b),
/// <c>weight [Cw, 1, kh, kw]</c> (kh, kw odd), <c>bias [Cw]</c>;
/// <c>y[b,i,j,c] = bias[f] + Σ_{u&lt;kh, v&lt;kw} weight[f,0,u,v] · x[b, i+u−(kh−1)/2, j+v−(kw−1)/2, c]</c>.
/// The 1-D form is the 2-D one with H = 1 and kh = 1.</description></item>
/// </list>
/// Backward passes <b>add</b> into the gradients they are given and skip a null gradient.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class DepthwiseConv
{
    /// <summary>Returns the convolution of <paramref name="x"/> as a new tensor of its shape (<c>[B, T, C]</c> or <c>[B, H, W, C]</c>).</summary>
    public static Tensor Forward(Tensor x, Tensor weight, Tensor? bias)
    {
        Validate(x, weight, bias);
        return x.Backend.Create(x.Shape, x.DType, y => Forward(x, weight, bias, y));
    }

    /// <summary>Writes the convolution of <paramref name="x"/> into <paramref name="y"/> (x's shape), which must not be an input.</summary>
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
    /// Adds the gradients given <paramref name="dy"/> (x's shape). 1-D:
    /// <c>dx[b,t,c] += Σ_j weight[f,0,j] · dy[b,t−j+(k−1)/2,c]</c>,
    /// <c>dweight[f,0,j] += Σ_{b,t} Σ_{c ≡ f} dy[b,t,c] · x[b,t+j−(k−1)/2,c]</c>,
    /// <c>dbias[f] += Σ_{b,t} Σ_{c ≡ f} dy[b,t,c]</c>; 2-D likewise over the grid:
    /// <c>dx[b,i,j,c] += Σ_{u,v} weight[f,0,u,v] · dy[b, i−u+(kh−1)/2, j−v+(kw−1)/2, c]</c>,
    /// <c>dweight[f,0,u,v] += Σ_{b,i,j} Σ_{c ≡ f} dy[b,i,j,c] · x[b, i+u−(kh−1)/2, j+v−(kw−1)/2, c]</c>,
    /// <c>dbias[f] += Σ_{b,i,j} Σ_{c ≡ f} dy[b,i,j,c]</c> (f = c mod Cw, zero padding). Any gradient may be null.
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

    /// <summary>
    /// The call's shape as a token grid: the 1-D form is one row of T tokens per sequence (H = 1) under a 1 × k kernel,
    /// so one CPU and one CUDA code path serve both forms.
    /// </summary>
    internal static DepthwiseGrid Grid(Tensor x, Tensor weight)
    {
        var s = x.Shape;
        var w = weight.Shape;
        return s.Rank == 3
            ? new DepthwiseGrid(s[0], 1, s[1], s[2], w[0], 1, w[2])
            : new DepthwiseGrid(s[0], s[1], s[2], s[3], w[0], w[2], w[3]);
    }

    private static void Validate(Tensor x, Tensor weight, Tensor? bias)
    {
        Check.Usable(x, nameof(x));
        Check.DTypeSupported(x, nameof(x));
        int rank = x.Shape.Rank;
        if (rank is not (3 or 4))
        {
            throw new ArgumentException($"x: expected rank 3 [B, T, C] or rank 4 [B, H, W, C], actual shape {x.Shape}", nameof(x));
        }
        Check.Compatible(x, nameof(x), weight, nameof(weight));
        int channels = x.Shape[rank - 1];
        string expected = rank == 3 ? "[Cw, 1, k] (rank 3, as x [B, T, C])" : "[Cw, 1, kh, kw] (rank 4, as x [B, H, W, C])";
        if (weight.Shape.Rank != rank || weight.Shape[1] != 1)
        {
            throw new ArgumentException($"weight: expected shape {expected}, actual {weight.Shape}", nameof(weight));
        }
        int filters = weight.Shape[0];
        if (filters == 0 || channels % filters != 0)
        {
            throw new ArgumentException($"weight: expected a filter count Cw (first axis) dividing C = {channels} (x's channels), actual {filters}", nameof(weight));
        }
        for (int axis = 2; axis < rank; axis++)
        {
            if (weight.Shape[axis] % 2 == 0)
            {
                string size = rank == 3 ? "k (last axis)" : axis == 2 ? "kh (axis 2)" : "kw (axis 3)";
                throw new ArgumentException($"weight: expected an odd kernel size {size}, actual {weight.Shape[axis]} in {weight.Shape}", nameof(weight));
            }
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

/// <summary>
/// A depthwise convolution's shape as images of <see cref="Height"/> × <see cref="Width"/> channels-last tokens under a
/// <see cref="KernelH"/> × <see cref="KernelW"/> kernel (the 1-D form: Height 1, KernelH 1).
/// </summary>
internal readonly record struct DepthwiseGrid(int Batch, int Height, int Width, int Channels, int Filters, int KernelH, int KernelW)
{
    /// <summary>B·H·W, the token rows of x.</summary>
    public long Tokens => (long)Batch * Height * Width;

    /// <summary>kh·kw, the taps of one filter.</summary>
    public int Taps => KernelH * KernelW;
}

namespace Attention.Native.Ops;

/// <summary>
/// Bilinear resizing of token grids as PyTorch's <c>F.interpolate(mode='bilinear', align_corners=False)</c> (no antialias)
/// defines it (docs/vision-forms.md §0), on tokens stored channels-last: <c>x [B, inHeight·inWidth, C]</c> (token
/// <c>t = i·inWidth + j</c>) → <c>y [B, outHeight·outWidth, C]</c>. Per axis, output o reads
/// <c>src = (in/out)·(o + 0.5) − 0.5</c> clamped below at 0, <c>i0 = ⌊src⌋</c>, <c>i1 = min(i0 + 1, in − 1)</c>,
/// <c>λ = src − i0</c>, value <c>(1 − λ)·a[i0] + λ·a[i1]</c>; the two axes multiply. The same size is the identity;
/// <c>inHeight = outHeight = 1</c> is PyTorch's 1-D <c>mode='linear'</c> over the token sequence. Backward passes
/// <b>add</b> into the gradient they are given.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class GridResize
{
    /// <summary>Returns <paramref name="x"/> <c>[B, inHeight·inWidth, C]</c> resized as a new <c>[B, outHeight·outWidth, C]</c> tensor.</summary>
    public static Tensor Forward(Tensor x, int inHeight, int inWidth, int outHeight, int outWidth)
    {
        ValidateSizes(inHeight, inWidth, outHeight, outWidth);
        ValidateGrid(x, nameof(x), inHeight, inWidth, null, null);
        return x.Backend.Create(new Shape(x.Shape[0], outHeight * outWidth, x.Shape[2]), x.DType, y => x.Backend.GridResizeForward(x, inHeight, inWidth, y, outHeight, outWidth));
    }

    /// <summary>Writes <paramref name="x"/> <c>[B, inHeight·inWidth, C]</c> resized into <paramref name="y"/> <c>[B, outHeight·outWidth, C]</c>, which must not be <paramref name="x"/>.</summary>
    public static void Forward(Tensor x, int inHeight, int inWidth, Tensor y, int outHeight, int outWidth)
    {
        ValidateSizes(inHeight, inWidth, outHeight, outWidth);
        ValidateGrid(x, nameof(x), inHeight, inWidth, null, null);
        Check.Compatible(x, nameof(x), y, nameof(y));
        ValidateGrid(y, nameof(y), outHeight, outWidth, x, nameof(x));
        Check.Distinct(y, nameof(y), x, nameof(x));
        x.Backend.GridResizeForward(x, inHeight, inWidth, y, outHeight, outWidth);
    }

    /// <summary>
    /// Adds the gradient given <paramref name="dy"/> <c>[B, outHeight·outWidth, C]</c> into <paramref name="dx"/>
    /// <c>[B, inHeight·inWidth, C]</c>: each output's gradient goes to the (up to four) cells it read, with their weights.
    /// The resizing is linear, so the input itself is not needed.
    /// </summary>
    public static void Backward(Tensor dy, int outHeight, int outWidth, Tensor dx, int inHeight, int inWidth)
    {
        ValidateSizes(inHeight, inWidth, outHeight, outWidth);
        ValidateGrid(dx, nameof(dx), inHeight, inWidth, null, null);
        Check.Compatible(dx, nameof(dx), dy, nameof(dy));
        ValidateGrid(dy, nameof(dy), outHeight, outWidth, dx, nameof(dx));
        Check.Distinct(dx, nameof(dx), dy, nameof(dy));
        dx.Backend.GridResizeBackward(dy, outHeight, outWidth, dx, inHeight, inWidth);
    }

    private static void ValidateSizes(int inHeight, int inWidth, int outHeight, int outWidth)
    {
        Positive(inHeight, nameof(inHeight));
        Positive(inWidth, nameof(inWidth));
        Positive(outHeight, nameof(outHeight));
        Positive(outWidth, nameof(outWidth));
        foreach (var (height, width, name) in new[] { (inHeight, inWidth, nameof(inWidth)), (outHeight, outWidth, nameof(outWidth)) })
        {
            if ((long)height * width > int.MaxValue)
            {
                throw new ArgumentOutOfRangeException(name, width, $"{name}: expected a grid of at most {int.MaxValue} tokens, actual {height}×{width} = {(long)height * width}");
            }
        }
    }

    private static void Positive(int value, string name)
    {
        if (value <= 0)
        {
            throw new ArgumentOutOfRangeException(name, value, $"{name}: expected ≥ 1, actual {value}");
        }
    }

    // grid is [B, height·width, C]; with a reference (the other side of the op), B and C are the reference's.
    private static void ValidateGrid(Tensor grid, string name, int height, int width, Tensor? reference, string? referenceName)
    {
        if (reference is null)
        {
            Check.Usable(grid, name);
            Check.DTypeSupported(grid, name);
        }
        long tokens = (long)height * width;
        var s = grid.Shape;
        if (reference is null)
        {
            if (s.Rank != 3 || s[1] != tokens)
            {
                throw new ArgumentException($"{name}: expected shape [B, {tokens}, C] ({height}×{width} tokens), actual {s}", name);
            }
        }
        else
        {
            var r = reference.Shape;
            if (s.Rank != 3 || s[0] != r[0] || s[1] != tokens || s[2] != r[2])
            {
                throw new ArgumentException($"{name}: expected shape [{r[0]}, {tokens}, {r[2]}] ({height}×{width} tokens, batch and channels of {referenceName}), actual {s}", name);
            }
        }
    }
}

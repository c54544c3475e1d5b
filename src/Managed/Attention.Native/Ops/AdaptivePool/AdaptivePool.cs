namespace Attention.Native.Ops;

/// <summary>
/// AdaptiveAvgPool1d over time, as PyTorch defines it (the agent tokens of variants.md §5): <c>x [B, T, C]</c>
/// → <c>y [B, n, C]</c>, where output i averages positions <c>floor(i·T/n) … ceil((i+1)·T/n)−1</c>; n may exceed
/// T (windows then overlap). Backward passes <b>add</b> into the gradient they are given.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class AdaptivePool
{
    /// <summary>Returns the pooled <paramref name="x"/> as a new <c>[B, outputLength, C]</c> tensor.</summary>
    public static Tensor Forward(Tensor x, int outputLength)
    {
        ValidateInput(x);
        if (outputLength <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(outputLength), outputLength, $"outputLength: expected ≥ 1, actual {outputLength}");
        }
        return x.Backend.Create(new Shape(x.Shape[0], outputLength, x.Shape[2]), x.DType, y => Forward(x, y));
    }

    /// <summary>Writes the pooled <paramref name="x"/> into <paramref name="y"/> <c>[B, n, C]</c> (n ≥ 1 from its shape), which must not be <paramref name="x"/>.</summary>
    public static void Forward(Tensor x, Tensor y)
    {
        ValidateInput(x);
        Check.Compatible(x, nameof(x), y, nameof(y));
        ValidatePooled(y, nameof(y), x, nameof(x));
        Check.Distinct(y, nameof(y), x, nameof(x));
        x.Backend.AdaptivePoolForward(x, y);
    }

    /// <summary>
    /// Adds the gradient given <paramref name="dy"/> <c>[B, n, C]</c> into <paramref name="dx"/> <c>[B, T, C]</c>:
    /// each output's gradient is spread evenly over the positions of its window. The pooling is linear, so the
    /// input itself is not needed; T is read from <paramref name="dx"/>.
    /// </summary>
    public static void Backward(Tensor dy, Tensor dx)
    {
        Check.Usable(dx, nameof(dx));
        Check.DTypeSupported(dx, nameof(dx));
        if (dx.Shape.Rank != 3 || dx.Shape[1] == 0)
        {
            throw new ArgumentException($"dx: expected shape [B, T, C] with T ≥ 1, actual {dx.Shape}", nameof(dx));
        }
        Check.Compatible(dx, nameof(dx), dy, nameof(dy));
        ValidatePooled(dy, nameof(dy), dx, nameof(dx));
        Check.Distinct(dx, nameof(dx), dy, nameof(dy));
        dx.Backend.AdaptivePoolBackward(dy, dx);
    }

    private static void ValidateInput(Tensor x)
    {
        Check.Usable(x, nameof(x));
        Check.DTypeSupported(x, nameof(x));
        if (x.Shape.Rank != 3 || x.Shape[1] == 0)
        {
            throw new ArgumentException($"x: expected shape [B, T, C] with T ≥ 1, actual {x.Shape}", nameof(x));
        }
    }

    // pooled is [B, n, C] with the batch and channels of the unpooled tensor, and n ≥ 1.
    private static void ValidatePooled(Tensor pooled, string name, Tensor unpooled, string unpooledName)
    {
        var s = unpooled.Shape;
        if (pooled.Shape.Rank != 3 || pooled.Shape[0] != s[0] || pooled.Shape[2] != s[2] || pooled.Shape[1] == 0)
        {
            throw new ArgumentException($"{name}: expected shape [{s[0]}, n, {s[2]}] with n ≥ 1 (batch and channels of {unpooledName}), actual {pooled.Shape}", name);
        }
    }
}

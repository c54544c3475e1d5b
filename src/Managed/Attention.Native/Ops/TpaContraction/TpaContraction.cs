namespace Attention.Native.Ops;

/// <summary>
/// The TPA factor contraction (variants.md §3) that materialises q, k or v from its factors:
/// <c>a [B, T, H, R]</c>, <c>f [B, T, R, d]</c> → <c>y [B, T, H, d]</c>,
/// <c>y[b,t,h,:] = (1/R) Σ_r a[b,t,h,r] · f[b,t,r,:]</c>. Backward passes <b>add</b> into the gradients they
/// are given and skip a null gradient.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class TpaContraction
{
    /// <summary>Returns the contraction as a new <c>[B, T, H, d]</c> tensor.</summary>
    public static Tensor Forward(Tensor a, Tensor f)
    {
        Validate(a, f);
        return a.Backend.Create(OutputShape(a, f), a.DType, y => Forward(a, f, y));
    }

    /// <summary>Writes the contraction into <paramref name="y"/> <c>[B, T, H, d]</c>, which must not be an input.</summary>
    public static void Forward(Tensor a, Tensor f, Tensor y)
    {
        Validate(a, f);
        Check.Compatible(a, nameof(a), y, nameof(y));
        Check.Shape(y, OutputShape(a, f), nameof(y));
        Check.Distinct(y, nameof(y), a, nameof(a));
        Check.Distinct(y, nameof(y), f, nameof(f));
        a.Backend.TpaContractionForward(a, f, y);
    }

    /// <summary>
    /// Adds the gradients given <paramref name="dy"/> <c>[B, T, H, d]</c>:
    /// <c>da[b,t,h,r] += (1/R) ⟨dy[b,t,h,:], f[b,t,r,:]⟩</c>, <c>df[b,t,r,:] += (1/R) Σ_h a[b,t,h,r] · dy[b,t,h,:]</c>.
    /// Either gradient may be null.
    /// </summary>
    public static void Backward(Tensor a, Tensor f, Tensor dy, Tensor? da, Tensor? df)
    {
        Validate(a, f);
        Check.Compatible(a, nameof(a), dy, nameof(dy));
        Check.Shape(dy, OutputShape(a, f), nameof(dy));
        if (da is not null)
        {
            Gradient(a, f, dy, da, nameof(da), a.Shape);
        }
        if (df is not null)
        {
            Gradient(a, f, dy, df, nameof(df), f.Shape);
        }
        a.Backend.TpaContractionBackward(a, f, dy, da, df);
    }

    private static Shape OutputShape(Tensor a, Tensor f) => new(a.Shape[0], a.Shape[1], a.Shape[2], f.Shape[3]);

    private static void Validate(Tensor a, Tensor f)
    {
        Check.Usable(a, nameof(a));
        Check.DTypeSupported(a, nameof(a));
        if (a.Shape.Rank != 4)
        {
            throw new ArgumentException($"a: expected rank 4 [B, T, H, R], actual shape {a.Shape}", nameof(a));
        }
        Check.Compatible(a, nameof(a), f, nameof(f));
        var s = a.Shape;
        if (f.Shape.Rank != 4 || f.Shape[0] != s[0] || f.Shape[1] != s[1] || f.Shape[2] != s[3])
        {
            throw new ArgumentException($"f: expected shape [{s[0]}, {s[1]}, {s[3]}, d] (B, T and R from a), actual {f.Shape}", nameof(f));
        }
        if (s[3] == 0)
        {
            throw new ArgumentException($"a: expected a rank R ≥ 1 (last axis), actual shape {s}", nameof(a));
        }
    }

    // Gradients accumulate while the inputs are read, so a gradient must not alias any of them.
    private static void Gradient(Tensor a, Tensor f, Tensor dy, Tensor gradient, string name, Shape expected)
    {
        Check.Compatible(a, nameof(a), gradient, name);
        Check.Shape(gradient, expected, name);
        Check.Distinct(gradient, name, a, nameof(a));
        Check.Distinct(gradient, name, f, nameof(f));
        Check.Distinct(gradient, name, dy, nameof(dy));
    }
}

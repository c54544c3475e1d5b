namespace Attention.Native.Ops;

/// <summary>
/// A contiguous transpose of a tensor of rank 1 … 6, as <c>torch.permute(x, p).contiguous()</c>: y's axis a is x's axis
/// <c>p[a]</c>, so <c>y.Shape = [x.Shape[p[0]], …]</c> and <c>y[i_0, …, i_{r−1}] = x[j]</c> with <c>j[p[a]] = i_a</c>.
/// Backward passes <b>add</b> into the gradient they are given.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class Permute
{
    /// <summary>The largest rank the op takes (the CUDA kernel's fixed axis slots).</summary>
    internal const int MaxRank = 6;

    /// <summary>Returns <paramref name="x"/> with its axes reordered by <paramref name="permutation"/>, as a new contiguous tensor.</summary>
    public static Tensor Forward(Tensor x, ReadOnlySpan<int> permutation)
    {
        ValidateInput(x, nameof(x));
        ValidatePermutation(permutation, x.Shape.Rank);
        int[] p = permutation.ToArray();
        return x.Backend.Create(Permuted(x.Shape, p), x.DType, y => x.Backend.PermuteForward(x, p, y));
    }

    /// <summary>Writes <paramref name="x"/> with its axes reordered by <paramref name="permutation"/> into <paramref name="y"/> <c>[x.Shape[p[0]], …]</c>, which must not be <paramref name="x"/>.</summary>
    public static void Forward(Tensor x, ReadOnlySpan<int> permutation, Tensor y)
    {
        ValidateInput(x, nameof(x));
        ValidatePermutation(permutation, x.Shape.Rank);
        Check.Compatible(x, nameof(x), y, nameof(y));
        Check.Shape(y, Permuted(x.Shape, permutation), nameof(y));
        Check.Distinct(y, nameof(y), x, nameof(x));
        x.Backend.PermuteForward(x, permutation, y);
    }

    /// <summary>
    /// Adds the gradient given <paramref name="dy"/> <c>[dx.Shape[p[0]], …]</c> into <paramref name="dx"/>, permuted back
    /// by the inverse of <paramref name="permutation"/> (the permutation of the forward call).
    /// </summary>
    public static void Backward(Tensor dy, ReadOnlySpan<int> permutation, Tensor dx)
    {
        ValidateInput(dx, nameof(dx));
        ValidatePermutation(permutation, dx.Shape.Rank);
        Check.Compatible(dx, nameof(dx), dy, nameof(dy));
        Check.Shape(dy, Permuted(dx.Shape, permutation), nameof(dy));
        Check.Distinct(dx, nameof(dx), dy, nameof(dy));
        dx.Backend.PermuteBackward(dy, permutation, dx);
    }

    /// <summary>The shape <c>[s[p[0]], …, s[p[r−1]]]</c>.</summary>
    internal static Shape Permuted(Shape s, ReadOnlySpan<int> p)
    {
        Span<int> dims = stackalloc int[p.Length];
        for (int a = 0; a < p.Length; a++)
        {
            dims[a] = s[p[a]];
        }
        return new Shape(dims);
    }

    private static void ValidateInput(Tensor t, string name)
    {
        Check.Usable(t, name);
        Check.DTypeSupported(t, name);
        if (t.Shape.Rank is < 1 or > MaxRank)
        {
            throw new ArgumentException($"{name}: expected rank 1 … {MaxRank}, actual shape {t.Shape}", name);
        }
    }

    private static void ValidatePermutation(ReadOnlySpan<int> permutation, int rank)
    {
        string actual = $"[{string.Join(", ", permutation.ToArray())}]";
        if (permutation.Length != rank)
        {
            throw new ArgumentException($"permutation: expected a permutation of the {rank} axes 0 … {rank - 1}, actual {actual}", nameof(permutation));
        }
        Span<bool> seen = stackalloc bool[MaxRank];
        foreach (int axis in permutation)
        {
            if (axis < 0 || axis >= rank || seen[axis])
            {
                throw new ArgumentException($"permutation: expected a permutation of the {rank} axes 0 … {rank - 1} (each once), actual {actual}", nameof(permutation));
            }
            seen[axis] = true;
        }
    }
}

namespace Attention.Native.Ops;

/// <summary>The element-wise functions of <see cref="Pointwise"/>.</summary>
public enum PointwiseOp
{
    /// <summary><c>y = a · sigmoid(a)</c>.</summary>
    Silu,
    /// <summary><c>y = max(a, 0)</c>.</summary>
    Relu,
    /// <summary><c>y = alpha · a</c>.</summary>
    Scale,
    /// <summary><c>y = a + b</c>; <c>b</c> may be shorter than <c>a</c> and is then repeated (a row broadcast: <c>b</c> spans the trailing axes of <c>a</c>).</summary>
    Add,
    /// <summary><c>y = a ⊙ b</c> (same shapes).</summary>
    Multiply,
}

/// <summary>
/// Element-wise functions used between the projections of the variants, each with its backward.
/// Backward passes <b>add</b> into the gradients they are given (they are meant for gradient accumulation:
/// start from zeros), and skip a null gradient.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class Pointwise
{
    /// <summary>Writes <c>op(a[, b])</c> into <paramref name="y"/> (may be <paramref name="a"/>).</summary>
    public static void Forward(PointwiseOp op, Tensor a, Tensor? b, Tensor y, double alpha = 1.0)
    {
        Validate(op, a, b);
        Check.Compatible(a, nameof(a), y, nameof(y));
        Check.Shape(y, a.Shape, nameof(y));
        a.Backend.PointwiseForward(op, a, b, y, alpha);
    }

    /// <summary>Returns <c>op(a[, b])</c> as a new tensor.</summary>
    public static Tensor Forward(PointwiseOp op, Tensor a, Tensor? b = null, double alpha = 1.0)
    {
        Check.Usable(a, nameof(a));
        return a.Backend.Create(a.Shape, a.DType, y => Forward(op, a, b, y, alpha));
    }

    /// <summary>
    /// Adds the gradients of <c>y = op(a[, b])</c> given <paramref name="dy"/> into <paramref name="da"/> and
    /// <paramref name="db"/> (either may be null). For a broadcast <c>Add</c>, <paramref name="db"/> receives the
    /// sum over the repeats.
    /// </summary>
    public static void Backward(PointwiseOp op, Tensor a, Tensor? b, Tensor dy, Tensor? da, Tensor? db, double alpha = 1.0)
    {
        Validate(op, a, b);
        Check.Compatible(a, nameof(a), dy, nameof(dy));
        Check.Shape(dy, a.Shape, nameof(dy));
        if (da is not null)
        {
            Check.Compatible(a, nameof(a), da, nameof(da));
            Check.Shape(da, a.Shape, nameof(da));
        }
        if (db is not null)
        {
            if (b is null)
            {
                throw new ArgumentException($"db: expected null for {op} (it has no second operand), actual a tensor", nameof(db));
            }
            Check.Compatible(a, nameof(a), db, nameof(db));
            Check.Shape(db, b.Shape, nameof(db));
        }
        a.Backend.PointwiseBackward(op, a, b, dy, da, db, alpha);
    }

    private static void Validate(PointwiseOp op, Tensor a, Tensor? b)
    {
        Check.Usable(a, nameof(a));
        Check.DTypeSupported(a, nameof(a));
        bool binary = op is PointwiseOp.Add or PointwiseOp.Multiply;
        if (binary && b is null)
        {
            throw new ArgumentException($"b: expected a second operand for {op}, actual null", nameof(b));
        }
        if (!binary && b is not null)
        {
            throw new ArgumentException($"b: expected null for {op}, actual a tensor", nameof(b));
        }
        if (b is null)
        {
            return;
        }
        Check.Compatible(a, nameof(a), b, nameof(b));
        if (op == PointwiseOp.Multiply)
        {
            Check.Shape(b, a.Shape, nameof(b));
        }
        else if (b.ElementCount == 0 || a.ElementCount % b.ElementCount != 0 || !TrailingMatch(a.Shape, b.Shape))
        {
            throw new ArgumentException($"b: expected the shape {a.Shape} or a trailing part of it, actual {b.Shape}", nameof(b));
        }
    }

    private static bool TrailingMatch(Shape a, Shape b)
    {
        if (b.Rank > a.Rank)
        {
            return false;
        }
        for (int i = 1; i <= b.Rank; i++)
        {
            if (a[-i] != b[-i])
            {
                return false;
            }
        }
        return true;
    }
}

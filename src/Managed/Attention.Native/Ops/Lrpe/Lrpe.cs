namespace Attention.Native.Ops;

/// <summary>
/// Linearised relative positional encoding of TransNormerLLM (variants.md §7, <c>lrpe: true</c>): per head h and
/// position p = t + positionOffset, <c>y_t = [x_t ⊙ cos(θ_h p) | x_t ⊙ sin(θ_h p)]</c>, doubling the last axis.
/// Input <c>x [B, T, H, d]</c>, learnable <c>theta [H, d]</c>, output <c>[B, T, H, 2d]</c>. Angles are computed in
/// double precision. Backward passes <b>add</b> into the gradients they are given and skip a null one.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class Lrpe
{
    /// <summary>Returns <c>[x ⊙ cos(θ_h p) | x ⊙ sin(θ_h p)]</c> per head, <c>p = t + positionOffset</c>, as a new tensor <c>[B, T, H, 2d]</c>.</summary>
    /// <param name="x">Input <c>[B, T, H, d]</c>.</param>
    /// <param name="theta">Angles per head and column <c>[H, d]</c>.</param>
    /// <param name="positionOffset">Position of row t = 0 (in decode, the number of tokens already cached); ≥ 0.</param>
    public static Tensor Forward(Tensor x, Tensor theta, int positionOffset = 0)
    {
        Validate(x, theta, positionOffset);
        var s = x.Shape;
        return x.Backend.Create(new Shape(s[0], s[1], s[2], 2 * s[3]), x.DType, y => x.Backend.LrpeForward(x, theta, y, positionOffset));
    }

    /// <summary>
    /// Adds the gradients given <paramref name="dy"/> <c>[B, T, H, 2d]</c>, with c = cos(θ p), s = sin(θ p):
    /// <c>dx = dy_cos ⊙ c + dy_sin ⊙ s</c> and <c>dθ = Σ_{b,t} p · x ⊙ (dy_sin ⊙ c − dy_cos ⊙ s)</c>, where dy_cos and
    /// dy_sin are the first and second halves of the last axis. Either gradient may be null (not computed); each must
    /// be distinct from the inputs.
    /// </summary>
    /// <param name="x">Input <c>[B, T, H, d]</c>.</param>
    /// <param name="theta">Angles <c>[H, d]</c>.</param>
    /// <param name="dy">Gradient of the output <c>[B, T, H, 2d]</c>.</param>
    /// <param name="dx">Receives (adds) the gradient of <paramref name="x"/>, or null.</param>
    /// <param name="dtheta">Receives (adds) the gradient of <paramref name="theta"/>, or null.</param>
    /// <param name="positionOffset">Position of row t = 0, as in the forward; ≥ 0.</param>
    public static void Backward(Tensor x, Tensor theta, Tensor dy, Tensor? dx, Tensor? dtheta, int positionOffset = 0)
    {
        Validate(x, theta, positionOffset);
        ValidateGradients(x, theta, dy, dx, dtheta);
        x.Backend.LrpeBackward(x, theta, dy, dx, dtheta, positionOffset);
    }

    private static void ValidateGradients(Tensor x, Tensor theta, Tensor dy, Tensor? dx, Tensor? dtheta)
    {
        var s = x.Shape;
        Check.Compatible(x, nameof(x), dy, nameof(dy));
        Check.Shape(dy, new Shape(s[0], s[1], s[2], 2 * s[3]), nameof(dy));
        if (dx is not null)
        {
            Check.Compatible(x, nameof(x), dx, nameof(dx));
            Check.Shape(dx, s, nameof(dx));
            // dx is accumulated while x is still read for dtheta.
            Check.Distinct(dx, nameof(dx), x, nameof(x));
        }
        if (dtheta is not null)
        {
            Check.Compatible(x, nameof(x), dtheta, nameof(dtheta));
            Check.Shape(dtheta, theta.Shape, nameof(dtheta));
            // dtheta is accumulated while theta is still read for the angles.
            Check.Distinct(dtheta, nameof(dtheta), theta, nameof(theta));
        }
    }

    /// <summary>
    /// Returns the LRPE of a ragged batch: <paramref name="x"/> <c>[1, N, H, d]</c> holds the packed tokens of
    /// <paramref name="sequences"/>, each at its own position (<see cref="SequenceLayout.TokenPositions"/>).
    /// </summary>
    /// <param name="x">Input <c>[1, N, H, d]</c>.</param>
    /// <param name="theta">Angles per head and column <c>[H, d]</c>.</param>
    /// <param name="sequences">The packed sequences.</param>
    public static Tensor Forward(Tensor x, Tensor theta, SequenceLayout sequences)
    {
        Validate(x, theta, 0);
        Rope.CheckPacked(x, nameof(x), sequences);
        var s = x.Shape;
        return x.Backend.Create(new Shape(s[0], s[1], s[2], 2 * s[3]), x.DType, y => x.Backend.LrpeForward(x, theta, y, TokenPositions.Of(sequences)));
    }

    /// <summary>The gradients of the ragged forward (as <see cref="Backward(Tensor, Tensor, Tensor, Tensor?, Tensor?, int)"/>, each token at its own position).</summary>
    /// <param name="x">Input <c>[1, N, H, d]</c>.</param>
    /// <param name="theta">Angles <c>[H, d]</c>.</param>
    /// <param name="dy">Gradient of the output <c>[1, N, H, 2d]</c>.</param>
    /// <param name="dx">Receives (adds) the gradient of <paramref name="x"/>, or null.</param>
    /// <param name="dtheta">Receives (adds) the gradient of <paramref name="theta"/>, or null.</param>
    /// <param name="sequences">The packed sequences, as in the forward.</param>
    public static void Backward(Tensor x, Tensor theta, Tensor dy, Tensor? dx, Tensor? dtheta, SequenceLayout sequences)
    {
        Validate(x, theta, 0);
        Rope.CheckPacked(x, nameof(x), sequences);
        ValidateGradients(x, theta, dy, dx, dtheta);
        x.Backend.LrpeBackward(x, theta, dy, dx, dtheta, TokenPositions.Of(sequences));
    }

    private static void Validate(Tensor x, Tensor theta, int positionOffset)
    {
        Check.Usable(x, nameof(x));
        Check.DTypeSupported(x, nameof(x));
        if (x.Shape.Rank != 4)
        {
            throw new ArgumentException($"x: expected rank 4 [B, T, H, d], actual shape {x.Shape}", nameof(x));
        }
        Check.Compatible(x, nameof(x), theta, nameof(theta));
        Check.Shape(theta, new Shape(x.Shape[2], x.Shape[3]), nameof(theta));
        if (positionOffset < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(positionOffset), positionOffset, $"positionOffset: expected a value ≥ 0, actual {positionOffset}");
        }
    }
}

namespace Attention.Native.Ops;

/// <summary>
/// The focusing map of FLatten (variants.md §6), applied per token over all <c>C</c> channels of
/// <c>x [..., C]</c> (in the variant <c>[B, T, C]</c>) with a learnable <c>scale [C]</c> and a focusing factor <c>p &gt; 0</c>:
/// <c>u = (ReLU(x) + 1e-6) / softplus(scale)</c>;  <c>y = ‖u‖₂ · u^p / ‖u^p‖₂</c> (the power is element-wise).
/// The output is positive and keeps the norm of <c>u</c>; only its direction is sharpened.
/// Backward passes <b>add</b> into the gradients they are given (start from zeros) and skip a null gradient.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class FocusingMap
{
    /// <summary>The 1e-6 added after the ReLU (variants.md), which keeps every channel positive.</summary>
    public const double Epsilon = 1e-6;

    /// <summary>Writes the focused <paramref name="x"/> into <paramref name="y"/> (may be <paramref name="x"/>).</summary>
    /// <param name="x">Input <c>[..., C]</c>.</param>
    /// <param name="scale">Learnable scale <c>[C]</c>, passed through softplus.</param>
    /// <param name="focusingFactor">The exponent <c>p</c>, finite and &gt; 0.</param>
    /// <param name="y">Output, the shape of <paramref name="x"/>.</param>
    public static void Forward(Tensor x, Tensor scale, double focusingFactor, Tensor y)
    {
        Validate(x, scale, focusingFactor);
        Check.Compatible(x, nameof(x), y, nameof(y));
        Check.Shape(y, x.Shape, nameof(y));
        Check.Distinct(y, nameof(y), scale, nameof(scale));
        x.Backend.FocusingMapForward(x, scale, focusingFactor, y);
    }

    /// <summary>Returns the focused <paramref name="x"/> as a new tensor.</summary>
    /// <param name="x">Input <c>[..., C]</c>.</param>
    /// <param name="scale">Learnable scale <c>[C]</c>, passed through softplus.</param>
    /// <param name="focusingFactor">The exponent <c>p</c>, finite and &gt; 0.</param>
    public static Tensor Forward(Tensor x, Tensor scale, double focusingFactor)
    {
        Check.Usable(x, nameof(x));
        return x.Backend.Create(x.Shape, x.DType, y => Forward(x, scale, focusingFactor, y));
    }

    /// <summary>
    /// Adds the gradients of <c>y = FocusingMap(x, scale, p)</c> given <paramref name="dy"/> into
    /// <paramref name="dx"/> and <paramref name="dscale"/> (either may be null). With <c>ŵ = u^p/‖u^p‖</c>,
    /// <c>n = ‖u‖</c> and <c>s = dy·ŵ</c>: <c>du = s·u/n + p·n·ŵ⊙(dy − s·ŵ)/u</c>; then
    /// <c>dx = du/softplus(scale)</c> where <c>x &gt; 0</c>, and <c>dscale = −Σ_tokens du⊙u · sigmoid(scale)/softplus(scale)</c>.
    /// Nothing is saved from the forward: the statistics are recomputed from <paramref name="x"/>.
    /// </summary>
    /// <param name="x">The forward's input <c>[..., C]</c>.</param>
    /// <param name="scale">The forward's scale <c>[C]</c>.</param>
    /// <param name="focusingFactor">The forward's exponent <c>p</c>.</param>
    /// <param name="dy">Gradient of the output, the shape of <paramref name="x"/>.</param>
    /// <param name="dx">Receives (adds) the gradient of <paramref name="x"/>, or null.</param>
    /// <param name="dscale">Receives (adds) the gradient of <paramref name="scale"/>, or null.</param>
    public static void Backward(Tensor x, Tensor scale, double focusingFactor, Tensor dy, Tensor? dx, Tensor? dscale)
    {
        Validate(x, scale, focusingFactor);
        Check.Compatible(x, nameof(x), dy, nameof(dy));
        Check.Shape(dy, x.Shape, nameof(dy));
        if (dx is not null)
        {
            Check.Compatible(x, nameof(x), dx, nameof(dx));
            Check.Shape(dx, x.Shape, nameof(dx));
            // dx is added to while x, scale and dy are still being read.
            Check.Distinct(dx, nameof(dx), x, nameof(x));
            Check.Distinct(dx, nameof(dx), dy, nameof(dy));
        }
        if (dscale is not null)
        {
            Check.Compatible(x, nameof(x), dscale, nameof(dscale));
            Check.Shape(dscale, scale.Shape, nameof(dscale));
            Check.Distinct(dscale, nameof(dscale), scale, nameof(scale));
        }
        if (dx is not null && dscale is not null)
        {
            Check.Distinct(dscale, nameof(dscale), dx, nameof(dx));
        }
        x.Backend.FocusingMapBackward(x, scale, focusingFactor, dy, dx, dscale);
    }

    private static void Validate(Tensor x, Tensor scale, double focusingFactor)
    {
        Check.Usable(x, nameof(x));
        Check.DTypeSupported(x, nameof(x));
        Check.RankAtLeast(x, 1, nameof(x), "[..., C]");
        Check.Compatible(x, nameof(x), scale, nameof(scale));
        Check.Shape(scale, new Shape(x.Shape[-1]), nameof(scale));
        if (!(focusingFactor > 0) || !double.IsFinite(focusingFactor))
        {
            throw new ArgumentOutOfRangeException(nameof(focusingFactor), focusingFactor, $"{nameof(focusingFactor)}: expected a finite value > 0, actual {focusingFactor}");
        }
    }
}

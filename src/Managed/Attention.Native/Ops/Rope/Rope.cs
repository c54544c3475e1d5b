namespace Attention.Native.Ops;

/// <summary>How RoPE pairs the coordinates of a vector of length n.</summary>
public enum RopeStyle
{
    /// <summary>LLaMA/NeoX: pairs (j, j + n/2).</summary>
    Half,
    /// <summary>DeepSeek/GPT-J: pairs (2j, 2j + 1).</summary>
    Interleaved,
}

/// <summary>RoPE settings: style, base, and which slice of the last axis rotates.</summary>
/// <param name="Style">Pairing of coordinates.</param>
/// <param name="Base">The base of the frequencies, θ_j = Base^(-2j/n).</param>
/// <param name="RotaryOffset">First column of the rotated slice of the last axis (MLA rotates only the trailing d_r columns).</param>
/// <param name="RotaryDim">Length n of the rotated slice (even); null rotates from <paramref name="RotaryOffset"/> to the end.</param>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public readonly record struct RopeOptions(RopeStyle Style = RopeStyle.Half, double Base = 10000.0, int RotaryOffset = 0, int? RotaryDim = null)
{
    /// <summary>The rotated length for a last axis of <paramref name="width"/>.</summary>
    public int RotaryWidth(int width) => RotaryDim ?? width - RotaryOffset;
}

/// <summary>
/// Rotary position embedding (variants.md): at position t, each coordinate pair (a, b) of the rotated
/// slice becomes (a·cos tθ_j − b·sin tθ_j, b·cos tθ_j + a·sin tθ_j) with θ_j = base^(-2j/n). Input
/// <c>[B, T, H, d]</c> or <c>[B, T, d]</c>; the position of row t is <c>positionOffset + t</c> (in decode, the
/// number of tokens already cached). Columns outside the rotated slice are copied unchanged. The output
/// may be the input tensor itself (in place). Angles are computed in double precision on every backend.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you).</remarks>
public static class Rope
{
    /// <summary>Writes RoPE(<paramref name="x"/>) into <paramref name="y"/> (may be <paramref name="x"/>).</summary>
    public static void Forward(Tensor x, Tensor y, RopeOptions options = default, int positionOffset = 0)
    {
        Validate(x, nameof(x), y, nameof(y), NormalizeOptions(options), positionOffset);
        x.Backend.RopeForward(x, y, NormalizeOptions(options), positionOffset);
    }

    /// <summary>Returns RoPE(<paramref name="x"/>) as a new tensor.</summary>
    public static Tensor Forward(Tensor x, RopeOptions options = default, int positionOffset = 0)
    {
        Check.Usable(x, nameof(x));
        return x.Backend.Create(x.Shape, x.DType, y => Forward(x, y, options, positionOffset));
    }

    /// <summary>
    /// The gradient: RoPE is a rotation, so <c>dx</c> is <paramref name="dy"/> rotated by the opposite angles.
    /// <paramref name="dx"/> may be <paramref name="dy"/> (in place).
    /// </summary>
    public static void Backward(Tensor dy, Tensor dx, RopeOptions options = default, int positionOffset = 0)
    {
        Validate(dy, nameof(dy), dx, nameof(dx), NormalizeOptions(options), positionOffset);
        dy.Backend.RopeBackward(dy, dx, NormalizeOptions(options), positionOffset);
    }

    // default(RopeOptions) has Base 0; treat it as the documented default.
    private static RopeOptions NormalizeOptions(RopeOptions options) => options.Base == 0 ? options with { Base = 10000.0 } : options;

    private static void Validate(Tensor x, string xName, Tensor y, string yName, RopeOptions options, int positionOffset)
    {
        Check.Usable(x, xName);
        Check.DTypeSupported(x, xName);
        if (x.Shape.Rank is not (3 or 4))
        {
            throw new ArgumentException($"{xName}: expected rank 3 [B, T, d] or 4 [B, T, H, d], actual shape {x.Shape}", xName);
        }
        Check.Compatible(x, xName, y, yName);
        Check.Shape(y, x.Shape, yName);
        int width = x.Shape[-1];
        int rotary = options.RotaryWidth(width);
        if (options.RotaryOffset < 0 || options.RotaryOffset > width)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.RotaryOffset, $"options.RotaryOffset: expected a column in [0, {width}], actual {options.RotaryOffset}");
        }
        if (rotary < 0 || rotary % 2 != 0 || options.RotaryOffset + rotary > width)
        {
            throw new ArgumentException($"options: expected an even rotary width fitting in the last axis ({width} - offset {options.RotaryOffset}), actual {rotary}", nameof(options));
        }
        if (!(options.Base > 0) || !double.IsFinite(options.Base))
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.Base, $"options.Base: expected a finite value > 0, actual {options.Base}");
        }
        ArgumentOutOfRangeException.ThrowIfNegative(positionOffset);
    }
}

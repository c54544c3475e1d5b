namespace Attention.Native.Ops;

/// <summary>How RoPE pairs the coordinates of a vector of length n.</summary>
public enum RopeStyle
{
    /// <summary>LLaMA/NeoX: pairs (j, j + n/2).</summary>
    Half,
    /// <summary>DeepSeek/GPT-J: pairs (2j, 2j + 1).</summary>
    Interleaved,
}

/// <summary>RoPE settings: style, base, which slice of the last axis rotates, and an optional frequency scaling.</summary>
/// <param name="Style">Pairing of coordinates.</param>
/// <param name="Base">The base of the frequencies, θ_j = Base^(-2j/n).</param>
/// <param name="RotaryOffset">First column of the rotated slice of the last axis (MLA rotates only the trailing d_r columns).</param>
/// <param name="RotaryDim">Length n of the rotated slice (even); null rotates from <paramref name="RotaryOffset"/> to the end.</param>
/// <param name="Scaling">YaRN scaling of the frequencies and of the rotated vectors (variants.md "RoPE scaling"); null for plain RoPE.</param>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public readonly record struct RopeOptions(RopeStyle Style = RopeStyle.Half, double Base = 10000.0, int RotaryOffset = 0, int? RotaryDim = null,
    RopeScaling? Scaling = null)
{
    /// <summary>The rotated length for a last axis of <paramref name="width"/>.</summary>
    public int RotaryWidth(int width) => RotaryDim ?? width - RotaryOffset;

    /// <summary>
    /// The angular frequencies θ_j, j = 0 … n/2 − 1, of a rotated slice of length <paramref name="rotary"/>: base^(-2j/n), or
    /// YaRN's ramp between that and its 1/factor interpolation when <see cref="Scaling"/> is set. In double, as every backend uses them.
    /// </summary>
    public double[] Frequencies(int rotary)
    {
        var theta = new double[rotary / 2];
        // The ramp's ends depend on the width and base only: computed once, not per pair.
        var (low, high) = Scaling?.Ramp(rotary, Base) ?? (0.0, 1.0);
        for (int j = 0; j < theta.Length; j++)
        {
            double theta0 = Math.Pow(Base, -2.0 * j / rotary);
            theta[j] = Scaling is { } s ? RopeScaling.Interpolate(theta0, j, s.Factor, low, high) : theta0;
        }
        return theta;
    }

    /// <summary>The factor on cos and sin of every rotated pair: μ(s, m)/μ(s, m_a) under YaRN, else 1.</summary>
    public double Amplitude => Scaling?.Amplitude ?? 1.0;
}

/// <summary>
/// YaRN RoPE scaling as DeepSeek-V2/V3 use it (variants.md "RoPE scaling", config key <c>rope_scaling</c>). On a rotated
/// width n and base b: <c>corr(r) = n·ln(L0/(2πr))/(2 ln b)</c>, <c>lo = max(floor(corr(β_fast)), 0)</c>,
/// <c>hi = min(ceil(corr(β_slow)), n − 1)</c> (<c>hi += 0.001</c> when equal), <c>ramp_j = clamp((j − lo)/(hi − lo), 0, 1)</c>,
/// <c>θ_j = θ⁰_j/s · ramp_j + θ⁰_j · (1 − ramp_j)</c>; cos and sin are multiplied by <see cref="Amplitude"/> = μ(s, m)/μ(s, m_a),
/// and the variant's softmax scale by <see cref="SoftmaxScaleFactor"/> = μ(s, m_a)², with μ(s, a) = 0.1·a·ln(s) + 1 for s &gt; 1, else 1.
/// </summary>
/// <param name="Factor"><c>factor</c> s (≥ 1): how much longer the context is than <paramref name="OriginalMaxPositions"/>.</param>
/// <param name="OriginalMaxPositions"><c>original_max_position_embeddings</c> L0, the context length the model was trained at.</param>
/// <param name="BetaFast"><c>beta_fast</c> β_f (default 32): rotations over L0 above which a frequency is kept.</param>
/// <param name="BetaSlow"><c>beta_slow</c> β_s (default 1): rotations over L0 below which a frequency is divided by s.</param>
/// <param name="MScale"><c>mscale</c> m (default 1).</param>
/// <param name="MScaleAllDim"><c>mscale_all_dim</c> m_a (default 0).</param>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed record RopeScaling(double Factor, int OriginalMaxPositions, double BetaFast = 32, double BetaSlow = 1, double MScale = 1, double MScaleAllDim = 0)
{
    /// <summary>The config key of the scaling object.</summary>
    public const string Key = "rope_scaling";

    /// <summary>The amplitude on the rotated vectors, μ(s, m)/μ(s, m_a).</summary>
    public double Amplitude => Mu(Factor, MScale) / Mu(Factor, MScaleAllDim);

    /// <summary>The factor on the variant's softmax scale, μ(s, m_a)².</summary>
    public double SoftmaxScaleFactor => Mu(Factor, MScaleAllDim) * Mu(Factor, MScaleAllDim);

    /// <summary>YaRN's magnitude correction μ(s, a) = 0.1·a·ln(s) + 1 for s &gt; 1, else 1.</summary>
    public static double Mu(double factor, double mscale) => factor > 1 ? (0.1 * mscale * Math.Log(factor)) + 1 : 1;

    /// <summary>The ramp's ends (lo, hi) for a rotated width <paramref name="rotary"/> and base <paramref name="ropeBase"/>.</summary>
    public (double Low, double High) Ramp(int rotary, double ropeBase)
    {
        double Correction(double rotations) => rotary * Math.Log(OriginalMaxPositions / (2 * Math.PI * rotations)) / (2 * Math.Log(ropeBase));
        double low = Math.Max(Math.Floor(Correction(BetaFast)), 0);
        double high = Math.Min(Math.Ceiling(Correction(BetaSlow)), rotary - 1);
        return (low, low == high ? high + 0.001 : high);
    }

    /// <summary>θ_j for pair <paramref name="j"/> of a rotated width <paramref name="rotary"/> and base <paramref name="ropeBase"/>.</summary>
    public double Frequency(int j, int rotary, double ropeBase)
    {
        var (low, high) = Ramp(rotary, ropeBase);
        return Interpolate(Math.Pow(ropeBase, -2.0 * j / rotary), j, Factor, low, high);
    }

    /// <summary>
    /// Checks the values (variants.md: factor ≥ 1, a positive L0, 0 &lt; β_slow ≤ β_fast, finite non-negative mscales); throws an
    /// <see cref="ArgumentException"/> naming the key (<c>rope_scaling.factor</c>, …) with expected and actual.
    /// </summary>
    public void Validate()
    {
        if (Problem() is { } problem)
        {
            throw new ArgumentException(problem.Message, problem.Key);
        }
    }

    /// <summary>The first bad value as (<c>rope_scaling.key</c>, "key: expected …, actual …"), or null when all are valid.</summary>
    internal (string Key, string Message)? Problem()
    {
        // Every Rope call checks its scaling: the valid case returns before any message (or boxing) is built.
        if (Factor >= 1 && double.IsFinite(Factor) && OriginalMaxPositions > 0 && BetaSlow > 0 && double.IsFinite(BetaSlow)
            && BetaFast >= BetaSlow && double.IsFinite(BetaFast) && MScale >= 0 && double.IsFinite(MScale) && MScaleAllDim >= 0
            && double.IsFinite(MScaleAllDim) && double.IsFinite(Mu(Factor, MScale)) && double.IsFinite(SoftmaxScaleFactor))
        {
            return null;
        }
        // μ grows with the mscales: the amplitude and the softmax scale must stay finite (μ ≥ 1, so the amplitude is then finite too).
        (bool Ok, string Key, string Expected, object Actual)[] checks =
        [
            (Factor >= 1 && double.IsFinite(Factor), "factor", "a finite value ≥ 1", Factor),
            (OriginalMaxPositions > 0, "original_max_position_embeddings", "a positive integer", OriginalMaxPositions),
            (BetaSlow > 0 && double.IsFinite(BetaSlow), "beta_slow", "a finite value > 0", BetaSlow),
            (BetaFast >= BetaSlow && double.IsFinite(BetaFast), "beta_fast", $"a finite value ≥ beta_slow {BetaSlow}", BetaFast),
            (MScale >= 0 && double.IsFinite(MScale), "mscale", "a finite value ≥ 0", MScale),
            (MScaleAllDim >= 0 && double.IsFinite(MScaleAllDim), "mscale_all_dim", "a finite value ≥ 0", MScaleAllDim),
            (double.IsFinite(Mu(Factor, MScale)), "mscale", "a value with 0.1·mscale·ln(factor) + 1 finite", MScale),
            (double.IsFinite(SoftmaxScaleFactor), "mscale_all_dim", "a value with (0.1·mscale_all_dim·ln(factor) + 1)² finite", MScaleAllDim),
        ];
        foreach (var (ok, key, expected, actual) in checks)
        {
            if (!ok)
            {
                string name = $"{Key}.{key}";
                return (name, $"{name}: expected {expected}, actual {Convert.ToString(actual, System.Globalization.CultureInfo.InvariantCulture)}");
            }
        }
        return null;
    }

    // θ_j from θ⁰_j and the ramp's ends; cuda/rope.cu computes the same expression from the (low, high) passed to it.
    internal static double Interpolate(double theta0, int j, double factor, double low, double high)
    {
        double ramp = Math.Clamp((j - low) / (high - low), 0.0, 1.0);
        return (theta0 / factor * ramp) + (theta0 * (1 - ramp));
    }
}

/// <summary>
/// Rotary position embedding (variants.md): at position t, each coordinate pair (a, b) of the rotated
/// slice becomes (a·cos tθ_j − b·sin tθ_j, b·cos tθ_j + a·sin tθ_j) with θ_j = base^(-2j/n), or, with
/// <see cref="RopeOptions.Scaling"/>, YaRN's θ_j and cos, sin multiplied by <see cref="RopeOptions.Amplitude"/>. Input
/// <c>[B, T, H, d]</c> or <c>[B, T, d]</c>; the position of row t is <c>positionOffset + t</c> (in decode, the
/// number of tokens already cached). Columns outside the rotated slice are copied unchanged. The output
/// may be the input tensor itself (in place). Angles are computed in double precision on every backend.
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
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
    /// The gradient: RoPE is a rotation (times the YaRN amplitude), so <c>dx</c> is <paramref name="dy"/> rotated by the
    /// opposite angles, times the same amplitude.
    /// <paramref name="dx"/> may be <paramref name="dy"/> (in place).
    /// </summary>
    public static void Backward(Tensor dy, Tensor dx, RopeOptions options = default, int positionOffset = 0)
    {
        Validate(dy, nameof(dy), dx, nameof(dx), NormalizeOptions(options), positionOffset);
        dy.Backend.RopeBackward(dy, dx, NormalizeOptions(options), positionOffset);
    }

    /// <summary>
    /// Writes RoPE(<paramref name="x"/>) of a ragged batch into <paramref name="y"/> (may be <paramref name="x"/>):
    /// <paramref name="x"/> is <c>[1, N, H, d]</c> or <c>[1, N, d]</c>, the packed tokens of <paramref name="sequences"/>, each
    /// rotated by its own position (<see cref="SequenceLayout.TokenPositions"/>).
    /// </summary>
    public static void Forward(Tensor x, Tensor y, RopeOptions options, SequenceLayout sequences)
    {
        Validate(x, nameof(x), y, nameof(y), NormalizeOptions(options), 0);
        CheckPacked(x, nameof(x), sequences);
        x.Backend.RopeForward(x, y, NormalizeOptions(options), TokenPositions.Of(sequences));
    }

    /// <summary>Returns RoPE(<paramref name="x"/>) of a ragged batch as a new tensor (see <see cref="Forward(Tensor, Tensor, RopeOptions, SequenceLayout)"/>).</summary>
    public static Tensor Forward(Tensor x, RopeOptions options, SequenceLayout sequences)
    {
        Check.Usable(x, nameof(x));
        return x.Backend.Create(x.Shape, x.DType, y => Forward(x, y, options, sequences));
    }

    /// <summary>The gradient of the ragged forward; <paramref name="dx"/> may be <paramref name="dy"/> (in place).</summary>
    public static void Backward(Tensor dy, Tensor dx, RopeOptions options, SequenceLayout sequences)
    {
        Validate(dy, nameof(dy), dx, nameof(dx), NormalizeOptions(options), 0);
        CheckPacked(dy, nameof(dy), sequences);
        dy.Backend.RopeBackward(dy, dx, NormalizeOptions(options), TokenPositions.Of(sequences));
    }

    /// <summary><paramref name="x"/> is [1, N, …] with N the packed tokens of <paramref name="sequences"/>.</summary>
    internal static void CheckPacked(Tensor x, string name, SequenceLayout sequences)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        if (x.Shape[0] != 1 || x.Shape[1] != sequences.TokenCount)
        {
            throw new ArgumentException($"{name}: expected [1, {sequences.TokenCount}, …] (the packed tokens of sequences {sequences}), actual {x.Shape}", name);
        }
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
        if (options.Scaling?.Problem() is { } problem)
        {
            throw new ArgumentException($"options.Scaling: {problem.Message}", nameof(options));
        }
        ArgumentOutOfRangeException.ThrowIfNegative(positionOffset);
    }
}

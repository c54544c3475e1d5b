namespace Attention.Native.Ops;

/// <summary>
/// RMSNorm over the last axis (variants.md): <c>y = x · gain / sqrt(mean(x²) + ε)</c>; without a gain it is
/// SRMSNorm. <c>x [..., n]</c>, <c>gain [n]</c>. Sums are accumulated in fp32 (double for F64 on the CPU).
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time (layer calls are serialised for you). Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class RmsNorm
{
    /// <summary>The ε of variants.md.</summary>
    public const float DefaultEpsilon = 1e-6f;

    /// <summary>Writes the normalised <paramref name="x"/> into <paramref name="y"/> (may be <paramref name="x"/>).</summary>
    public static void Forward(Tensor x, Tensor? gain, Tensor y, float epsilon = DefaultEpsilon)
    {
        Validate(x, gain, y, nameof(y), epsilon);
        x.Backend.RmsNormForward(x, gain, y, epsilon);
    }

    /// <summary>Returns the normalised <paramref name="x"/> as a new tensor.</summary>
    public static Tensor Forward(Tensor x, Tensor? gain = null, float epsilon = DefaultEpsilon)
    {
        Check.Usable(x, nameof(x));
        return x.Backend.Create(x.Shape, x.DType, y => Forward(x, gain, y, epsilon));
    }

    /// <summary>
    /// Gradients given <paramref name="dy"/>, with r = 1/sqrt(mean(x²)+ε):
    /// <c>dx = r·gain⊙dy − r³·x·mean(gain⊙dy⊙x)</c> and <c>dgain = Σ_rows dy⊙x·r</c>. The statistics are
    /// recomputed from <paramref name="x"/> (one pass, no saved state). With <paramref name="accumulate"/>
    /// the gradients are added to the outputs' contents.
    /// </summary>
    public static void Backward(Tensor x, Tensor? gain, Tensor dy, Tensor dx, Tensor? dgain = null, float epsilon = DefaultEpsilon, bool accumulate = false)
    {
        Validate(x, gain, dy, nameof(dy), epsilon);
        Check.Compatible(x, nameof(x), dx, nameof(dx));
        Check.Shape(dx, x.Shape, nameof(dx));
        // dx is written before the gain gradient reads x and dy again.
        Check.Distinct(dx, nameof(dx), x, nameof(x));
        Check.Distinct(dx, nameof(dx), dy, nameof(dy));
        if (dgain is not null)
        {
            if (gain is null)
            {
                throw new ArgumentException("dgain: expected null when there is no gain (SRMSNorm), actual a tensor", nameof(dgain));
            }
            Check.Compatible(x, nameof(x), dgain, nameof(dgain));
            Check.Shape(dgain, gain.Shape, nameof(dgain));
        }
        x.Backend.RmsNormBackward(x, gain, dy, dx, dgain, epsilon, accumulate);
    }

    private static void Validate(Tensor x, Tensor? gain, Tensor y, string yName, float epsilon)
    {
        Check.Usable(x, nameof(x));
        Check.DTypeSupported(x, nameof(x));
        Check.RankAtLeast(x, 1, nameof(x), "[..., n]");
        if (gain is not null)
        {
            Check.Compatible(x, nameof(x), gain, nameof(gain));
            Check.Shape(gain, new Shape(x.Shape[-1]), nameof(gain));
        }
        Check.Compatible(x, nameof(x), y, yName);
        Check.Shape(y, x.Shape, yName);
        Check.Positive(epsilon, nameof(epsilon));
    }
}

using Attention.Native.Ops;
using Attention.Native.Tests.Support;
using Attention.Native.Tests.Variants;
using Attention.Native.Variants;
using TorchSharp;

namespace Attention.Native.Tests.TorchReference;

using static TorchSharp.torch;
using Tensor = TorchSharp.torch.Tensor;
using F = TorchSharp.torch.nn.functional;

/// <summary>
/// The torch reference of a layer: this package's layer (CPU backend) and a composition of torch ops written from variants.md
/// run on the same parameters, x and dy; y, dx and every learnable parameter's gradient (torch autograd of Σ y ⊙ dy) compared.
/// The pieces here (RoPE, RMSNorm, softmax attention) are the spec's shared conventions in torch ops; each variant's file
/// composes them as its section of variants.md writes it.
/// </summary>
internal static class TorchKit
{
    /// <summary>
    /// F64: both sides compute in double through a few hundred multiply-adds per value (round-off ~1e-14 relative); 1e-10 leaves
    /// four orders of headroom for summation order and each side's exp/sin/cos, while a real mistake moves a value by ≥ 1e-6.
    /// F32: design.md's 1e-4.
    /// </summary>
    public static double Tolerance(DType dtype) => dtype == DType.F64 ? 1e-10 : 1e-4;

    /// <summary>
    /// y [B, T, d_model] of x in torch ops; <c>w</c> holds the layer's parameters by their variants.md names, in the layer's
    /// dtype (the learnable ones require grad).
    /// </summary>
    public delegate Tensor Composition(Tensor x, IReadOnlyDictionary<string, Tensor> w);

    /// <summary>
    /// Builds <paramref name="config"/>'s layer in <paramref name="dtype"/> with drawn parameters (FormulaKit's draw: none a
    /// no-op), runs its forward and backward, runs <paramref name="composition"/> with torch autograd on the same values, and
    /// asserts y, dx and every parameter gradient equal within <see cref="Tolerance"/>: outputs relative to 1 + max|torch|,
    /// gradients relative to max|torch gradient| (a backward that added nothing, or 0.9×, fails). Returns the largest error.
    /// </summary>
    /// <param name="zeroGradients">
    /// Parameters whose gradient is zero in exact arithmetic (a bias added to every key before a softmax over keys: the softmax
    /// does not see it). Both sides hold only round-off there, so each is held to be within the tolerance of zero relative to
    /// the largest gradient of the layer, rather than compared with the other.
    /// </param>
    public static double AssertMatches(LayerConfig config, DType dtype, int batch, int tokens, Composition composition, string? label = null, int seed = 17,
        IReadOnlyCollection<string>? zeroGradients = null)
    {
        TorchRuntime.Require();
        label ??= $"{config.Variant} {dtype}";
        int dm = config.DModel;
        var xShape = new Shape(batch, tokens, dm);
        using var layer = AttentionLayer.Create(config, Backend.Cpu, dtype);
        using (var drawn = FormulaKit.Layer(config, seed))
        {
            foreach (var (name, values) in drawn.Parameters)
            {
                layer.Parameters[name].CopyFrom(values.ToDoubleArray());
            }
        }
        // x and dy as the layer stores them (F32 rounds), so that both sides start from the same numbers.
        double[] x = Stored(TestData.Normal(seed + 1, xShape.ElementCount), dtype);
        double[] dy = Stored(TestData.Normal(seed + 2, xShape.ElementCount), dtype);

        using var tx = Backend.Cpu.FromArray(x, xShape, dtype);
        using var pass = layer.ForwardForTraining(tx);
        using var tdy = Backend.Cpu.FromArray(dy, xShape, dtype);
        using var grads = pass.Backward(tdy);
        var learnable = layer.ParameterSpecs.Where(s => s.Learnable).Select(s => s.Name).ToList();
        Assert.That(grads.Parameters.Keys, Is.EquivalentTo(learnable), $"{label}: a gradient for every learnable parameter");

        using var scope = torch.NewDisposeScope();
        var xt = Leaf(x, [batch, tokens, dm], dtype, requiresGrad: true);
        var w = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var spec in layer.ParameterSpecs)
        {
            w[spec.Name] = Leaf(layer.Parameters[spec.Name].ToDoubleArray(), Dims(spec.Shape), dtype, spec.Learnable);
        }
        var yt = composition(xt, w);
        Assert.That(yt.shape, Is.EqualTo(new long[] { batch, tokens, dm }), $"{label}: shape of the torch composition's y");
        (yt * Leaf(dy, [batch, tokens, dm], dtype, requiresGrad: false)).sum().backward();

        double worst = 0;
        var failures = new List<string>();
        void Check(string what, Tensor reference, double[] a, bool gradient)
        {
            double[] r = Values(reference);
            Assert.That(a, Has.Length.EqualTo(r.Length), $"{label} {what}: element count");
            double maxRef = r.Max(Math.Abs), maxErr = 0;
            for (int i = 0; i < r.Length; i++)
            {
                double e = Math.Abs(a[i] - r[i]);
                maxErr = Math.Max(maxErr, double.IsNaN(e) ? double.PositiveInfinity : e);
            }
            // A gradient is measured against its own size: against 1 + max it would hide a small gradient's errors.
            double scale = gradient ? maxRef : 1 + maxRef;
            double error = scale > 0 ? maxErr / scale : maxErr;
            worst = Math.Max(worst, error);
            TestContext.Out.WriteLine($"{label} {what}: max|ours − torch| / {(gradient ? "max|torch|" : "(1 + max|torch|)")} = {error:E2} (max|torch| {maxRef:E2})");
            if (gradient && maxRef == 0)
            {
                failures.Add($"{what}: the torch gradient is zero, so the comparison cannot tell a right backward from none");
            }
            else if (!(error <= Tolerance(dtype)))
            {
                failures.Add($"{what}: {error:E2} > {Tolerance(dtype):E0}");
            }
        }
        Check("y", yt, pass.Output.ToDoubleArray(), gradient: false);
        Check("dx", xt.grad!, grads.Input.ToDoubleArray(), gradient: true);
        zeroGradients ??= [];
        foreach (var name in learnable.Where(n => !zeroGradients.Contains(n)))
        {
            Check($"d{name}", w[name].grad!, grads.Parameters[name].ToDoubleArray(), gradient: true);
        }

        // The same layer as a TorchSharp module (Attention.Native.TorchSharp), its parameters loaded by name: y, dx and the
        // parameters' gradients through torch's autograd, against the same composition.
        using (var module = new Attention.Native.Torch.AttentionModule(config, dtype: dtype == DType.F64 ? ScalarType.Float64 : ScalarType.Float32))
        {
            module.load_state_dict(w.ToDictionary(p => p.Key, p => p.Value.detach()));
            var xm = Leaf(x, [batch, tokens, dm], dtype, requiresGrad: true);
            var ym = module.call(xm);
            (ym * Leaf(dy, [batch, tokens, dm], dtype, requiresGrad: false)).sum().backward();
            var moduleGrads = module.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad);
            Check("module y", yt, Values(ym), gradient: false);
            Check("module dx", xt.grad!, Values(xm.grad!), gradient: true);
            foreach (var name in learnable.Where(n => !zeroGradients.Contains(n)))
            {
                Check($"module d{name}", w[name].grad!, Values(moduleGrads[name]!), gradient: true);
            }
        }
        double largest = learnable.Max(n => Values(w[n].grad!).Max(Math.Abs));
        foreach (var name in zeroGradients)
        {
            double ours = grads.Parameters[name].ToDoubleArray().Max(Math.Abs), reference = Values(w[name].grad!).Max(Math.Abs);
            double error = Math.Max(ours, reference) / largest;
            worst = Math.Max(worst, error);
            TestContext.Out.WriteLine($"{label} d{name} (zero in exact arithmetic): max(|ours|, |torch|) / largest gradient {largest:E2} = {error:E2}");
            if (!(error <= Tolerance(dtype)))
            {
                failures.Add($"d{name}: {error:E2} > {Tolerance(dtype):E0} (a gradient that is zero in exact arithmetic)");
            }
        }
        Assert.That(failures, Is.Empty, $"{label}: ours against the torch composition");
        return worst;
    }

    // Made in its own type (a double array converted to float32 would be a non-leaf, whose .grad autograd leaves empty).
    private static Tensor Leaf(double[] values, long[] dims, DType dtype, bool requiresGrad) => dtype == DType.F64
        ? torch.tensor(values, dims, ScalarType.Float64, requires_grad: requiresGrad)
        : torch.tensor(Array.ConvertAll(values, v => (float)v), dims, ScalarType.Float32, requires_grad: requiresGrad);

    private static long[] Dims(Shape shape) => [.. Enumerable.Range(0, shape.Rank).Select(i => (long)shape[i])];

    private static double[] Stored(double[] values, DType dtype) =>
        dtype == DType.F64 ? values : [.. values.Select(v => (double)(float)v)];

    private static double[] Values(Tensor t) => t.detach().to_type(ScalarType.Float64).contiguous().data<double>().ToArray();

    /// <summary>A constant of the composition's dtype from double values (tables the spec defines: RoPE angles, decays).</summary>
    public static Tensor Constant(double[] values, long[] dims, Tensor like) => torch.tensor(values, dims, like.dtype);

    /// <summary>[…, H·d] → […, H, d]: heads split from the last axis in order.</summary>
    public static Tensor Heads(Tensor t, long heads) => t.reshape([.. t.shape[..^1], heads, t.shape[^1] / heads]);

    /// <summary>[…, H, d] → […, H·d].</summary>
    public static Tensor MergeHeads(Tensor t) => t.reshape([.. t.shape[..^2], t.shape[^2] * t.shape[^1]]);

    /// <summary>
    /// Conv1d as variants.md writes it, on X [N, C_in, L] with zero padding (k − 1)/2:
    /// out[n,c,l] = b[c] + Σ_c' Σ_j w[c,c',j] · X[n,c',l+j−(k−1)/2]; <paramref name="depthwise"/>: w [C, 1, k], channel c
    /// through its own filter only. Written as k shifted products rather than torch's conv1d: libtorch 2.10's float32
    /// conv1d returns a wrong input gradient for padded kernels on this project's machines (AMD EPYC, AVX-512), e.g. N 10,
    /// C_in 2, C_out 6, L 6, k 3: 9.0 off, where its float64 conv1d agrees with the plain sum.
    /// </summary>
    public static Tensor Conv1d(Tensor x, Tensor weight, Tensor bias, bool depthwise = false)
    {
        long k = weight.shape[^1], length = x.shape[^1], pad = (k - 1) / 2;
        var padded = F.pad(x, [pad, pad]);
        Tensor? sum = null;
        for (long j = 0; j < k; j++)
        {
            var window = padded[.., .., (int)j..(int)(j + length)];
            var tap = weight[.., .., (int)j];
            var term = depthwise ? window * tap.reshape(1, -1, 1) : tap.matmul(window);
            sum = sum is null ? term : sum + term;
        }
        return sum! + bias.reshape(1, -1, 1);
    }

    /// <summary>[a | b] along the last axis.</summary>
    public static Tensor Cat(Tensor a, Tensor b) => torch.cat([a, b], -1);

    /// <summary>RMSNorm(x; g) = x · g / sqrt(mean(x²) + eps) over the last axis (g null: SRMSNorm).</summary>
    public static Tensor RmsNorm(Tensor x, Tensor? gain, double epsilon = 1e-6)
    {
        var normed = x / (x.pow(2).mean([-1L], keepdim: true) + epsilon).sqrt();
        return gain is null ? normed : normed * gain;
    }

    /// <summary>
    /// RoPE on t [B, T, N, n] (token t at position t): θ_j = base^(−2j/n), YaRN-scaled when <paramref name="scaling"/> is set
    /// (cos and sin then times μ(s, m)/μ(s, m_a)); pairs (j, j + n/2) for "half", (2j, 2j + 1) for "interleaved".
    /// </summary>
    public static Tensor Rope(Tensor t, double ropeBase, RopeStyle style, RopeScaling? scaling)
    {
        long tokens = t.shape[1], n = t.shape[^1], half = n / 2;
        var theta = new double[half];
        for (int j = 0; j < half; j++)
        {
            theta[j] = Math.Pow(ropeBase, -2.0 * j / n);
        }
        double amplitude = 1;
        if (scaling is not null)
        {
            // variants.md "RoPE scaling": corr(r) = n·ln(L0/(2π r)) / (2 ln b); a ramp between the corrections of β_fast and β_slow.
            double Corr(double r) => n * Math.Log(scaling.OriginalMaxPositions / (2 * Math.PI * r)) / (2 * Math.Log(ropeBase));
            double lo = Math.Max(Math.Floor(Corr(scaling.BetaFast)), 0), hi = Math.Min(Math.Ceiling(Corr(scaling.BetaSlow)), n - 1);
            if (lo == hi)
            {
                hi += 0.001;
            }
            for (int j = 0; j < half; j++)
            {
                double ramp = Math.Clamp((j - lo) / (hi - lo), 0, 1);
                theta[j] = (theta[j] / scaling.Factor * ramp) + (theta[j] * (1 - ramp));
            }
            amplitude = Mu(scaling.Factor, scaling.MScale) / Mu(scaling.Factor, scaling.MScaleAllDim);
        }
        var cos = new double[tokens * half];
        var sin = new double[tokens * half];
        for (int p = 0; p < tokens; p++)
        {
            for (int j = 0; j < half; j++)
            {
                cos[(p * half) + j] = amplitude * Math.Cos(p * theta[j]);
                sin[(p * half) + j] = amplitude * Math.Sin(p * theta[j]);
            }
        }
        // [T, 1, n/2]: broadcast over batch and the N rows.
        var c = Constant(cos, [tokens, 1, half], t);
        var s = Constant(sin, [tokens, 1, half], t);
        Tensor x1, x2;
        if (style == RopeStyle.Half)
        {
            x1 = t[.., .., .., ..(int)half];
            x2 = t[.., .., .., (int)half..];
            return torch.cat([(x1 * c) - (x2 * s), (x2 * c) + (x1 * s)], -1);
        }
        var pairs = t.reshape([.. t.shape[..^1], half, 2]);
        x1 = pairs[.., .., .., .., 0];
        x2 = pairs[.., .., .., .., 1];
        return torch.stack([(x1 * c) - (x2 * s), (x2 * c) + (x1 * s)], -1).reshape(t.shape);
    }

    /// <summary>μ(s, a) = 0.1·a·ln(s) + 1 if s > 1, else 1.</summary>
    public static double Mu(double s, double a) => s > 1 ? (0.1 * a * Math.Log(s)) + 1 : 1;

    /// <summary>The softmax scale factor YaRN adds: μ(s, m_a)² (1 without scaling).</summary>
    public static double SoftmaxScaleFactor(RopeScaling? scaling) => scaling is null ? 1 : Math.Pow(Mu(scaling.Factor, scaling.MScaleAllDim), 2);

    /// <summary>
    /// Softmax attention written out: q [B, H, T, dk], k [B, H, S, dk], v [B, H, S, dv]; S = q kᵀ · scale, keys after the
    /// query's position −∞ when causal, P = softmax over keys, o = P v.
    /// </summary>
    public static Tensor Attention(Tensor q, Tensor k, Tensor v, double scale, bool causal)
    {
        var scores = q.matmul(k.transpose(-2, -1)) * scale;
        if (causal)
        {
            long t = q.shape[^2], s = k.shape[^2];
            var after = torch.ones([t, s], ScalarType.Bool).triu(1);
            scores = scores.masked_fill(after, double.NegativeInfinity);
        }
        return F.softmax(scores, -1).matmul(v);
    }
}

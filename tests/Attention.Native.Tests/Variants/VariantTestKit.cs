using Attention.Native.Variants;
using Attention.Native.Tests.Support;

namespace Attention.Native.Tests.Variants;

/// <summary>Checks shared by every variant's tests: finite-difference gradients of a whole layer, and decode against the full forward.</summary>
internal static class VariantTestKit
{
    /// <summary>A layer in F64 on the CPU with seeded parameters (each scaled by <paramref name="parameterScale"/>).</summary>
    public static AttentionLayer Layer(LayerConfig config, int seed = 11, double parameterScale = 1.0, DType dtype = DType.F64)
    {
        var layer = AttentionLayer.Create(config, Backend.Cpu, dtype);
        layer.InitializeParameters(seed);
        if (parameterScale != 1.0)
        {
            foreach (var t in layer.Parameters.Values)
            {
                t.CopyFrom(t.ToDoubleArray().Select(v => v * parameterScale).ToArray());
            }
        }
        return layer;
    }

    /// <summary>
    /// The largest central-difference error over dx and every learnable parameter's gradient (probing a sample of each),
    /// for y = layer(x) and loss Σ dy ⊙ y.
    /// </summary>
    public static double GradientError(AttentionLayer layer, int batch, int tokens, int seed = 3, int probes = 60)
    {
        var cpu = Backend.Cpu;
        var xShape = new Shape(batch, tokens, layer.Config.DModel);
        var x = TestData.Normal(seed, xShape.ElementCount);
        var learnable = layer.ParameterSpecs.Where(s => s.Learnable).ToList();
        double[][] inputs = [x, .. learnable.Select(s => layer.Parameters[s.Name].ToDoubleArray())];
        double[] Forward(double[][] p)
        {
            for (int i = 0; i < learnable.Count; i++)
            {
                layer.Parameters[learnable[i].Name].CopyFrom(p[i + 1]);
            }
            using var tx = cpu.FromArray(p[0], xShape, DType.F64);
            using var y = layer.Forward(tx);
            return y.ToDoubleArray();
        }
        using var input = cpu.FromArray(x, xShape, DType.F64);
        using var pass = layer.ForwardForTraining(input);
        var dyValues = TestData.Normal(seed + 1, pass.Output.ElementCount);
        using var dy = cpu.FromArray(dyValues, pass.Output.Shape, DType.F64);
        using var grads = pass.Backward(dy);
        double[][] analytic = [grads.Input.ToDoubleArray(), .. learnable.Select(s => grads.Parameters[s.Name].ToDoubleArray())];
        Assert.That(grads.Parameters.Keys, Is.EquivalentTo(learnable.Select(s => s.Name)), "a gradient for every learnable parameter");
        return GradientCheck.MaxError(inputs, Forward, dyValues, analytic, probes);
    }

    /// <summary>
    /// Runs the full forward over <paramref name="tokens"/> tokens, then prefill of the first <paramref name="prompt"/> tokens
    /// followed by token-by-token decode; returns the largest |difference| relative to (1 + max|y|).
    /// </summary>
    public static double DecodeError(CausalAttentionLayer layer, int batch, int tokens, int prompt, CacheOptions? options = null, int seed = 5)
    {
        var cpu = Backend.Cpu;
        int d = layer.Config.DModel;
        var x = TestData.Normal(seed, batch * tokens * d);
        using var tx = cpu.FromArray(x, new Shape(batch, tokens, d), layer.DType);
        using var full = layer.Forward(tx);
        var expected = full.ToDoubleArray();
        var actual = new double[expected.Length];
        using var cache = layer.CreateCache(batch, options);
        void Place(Tensor y, int t0)
        {
            var values = y.ToDoubleArray();
            int tn = y.Shape[1];
            for (int b = 0; b < batch; b++)
            {
                Array.Copy(values, b * tn * d, actual, ((b * tokens) + t0) * d, tn * d);
            }
        }
        double[] Tokens(int t0, int count)
        {
            var part = new double[batch * count * d];
            for (int b = 0; b < batch; b++)
            {
                Array.Copy(x, ((b * tokens) + t0) * d, part, b * count * d, count * d);
            }
            return part;
        }
        if (prompt > 0)
        {
            using var px = cpu.FromArray(Tokens(0, prompt), new Shape(batch, prompt, d), layer.DType);
            using var py = cache.Prefill(px);
            Place(py, 0);
        }
        for (int t = prompt; t < tokens; t++)
        {
            using var sx = cpu.FromArray(Tokens(t, 1), new Shape(batch, 1, d), layer.DType);
            using var sy = cache.DecodeStep(sx);
            Place(sy, t);
        }
        Assert.That(cache.Length, Is.EqualTo(tokens));
        double scale = 1 + expected.Max(Math.Abs);
        return expected.Zip(actual, (e, a) => Math.Abs(e - a)).Max() / scale;
    }
}

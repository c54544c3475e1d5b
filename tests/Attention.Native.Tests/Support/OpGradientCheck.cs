namespace Attention.Native.Tests.Support;

/// <summary>
/// The finite-difference check for an op with tensor inputs, in F64 on the CPU backend: random inputs of the
/// given shapes, a random upstream gradient, the op's backward into zeroed gradients, then
/// <see cref="GradientCheck.MaxError"/> over every differentiable input.
/// </summary>
internal static class OpGradientCheck
{
    /// <param name="shapes">Shapes of the inputs.</param>
    /// <param name="forward">Computes the output from the inputs (must not keep or dispose them).</param>
    /// <param name="backward">Adds the gradients given dy into the zeroed gradient tensors; a null slot is not differentiable.</param>
    /// <param name="differentiable">Which inputs get a gradient (all when null).</param>
    /// <param name="seed">Seed of the random inputs.</param>
    /// <param name="values">Optional fixed values per input (null entries are random normal).</param>
    public static double MaxError(Shape[] shapes, Func<Tensor[], Tensor> forward, Action<Tensor[], Tensor, Tensor?[]> backward, bool[]? differentiable = null, int seed = 1, double[]?[]? values = null)
    {
        var cpu = Backend.Cpu;
        double[][] inputs = new double[shapes.Length][];
        for (int i = 0; i < shapes.Length; i++)
        {
            inputs[i] = values?[i] ?? TestData.Normal(seed + (31 * i), shapes[i].ElementCount);
        }
        double[] Forward(double[][] p)
        {
            var tensors = p.Select((v, i) => cpu.FromArray(v, shapes[i], DType.F64)).ToArray();
            try
            {
                using var y = forward(tensors);
                return y.ToDoubleArray();
            }
            finally
            {
                foreach (var t in tensors)
                {
                    t.Dispose();
                }
            }
        }
        var x = inputs.Select((v, i) => cpu.FromArray(v, shapes[i], DType.F64)).ToArray();
        var grads = new Tensor?[shapes.Length];
        try
        {
            Shape yShape;
            using (var y = forward(x))
            {
                yShape = y.Shape;
            }
            var dyValues = TestData.Normal(seed + 1000, yShape.ElementCount);
            using var dy = cpu.FromArray(dyValues, yShape, DType.F64);
            for (int i = 0; i < shapes.Length; i++)
            {
                grads[i] = differentiable is null || differentiable[i] ? cpu.Zeros(shapes[i], DType.F64) : null;
            }
            backward(x, dy, grads);
            double[][] analytic = grads.Select(g => g?.ToDoubleArray()!).ToArray();
            return GradientCheck.MaxError(inputs, Forward, dyValues, analytic);
        }
        finally
        {
            foreach (var t in x.Concat(grads))
            {
                t?.Dispose();
            }
        }
    }
}

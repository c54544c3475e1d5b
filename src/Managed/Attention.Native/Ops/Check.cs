namespace Attention.Native.Ops;

/// <summary>Argument checks shared by every op entry: each names the argument, the expected and the actual value.</summary>
internal static class Check
{
    public static void Usable(Tensor? tensor, string name)
    {
        UsableStrided(tensor, name);
        if (!tensor!.IsContiguous)
        {
            throw new ArgumentException($"{name}: expected a contiguous tensor (only SoftmaxAttention takes strided views), actual {tensor.Shape} with strides [{string.Join(", ", tensor.Strides)}]", name);
        }
    }

    /// <summary>Not null, not disposed, and contiguous along its last axis (SoftmaxAttention's strided inputs and outputs).</summary>
    public static void UsableStrided(Tensor? tensor, string name)
    {
        ArgumentNullException.ThrowIfNull(tensor, name);
        ObjectDisposedException.ThrowIf(tensor.IsDisposed, tensor);
        if (tensor.Shape.Rank > 0 && tensor.Strides[^1] != 1)
        {
            throw new ArgumentException($"{name}: expected its last axis contiguous (stride 1), actual strides [{string.Join(", ", tensor.Strides)}] for {tensor.Shape}", name);
        }
    }

    /// <summary><paramref name="tensor"/> is usable and lives on the backend of <paramref name="reference"/> with its dtype.</summary>
    public static void Compatible(Tensor reference, string referenceName, Tensor? tensor, string name, bool strided = false)
    {
        if (strided)
        {
            UsableStrided(tensor, name);
        }
        else
        {
            Usable(tensor, name);
        }
        if (!ReferenceEquals(tensor!.Backend, reference.Backend))
        {
            throw new ArgumentException($"{name}: expected a tensor on backend {reference.Backend.Name} (as {referenceName}), actual {BackendOf(tensor, reference.Backend)}", name);
        }
        if (tensor.DType != reference.DType)
        {
            throw new ArgumentException($"{name}: expected dtype {reference.DType} (as {referenceName}), actual {tensor.DType}", name);
        }
    }

    /// <summary>
    /// <paramref name="tensor"/>'s backend as a message names it beside <paramref name="expected"/>: two instances of one
    /// backend share a name, so "expected … on cpu, actual … on cpu" would say nothing.
    /// </summary>
    public static string BackendOf(Tensor tensor, Backend expected) =>
        !ReferenceEquals(tensor.Backend, expected) && tensor.Backend.Name == expected.Name
            ? $"another {tensor.Backend.GetType().Name} instance ({tensor.Backend.Name})"
            : tensor.Backend.Name;

    /// <summary>
    /// The first <paramref name="limit"/> of <paramref name="names"/> joined by commas, then "… and N more": a message lists
    /// what is wrong without growing with the input (a file of 100k tensor names would otherwise make a line of megabytes).
    /// </summary>
    public static string Listing(IReadOnlyCollection<string> names, int limit = 20)
    {
        string shown = string.Join(", ", names.Take(limit));
        return names.Count > limit ? $"{shown}, … and {names.Count - limit} more" : shown;
    }

    public static void Distinct(Tensor output, string outputName, Tensor input, string inputName)
    {
        if (ReferenceEquals(output, input))
        {
            throw new ArgumentException($"{outputName}: expected a tensor distinct from {inputName}, actual the same tensor", outputName);
        }
    }

    public static void Shape(Tensor tensor, Shape expected, string name)
    {
        if (tensor.Shape != expected)
        {
            throw new ArgumentException($"{name}: expected shape {expected}, actual {tensor.Shape}", name);
        }
    }

    public static void RankAtLeast(Tensor tensor, int rank, string name, string layout)
    {
        if (tensor.Shape.Rank < rank)
        {
            throw new ArgumentException($"{name}: expected rank ≥ {rank} ({layout}), actual shape {tensor.Shape}", name);
        }
    }

    public static void Rank(Tensor tensor, int rank, string name, string layout)
    {
        if (tensor.Shape.Rank != rank)
        {
            throw new ArgumentException($"{name}: expected rank {rank} ({layout}), actual shape {tensor.Shape}", name);
        }
    }

    public static void DTypeSupported(Tensor tensor, string name)
    {
        if (!tensor.Backend.Supports(tensor.DType))
        {
            throw new ArgumentException($"{name}: expected a dtype the {tensor.Backend.Kind} backend supports, actual {tensor.DType}", name);
        }
    }

    public static void Positive(float value, string name)
    {
        if (!(value > 0) || !float.IsFinite(value))
        {
            throw new ArgumentOutOfRangeException(name, value, $"{name}: expected a finite value > 0, actual {value}");
        }
    }
}
